#!/usr/bin/env bash
# Load run on 127.0.0.1: four servers that differ only in verification, under wrk.
#
#   bash benches/load.sh [seconds per run, default 10] [rounds, default 3]
#
# Servers (benches/examples/load_server.rs, in the ringyo-webhook-benches package), each on one
# pinned core, wrk on the other:
#   layer   RingyoWebhookLayer + RingyoEvent<Value>
#   manual  a hand-written verifier in the handler: buffer, HMAC, constant-time compare,
#           then serde_json::Value (the floor: the hashing itself cannot be skipped)
#   none    no verification: Json<Value>
#   parse   no verification, the same serde_json::from_slice as manual (axum's Json is slower:
#           it tracks error paths), so `layer vs parse` is the cost of verifying
# Bodies of 2 KiB and 256 KiB. Each round runs every server once, interleaved, and the table
# shows each server's median round, so drift in the machine hits all four alike.
#
# Then the delivery stores, at 2 KiB: `layer` with no store, `layer-memory`
# (MemoryDeliveryStore) and `layer-redis` (RedisDeliveryStore on a redis-server this script
# starts on 127.0.0.1, pinned to wrk's core, no persistence), interleaved the same way. With a
# store a repeated body is a duplicate that skips the handler, so these runs send distinct,
# pre-signed deliveries (`load_server pool`), each once; the script fails if the pool runs out,
# or if the handler ran for fewer than 99% of the requests. Then `load_server roundtrip` times
# deliveries one at a time in-process with each store, and redis-benchmark times a bare PING.
#
#   bash benches/load.sh 10 3 stores    # only the store part
#
# Only when asked (`metrics` as the third argument): the layer at 256 B and 2 KiB, built with
# the feature `metrics` and recording into a Prometheus recorder, against the same server built
# without the feature, interleaved in the same rounds.
#
#   bash benches/load.sh 10 3 metrics
#
# Then, only when asked (`inbox` as the third argument, or `bash benches/inbox.sh`), the durable
# inbox at 2 KiB under wrk -c64: `queue` (the in-memory receiver it replaced: layer, try_send on
# a bounded channel, 202, a task draining it) against `inbox-sqlite` / `inbox-postgres` (layer,
# Inbox::service(), group commit) and `-single` (max_batch(1): one transaction per delivery),
# each with a worker (concurrency $LOAD_WORKER_CONCURRENCY, default 64, a handler that only
# counts) in the server's process. Each
# run gets a fresh database: a new SQLite file in a directory on disk ($LOAD_INBOX_DIR, default
# /var/tmp), a new Postgres database (CREATE DATABASE via psql) on the server at
# $RINGYO_TEST_POSTGRES_URL, which `bash .ci/with-postgres` provides; without it, SQLite only.
# Every request is a distinct pre-signed delivery. It reports 2xx/s, non-2xx answers, and the
# time from each 202 to its handler starting (p50, p99), and fails if a 202'd delivery was not
# handled after the drain, or if the handler count differs from the 202s.
#
#   bash .ci/with-postgres bash benches/inbox.sh 10 3    # the same as: load.sh 10 3 inbox
#
# Then, only when asked (`order` as the third argument, or `bash benches/inbox.sh 10 3 order`),
# per-subject ordering (Inbox::order_by_subject) on against off, the inbox part's way (2 KiB,
# wrk -c64, worker concurrency 64, a fresh database per run), on each engine: `off`
# (inbox-sqlite / inbox-postgres), `on` (the `-ordered` modes, reorder window 0), `on, 1 s`
# (the default window) and `on, 10 subjects` (window 0). Every delivery is a `call.*` event
# whose `data.id` names one of 1,000 calls (10 for the last), stamped as it would be sent
# (`load_server pool ... SUBJECTS`). Before each measured run the warm-up's deliveries are all
# handled; handled/s is the deliveries handled from the measured run's first answer until the
# drain ends (every 202'd delivery handled), over that time, the same for every mode.
#
#   bash .ci/with-postgres bash benches/inbox.sh 10 3 order    # the same as: load.sh 10 3 order
#
# A change against the build before it (benches/ab.sh sets this): with LOAD_BASE_BIN naming
# another build of load_server, every mode of the inbox part (`queue` aside) and every variant
# of the order part also runs with that build, named `@base`, interleaved in the same rounds;
# the tables get its rows, and a last table this build's figures over the base's, round by
# round. LOAD_INBOX_MODES="queue inbox-sqlite" runs only those modes of the inbox part.
#
# Every request goes to 127.0.0.1 only, and each run stops after its duration.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
PARTS=${3:-all}
case "$PARTS" in all | stores | inbox | metrics | order) ;; *) echo "third argument: all, stores, inbox, metrics or order" >&2; exit 1 ;; esac
PORT=${LOAD_PORT:-38517}
URL="http://127.0.0.1:$PORT/webhooks/ringyo"
# Distinct deliveries per measured run: room for 80 000 req/s (this VM reached 56 000 without a
# store on a fast day, 2026-11-28, and ran the pool of 40 000 a second dry).
POOL=$((SECONDS_PER_RUN * 80000)) WARM_POOL=60000
# The inbox part's `queue` mode, at -c64, reaches about 55 000 req/s on that VM.
if [ "$PARTS" = inbox ]; then POOL=$((SECONDS_PER_RUN * 80000)) WARM_POOL=100000; fi
# The order part has no `queue`: the inbox acknowledged at most 8 700 a second on that VM.
if [ "$PARTS" = order ]; then POOL=$((SECONDS_PER_RUN * 25000)) WARM_POOL=40000; fi
WORK=$(mktemp -d)
REDIS_PID= INBOX_DIR=
cleanup() {
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
  if [ -n "$INBOX_DIR" ]; then rm -rf "$INBOX_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null || {
    echo "cannot install wrk: run 'apt-get install wrk' and retry" >&2; exit 1; }
fi
if [ "$PARTS" != inbox ] && [ "$PARTS" != metrics ] && [ "$PARTS" != order ] && { ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; }; then
  echo "installing redis-server (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null || {
    echo "cannot install redis-server: run 'apt-get install redis-server' and retry" >&2; exit 1; }
fi
PIN_SERVER=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1)
fi

cargo build -q --release -p ringyo-webhook-benches --example load_server
# The workspace's target directory (benches/ shares the root's), wherever it is configured.
TARGET_DIR=$(cargo metadata -q --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${TARGET_DIR:-target}/release/examples/load_server
[ -x "$BIN" ] || { echo "built load_server not found at $BIN" >&2; exit 1; }

cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-ringyo-signature"] = os.getenv("SIG")
local file = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = file:read("*a")
file:close()
function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.1f %.1f %.1f %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99), errors))
end
LUA

# wrk cycles through POOL_FILE, one pre-signed distinct delivery a line: "<signature> <body>".
cat > "$WORK/pool.lua" <<'LUA'
local requests = {}
local next_request = 1
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  local file = assert(io.open(os.getenv("POOL_FILE"), "rb"))
  for line in file:lines() do
    local space = line:find(" ", 1, true)
    wrk.headers["x-ringyo-signature"] = line:sub(1, space - 1)
    requests[#requests + 1] = wrk.format(nil, nil, nil, line:sub(space + 1))
  end
  file:close()
end
-- LOAD_DELAY_MS: each connection waits that long before each request (a paced load).
local pause = tonumber(os.getenv("LOAD_DELAY_MS") or "")
if pause then
  function delay() return pause end
end
function request()
  local this = requests[next_request]
  next_request = next_request % #requests + 1 -- a wrap would send duplicates: load.sh checks
  return this
end
-- RESULT req/s p50 p99 errors requests non-2xx 2xx/s (wrk counts a status above 399 as an
-- error, and every completed response as a request, so 2xx = requests - status errors)
function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.1f %.1f %.1f %d %d %d %.1f\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    errors, summary.requests, summary.errors.status,
    (summary.requests - summary.errors.status) / (summary.duration / 1e6)))
end
LUA

wait_ready() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server did not start" >&2; exit 1
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, all threads

run() { # mode size -> "req/s p50_us p99_us" (the server: $RUN_BIN, default $BIN)
  # `run` is called as $(run ...), a subshell: its trap stops its own server, even on Ctrl-C.
  "${PIN_SERVER[@]}" "${RUN_BIN:-$BIN}" serve "$1" "127.0.0.1:$PORT" & SERVER=$!
  trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  wait_ready
  SIG=$SIG BODY_FILE="$WORK/body-$2.json" "${PIN_LOAD[@]}" wrk -t1 -c32 -d1s -s "$WORK/post.lua" "$URL" >/dev/null
  local out
  out=$(SIG=$SIG BODY_FILE="$WORK/body-$2.json" "${PIN_LOAD[@]}" \
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" --timeout 5s -s "$WORK/post.lua" "$URL" | grep '^RESULT')
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  read -r _ rps p50 p99 errors <<<"$out"
  [ "$errors" = 0 ] || { echo "$1 at $2 bytes: $errors errors" >&2; exit 1; }
  echo "$rps $p50 $p99"
}

run_pool() { # mode -> "req/s p50_us p99_us handled/requests server_cpu_us_per_request"
  local bin=$BIN
  if [ "${1%@base}" != "$1" ]; then bin=$LOAD_BASE_BIN; set -- "${1%@base}"; fi
  if [ "$1" = layer-redis ]; then redis-cli -p "$REDIS_PORT" flushall >/dev/null; fi
  LOAD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" "${PIN_SERVER[@]}" "$bin" serve "$1" "127.0.0.1:$PORT" & SERVER=$!
  trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  wait_ready
  local warm out
  warm=$(POOL_FILE="$WORK/warm.txt" "${PIN_LOAD[@]}" \
    wrk -t1 -c32 -d1s --timeout 5s -s "$WORK/pool.lua" "$URL" | grep '^RESULT')
  # The server's CPU over the measured run: wrk's script for distinct bodies can keep wrk's
  # core busier than the server's, and then req/s says little of what a delivery costs.
  local ticks
  ticks=$(cpu_ticks "$SERVER")
  out=$(POOL_FILE="$WORK/pool.txt" "${PIN_LOAD[@]}" \
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" --timeout 5s -s "$WORK/pool.lua" "$URL" | grep '^RESULT')
  ticks=$(($(cpu_ticks "$SERVER") - ticks))
  local stats
  stats=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/stats")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  local warm_errors warm_requests rps p50 p99 errors requests handled
  read -r _ _ _ _ warm_errors warm_requests _ <<<"$warm"
  read -r _ rps p50 p99 errors requests _ <<<"$out"
  read -r _ handled <<<"$stats"
  [ "$warm_errors" = 0 ] && [ "$errors" = 0 ] || {
    echo "$1: $warm_errors + $errors errors (409 and 503 count)" >&2; exit 1; }
  # wrk counts completed requests; up to 32 more were sent and cut off at the end.
  [ $((warm_requests + 32)) -le "$WARM_POOL" ] && [ $((requests + 32)) -le "$POOL" ] || {
    echo "$1: the pool of distinct deliveries ran out; raise POOL" >&2; exit 1; }
  local ratio
  ratio=$(awk "BEGIN { print $handled / ($warm_requests + $requests) }")
  awk "BEGIN { exit !($ratio >= 0.99) }" || {
    echo "$1: the handler ran for only $handled of $((warm_requests + requests)) requests" >&2; exit 1; }
  echo "$rps $p50 $p99 $ratio $(awk "BEGIN { print $ticks / $(getconf CLK_TCK) * 1e6 / $requests }")"
}

median() { sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }

# The modes of round $1 in the order they run: as given in odd rounds, reversed in even ones,
# so that no mode always follows the same one (README.md, "A change against its base": what
# one run can resolve).
in_turn() {
  local round=$1
  shift
  if [ $((round % 2)) = 1 ]; then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), pinned: ${PIN_SERVER[*]:-no}"
echo "each run: ${SECONDS_PER_RUN}s, wrk -t1 -c$(case "$PARTS" in inbox | order) echo 64 ;; *) echo 32 ;; esac), ${ROUNDS} rounds, median round shown"
echo
if [ "$PARTS" = all ]; then
echo "| body | server | req/s | p50 | p99 | req/s vs manual | req/s vs none | req/s vs parse |"
echo "|---|---|---|---|---|---|---|---|"
for size in 2048 262144; do
  SIG=$("$BIN" payload "$size" "$WORK/body-$size.json")
  declare -A results=()
  for round in $(seq 1 "$ROUNDS"); do
    for mode in layer manual none parse; do
      results[$mode]+="$(run "$mode" "$size")"$'\n'
    done
  done
  declare -A rps=() p50=() p99=()
  for mode in layer manual none parse; do
    line=$(printf '%s' "${results[$mode]}" | median)
    read -r rps[$mode] p50[$mode] p99[$mode] <<<"$line"
  done
  for mode in layer manual none parse; do
    printf '| %s | %s | %.0f | %.0f µs | %.0f µs | %.3f | %.3f | %.3f |\n' "$size" "$mode" "${rps[$mode]}" \
      "${p50[$mode]}" "${p99[$mode]}" "$(awk "BEGIN { print ${rps[$mode]} / ${rps[manual]} }")" \
      "$(awk "BEGIN { print ${rps[$mode]} / ${rps[none]} }")" "$(awk "BEGIN { print ${rps[$mode]} / ${rps[parse]} }")"
  done
  unset results rps p50 p99
done
echo
fi

# Distinct pre-signed 2 KiB deliveries, for the parts with a store or an inbox: warm.txt and
# pool.txt; with a number of subjects (the order part), warm-N.txt and pool-N.txt, call events
# over N calls.
make_pools() { # [subjects]
  "$BIN" pool 2048 0 "$WARM_POOL" "$WORK/warm${1:+-$1}.txt" ${1:+"$1"}
  "$BIN" pool 2048 "$WARM_POOL" "$POOL" "$WORK/pool${1:+-$1}.txt" ${1:+"$1"}
  # Written to the disk now: otherwise the kernel writes these hundreds of megabytes back
  # some 30 s later (vm.dirty_expire_centisecs), in the middle of a measured run, whose
  # commits then wait behind them (the first `on` run of the order part stalled in every
  # run: a p99 of 89 to 242 ms against 35 to 39 ms in later rounds).
  sync -f "$WORK"
  echo "distinct deliveries${1:+ over $1 subjects}: $WARM_POOL for each warm-up, $POOL for each measured run"
}

# The feature `metrics`: the layer recording into a Prometheus recorder, against the layer
# built without the feature (nothing compiled in), interleaved in the same rounds.
if [ "$PARTS" = metrics ]; then
cp "$BIN" "$WORK/load_server_off"
cargo build -q --release -p ringyo-webhook-benches --example load_server --features metrics
cp "$BIN" "$WORK/load_server_on"
[ "$("$WORK/load_server_off" features)" = "metrics off" ] && [ "$("$WORK/load_server_on" features)" = "metrics on" ] || {
  echo "the two builds do not differ in the feature metrics" >&2; exit 1; }
echo "| body | server | req/s | p50 | p99 | req/s on / off |"
echo "|---|---|---|---|---|---|"
for size in 256 2048; do
  SIG=$("$BIN" payload "$size" "$WORK/body-$size.json")
  declare -A results=()
  for round in $(seq 1 "$ROUNDS"); do
    results[off]+="$(RUN_BIN="$WORK/load_server_off" run layer "$size")"$'\n'
    results[on]+="$(RUN_BIN="$WORK/load_server_on" LOAD_METRICS=1 run layer "$size")"$'\n'
    results[compiled]+="$(RUN_BIN="$WORK/load_server_on" run layer "$size")"$'\n'
  done
  declare -A rps=() p50=() p99=()
  for which in off on compiled; do
    line=$(printf '%s' "${results[$which]}" | median)
    read -r rps[$which] p50[$which] p99[$which] <<<"$line"
    echo "round results $size $which: $(printf '%s' "${results[$which]}" | awk '{ printf "%s ", $1 }')" >&2
  done
  for which in off on compiled; do
    printf '| %s | layer, metrics %s | %.0f | %.0f µs | %.0f µs | %.3f |\n' "$size" "$which" "${rps[$which]}" \
      "${p50[$which]}" "${p99[$which]}" "$(awk "BEGIN { print ${rps[$which]} / ${rps[off]} }")"
  done
  unset results rps p50 p99
done
# Leave the default build (without the feature) for the other parts.
cargo build -q --release -p ringyo-webhook-benches --example load_server
fi

if [ "$PARTS" != inbox ] && [ "$PARTS" != metrics ] && [ "$PARTS" != order ]; then
# The delivery stores, 2 KiB.
free_port() { # the first port from $1 on that nothing listens on, in 50 tries
  for port in $(seq "$1" $(($1 + 49))); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  echo "no free port from $1" >&2; exit 1
}
REDIS_PORT=$(free_port "${LOAD_REDIS_PORT:-38519}")
"${PIN_LOAD[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --logfile "$WORK/redis.log" & REDIS_PID=$!
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.05
done
[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start" >&2; exit 1; }
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT, pinned: ${PIN_LOAD[*]:-no}"
make_pools
echo
# With LOAD_BASE_BIN (benches/ab.sh), the stores also run with the base build, `@base`.
STORE_MODES=(layer layer-memory layer-redis)
if [ -n "${LOAD_BASE_BIN:-}" ]; then
  [ -x "$LOAD_BASE_BIN" ] || { echo "LOAD_BASE_BIN: no executable at $LOAD_BASE_BIN" >&2; exit 1; }
  STORE_MODES+=(layer-memory@base layer-redis@base)
fi
echo "| body | server | req/s | p50 | p99 | handler ran | req/s vs layer | req/s vs layer-memory | server CPU per request | CPU vs layer |"
echo "|---|---|---|---|---|---|---|---|---|---|"
declare -A results=()
for round in $(seq 1 "$ROUNDS"); do
  for mode in $(in_turn "$round" "${STORE_MODES[@]}"); do
    results[$mode]+="$(run_pool "$mode")"$'\n'
  done
done
declare -A rps=() p50=() p99=() ran=() cpu=()
for mode in "${STORE_MODES[@]}"; do
  line=$(printf '%s' "${results[$mode]}" | median)
  read -r rps[$mode] p50[$mode] p99[$mode] ran[$mode] cpu[$mode] <<<"$line"
done
for mode in "${STORE_MODES[@]}"; do
  printf '| 2048 | %s | %.0f | %.0f µs | %.0f µs | %.4f | %.3f | %.3f | %.1f µs | %.3f |\n' "$mode" \
    "${rps[$mode]}" "${p50[$mode]}" "${p99[$mode]}" "${ran[$mode]}" \
    "$(awk "BEGIN { print ${rps[$mode]} / ${rps[layer]} }")" \
    "$(awk "BEGIN { print ${rps[$mode]} / ${rps[layer-memory]} }")" \
    "${cpu[$mode]}" "$(awk "BEGIN { print ${cpu[$mode]} / ${cpu[layer]} }")"
done
printf 'CPU per delivery, redis - memory: %.1f µs\n' \
  "$(awk "BEGIN { print (1 / ${rps[layer-redis]} - 1 / ${rps[layer-memory]}) * 1e6 }")"
if [ -n "${LOAD_BASE_BIN:-}" ]; then
  # Round by round: each store's req/s over its base twin's, and Redis over memory in each build.
  for round in $(seq 1 "$ROUNDS"); do
    at() { printf '%s' "${results[$1]}" | sed -n "${round}p" | cut -d' ' -f1; }
    awk -v r="$round" -v m="$(at layer-memory)" -v mb="$(at layer-memory@base)" \
      -v d="$(at layer-redis)" -v db="$(at layer-redis@base)" 'BEGIN {
        printf "round %d: memory over base %.3f, redis over base %.3f; redis / memory %.3f, base %.3f\n",
          r, m / mb, d / db, d / m, db / mb }'
  done
fi
echo
echo "one delivery at a time, in-process (load_server roundtrip, 5 rounds of 2000, median):"
"${PIN_SERVER[@]}" "$BIN" roundtrip "redis://127.0.0.1:$REDIS_PORT" 2000 5
echo "a bare PING, one client (redis-benchmark -c 1 -n 20000):"
"${PIN_SERVER[@]}" redis-benchmark -p "$REDIS_PORT" -t ping -c 1 -n 20000 -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second'
fi

# The durable inbox, 2 KiB, wrk -c64: `queue` (in memory) against the inbox on SQLite and
# Postgres, group commit and one transaction per delivery; or (the order part) ordering by
# subject on against off.
if [ "$PARTS" = inbox ] || [ "$PARTS" = order ]; then
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
CONNECTIONS=64
# How long the worker may take, after wrk stops, to start the handler on every 202'd delivery.
DRAIN_LIMIT=${LOAD_DRAIN_SECONDS:-120}
INBOX_MODES=(queue inbox-sqlite inbox-sqlite-single)
ENGINES=(sqlite)
if [ -n "${RINGYO_TEST_POSTGRES_URL:-}" ]; then
  INBOX_MODES+=(inbox-postgres inbox-postgres-single)
  ENGINES+=(postgres)
  command -v psql >/dev/null || { echo "psql is needed for the Postgres modes" >&2; exit 1; }
  PG_BASE=${RINGYO_TEST_POSTGRES_URL%/*}
  # Pinned like redis-server, to wrk's core: the postmaster and its processes now, and the
  # backends it forks later inherit the postmaster's affinity.
  pg_pin=no
  if [ ${#PIN_LOAD[@]} -gt 0 ] && [ -r "${RINGYO_TEST_POSTGRES_DATA:-}/postmaster.pid" ]; then
    postmaster=$(head -n 1 "$RINGYO_TEST_POSTGRES_DATA/postmaster.pid")
    for pid in "$postmaster" $(pgrep -P "$postmaster"); do
      taskset -a -p -c "${PIN_LOAD[2]}" "$pid" >/dev/null
    done
    pg_pin="${PIN_LOAD[*]}"
  fi
  echo "PostgreSQL $(psql "$RINGYO_TEST_POSTGRES_URL" -Atqc "SELECT current_setting('server_version') \
    || ', synchronous_commit ' || current_setting('synchronous_commit') \
    || ', fsync ' || current_setting('fsync') || ', wal_sync_method ' \
    || current_setting('wal_sync_method')") on 127.0.0.1, a new database per run, pinned: $pg_pin"
else
  echo "RINGYO_TEST_POSTGRES_URL is not set: SQLite modes only" \
    "(for Postgres too: bash .ci/with-postgres bash benches/inbox.sh)"
fi
# The order part on some engines only (LOAD_ENGINES="postgres"), and some variants only
# (LOAD_ORDER_VARIANTS="off on"), to look at one change.
if [ -n "${LOAD_ENGINES:-}" ]; then read -ra ENGINES <<<"$LOAD_ENGINES"; fi
if [ -n "${LOAD_INBOX_MODES:-}" ]; then read -ra INBOX_MODES <<<"$LOAD_INBOX_MODES"; fi
# This build, and with LOAD_BASE_BIN the base build too: a mode or variant named `NAME@base`
# runs NAME with it.
BUILDS=("")
if [ -n "${LOAD_BASE_BIN:-}" ]; then
  [ -x "$LOAD_BASE_BIN" ] || { echo "LOAD_BASE_BIN: no executable at $LOAD_BASE_BIN" >&2; exit 1; }
  BUILDS+=("@base")
  with_base=()
  for mode in "${INBOX_MODES[@]}"; do
    with_base+=("$mode")
    [ "$mode" = queue ] || with_base+=("$mode@base")
  done
  INBOX_MODES=("${with_base[@]}")
fi
INBOX_DIR=$(mktemp -d "${LOAD_INBOX_DIR:-/var/tmp}/ringyo-inbox-load.XXXXXX")
echo "SQLite: a new file per run in $INBOX_DIR ($(df -T "$INBOX_DIR" | awk 'NR == 2 { print $2 " on " $1 }'))"
if [ "$PARTS" = order ]; then
  make_pools 1000
  make_pools 10
else
  make_pools
fi
echo

value_of() { awk -v key="$1" '$1 == key { print $2 }'; } # a value from a "key value" report
core_ticks() { awk '/^cpu[0-9]+ / { printf "%d ", $2 + $3 + $4 + $7 + $8 }' /proc/stat; } # busy, per core
report() { # /stats or /latency of the server under test; it must answer
  curl -sS --max-time 5 "http://127.0.0.1:$PORT/$1" || { echo "$mode: the server stopped answering" >&2; exit 1; }
}

# Until every delivery answered 202 has been handled, and the handler ran for those and at most
# the ones whose 202 was cut off, or $DRAIN_LIMIT s; sets `stats`, `latency`, `handled`,
# `acked`, `unacked` and `drained`.
drain_inbox() {
  local since now
  since=$(date +%s.%N) now=$since drained=no
  while awk "BEGIN { exit !($now - $since < $DRAIN_LIMIT) }"; do
    latency=$(report latency) || exit 1
    stats=$(report stats) || exit 1
    handled=$(value_of handled <<<"$stats") acked=$(value_of answered_202 <<<"$stats")
    unacked=$(value_of handled_unacked <<<"$latency")
    if [ "$(value_of acked_unhandled <<<"$latency")" = 0 ] && [ $((handled - unacked)) = "$acked" ]; then
      drained=yes; break
    fi
    sleep 0.1
    now=$(date +%s.%N)
  done
}

# mode -> "2xx/s p50_us p99_us non-2xx 202s handled-without-202 handover_p50 handover_p99
#          handler-first backlog drain_s server-core-busy-% cores-busy-% handled/s
#          handled/s-under-load" (the server's pools: $WARM_FILE and $MEASURE_FILE, default
#          warm.txt and pool.txt; with $DRAIN_WARMUP=yes, the warm-up is handled in full first)
run_inbox() {
  local url= db= bin=$BIN name=$1
  if [ "${1%@base}" != "$1" ]; then bin=$LOAD_BASE_BIN; set -- "${1%@base}"; fi
  case "$1" in
    inbox-sqlite*) url="sqlite://$INBOX_DIR/${name//@/-}-$round.db" ;;
    inbox-postgres*)
      db="ringyo_load_${name//[-@]/_}_${round}_$$"
      psql "$RINGYO_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db" >/dev/null
      url="$PG_BASE/$db" ;;
  esac
  LOAD_INBOX_URL=$url "${PIN_SERVER[@]}" "$bin" serve "$1" "127.0.0.1:$PORT" & SERVER=$!
  trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  wait_ready
  # Another process on the port would answer in its place.
  kill -0 "$SERVER" 2>/dev/null || { echo "$1: the server exited at start" >&2; exit 1; }
  local warm out
  warm=$(POOL_FILE="$WORK/${WARM_FILE:-warm.txt}" "${PIN_LOAD[@]}" \
    wrk -t1 -c"$CONNECTIONS" -d1s --timeout 5s -s "$WORK/pool.lua" "$URL" | grep '^RESULT')
  # The server's CPU time, and each core's busy time whatever ran on it (core 1: wrk, and
  # Postgres), from the measured run's first answer (wrk first reads the pool) to its end.
  sleep 1 # the warm-up's last requests finish
  local stats latency handled acked unacked drained
  if [ "${DRAIN_WARMUP:-}" = yes ]; then
    drain_inbox
    [ "$drained" = yes ] || { echo "$1: the warm-up was not handled within ${DRAIN_LIMIT}s" >&2; exit 1; }
  fi
  local answered ticks cores busy started ended snapshot handled_first
  answered=$(report stats | awk '/^answered_/ { n += $2 } END { print n }') || exit 1
  POOL_FILE="$WORK/${MEASURE_FILE:-pool.txt}" "${PIN_LOAD[@]}" \
    wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --timeout 5s -s "$WORK/pool.lua" "$URL" \
    >"$WORK/wrk.out" & local load=$!
  while :; do
    snapshot=$(report stats) || exit 1
    [ "$(awk '/^answered_/ { n += $2 } END { print n }' <<<"$snapshot")" -gt "$answered" ] && break
    kill -0 "$load" 2>/dev/null || break
    sleep 0.02
  done
  ticks=$(cpu_ticks "$SERVER") cores=$(core_ticks) started=$(date +%s.%N)
  handled_first=$(value_of handled <<<"$snapshot")
  wait "$load" || { echo "$1: wrk failed" >&2; exit 1; }
  ended=$(date +%s.%N)
  out=$(grep '^RESULT' "$WORK/wrk.out")
  busy=$(awk "BEGIN { printf \"%.0f\", ($(cpu_ticks "$SERVER") - $ticks) / $(getconf CLK_TCK) * 100 / ($ended - $started) }")
  cores=$(paste -d' ' <(tr ' ' '\n' <<<"$cores" | grep .) <(core_ticks | tr ' ' '\n' | grep .) \
    | awk -v hz="$(getconf CLK_TCK)" -v s="$(awk "BEGIN { print $ended - $started }")" \
      '{ printf "%s%.0f", (NR > 1 ? "/" : ""), ($2 - $1) / hz * 100 / s }')
  # The drain (bounded): until the handler has started on every delivery answered 202, and
  # the handler count is the 202s plus the deliveries committed whose request wrk cut off at
  # the end of a run (their 202 was never sent; matched by delivery id, see /latency).
  local backlog stopped handled_stop
  stats=$(report stats) || exit 1
  handled_stop=$(value_of handled <<<"$stats")
  backlog=$(($(value_of answered_202 <<<"$stats") - handled_stop))
  stopped=$(date +%s.%N)
  drain_inbox
  local drain finished rate load_rate
  finished=$(date +%s.%N)
  drain=$(awk "BEGIN { printf \"%.1f\", $finished - $stopped }")
  # Handled per second from the measured run's first answer until the drain ended, and while
  # the load ran.
  rate=$(awk "BEGIN { printf \"%.1f\", ($handled - $handled_first) / ($finished - $started) }")
  load_rate=$(awk "BEGIN { printf \"%.1f\", ($handled_stop - $handled_first) / ($ended - $started) }")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  if [ -n "$db" ]; then
    psql "$RINGYO_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
  fi
  rm -f "$INBOX_DIR/${name//@/-}-$round.db"*
  local warm_errors warm_requests warm_status ok_rps p50 p99 errors requests status
  read -r _ _ _ _ warm_errors warm_requests warm_status _ <<<"$warm"
  read -r _ _ p50 p99 errors requests status ok_rps <<<"$out"
  local duplicates others reruns
  duplicates=$(value_of answered_200 <<<"$stats") others=$(value_of answered_other <<<"$stats")
  reruns=$(value_of reruns <<<"$latency")
  [ $((warm_requests + CONNECTIONS)) -le "$WARM_POOL" ] && [ $((requests + CONNECTIONS)) -le "$POOL" ] || {
    echo "$1: the pool of distinct deliveries ran out ($warm_requests warm-up, $requests measured" \
      "requests); raise POOL" >&2; exit 1; }
  # Non-2xx answers and socket errors are reported, not fatal: they are what is measured.
  if [ $((duplicates + others + warm_errors + errors)) -gt 0 ]; then
    echo "$1 round $round: NOT ACKNOWLEDGED: $duplicates answered 200 (duplicate), $others answered" \
      "neither 202 nor 200; wrk: $((warm_status + status)) status errors, $((warm_errors + errors)) errors" \
      "in all (status, connect, read, write, time-out)" >&2
  fi
  [ "$(value_of acked_unhandled <<<"$latency")" = 0 ] || {
    echo "$1: FAILED: $(value_of acked_unhandled <<<"$latency") deliveries answered 202 were not" \
      "handled ${DRAIN_LIMIT}s after the load stopped" >&2; exit 1; }
  # At most one cut-off request per connection at the end of the warm-up and of the run, and
  # one per request not answered 2xx: wrk gives up on a request after 5 s, and the inbox answers
  # 503 to a commit that takes longer, and either may still commit the delivery.
  [ "$drained" = yes ] && [ "$reruns" = 0 ] \
    && [ "$unacked" -le $((2 * CONNECTIONS + warm_errors + errors + others)) ] || {
    echo "$1: FAILED: the handler ran $handled times ($reruns reruns) for $acked deliveries" \
      "answered 202 and $unacked committed whose request was cut off ($((warm_errors + errors))" \
      "wrk errors, $others answers neither 202 nor 200)" >&2; exit 1; }
  echo "$ok_rps $p50 $p99 $((duplicates + others)) $acked $unacked $(value_of p50_us <<<"$latency")" \
    "$(value_of p99_us <<<"$latency") $(value_of handler_first <<<"$latency") $backlog $drain $busy $cores" \
    "$rate $load_rate"
}

# One pass over every mode, $ROUNDS rounds, and its table. With a pace, each connection waits
# that many ms before each request: a load every mode keeps up with, for the time from 2xx to
# the handler's start when there is no backlog.
inbox_pass() { # [pace_ms]
  local pace=${1:-} mode line group
  if [ -n "$pace" ]; then
    echo "paced: each of the $CONNECTIONS connections waits ${pace} ms before each request"
  else
    echo "saturated: each of the $CONNECTIONS connections sends its next request on the last answer"
  fi
  declare -A results=()
  for round in $(seq 1 "$ROUNDS"); do
    for mode in $(in_turn "$round" "${INBOX_MODES[@]}"); do
      line=$(LOAD_DELAY_MS=$pace run_inbox "$mode")
      echo "round $round $mode${pace:+ (paced)}: $line" >&2
      results[$mode]+="$line"$'\n'
    done
  done
  declare -A rps=() p50=() p99=() bad=() acked=() cut=() h50=() h99=() first=() backlog=() drain=() busy=() cores=()
  for mode in "${INBOX_MODES[@]}"; do
    line=$(printf '%s' "${results[$mode]}" | median)
    read -r rps[$mode] p50[$mode] p99[$mode] bad[$mode] acked[$mode] cut[$mode] h50[$mode] \
      h99[$mode] first[$mode] backlog[$mode] drain[$mode] busy[$mode] cores[$mode] _ <<<"$line"
  done
  echo "| body | mode | 2xx/s | p50 | p99 | vs queue | group commit vs single | non-2xx | 202s (all handled) | handled, 202 cut off | 2xx to handler p50 | p99 | backlog at stop | drain | server CPU | cores busy |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  local single vs_queue
  for mode in "${INBOX_MODES[@]}"; do
    single=${mode%@base}-single${mode#"${mode%@base}"}
    case "$mode" in
      inbox-*-single*) group=1.000 ;;
      inbox-*) [ -n "${rps[$single]:-}" ] || single=
        group=${single:+$(awk "BEGIN { printf \"%.3f\", ${rps[$mode]} / ${rps[$single]} }")} ;;
      *) group= ;;
    esac
    vs_queue=${rps[queue]:+$(awk "BEGIN { printf \"%.3f\", ${rps[$mode]} / ${rps[queue]} }")}
    printf '| 2048 | %s | %.0f | %.0f µs | %.0f µs | %s | %s | %d | %d | %d | %d µs | %d µs | %d | %s s | %d%% | %s%% |\n' \
      "$mode" "${rps[$mode]}" "${p50[$mode]}" "${p99[$mode]}" \
      "${vs_queue:--}" "${group:--}" "${bad[$mode]}" \
      "${acked[$mode]}" "${cut[$mode]}" "${h50[$mode]}" "${h99[$mode]}" "${backlog[$mode]}" "${drain[$mode]}" \
      "${busy[$mode]}" "${cores[$mode]}"
  done
  echo
  ab_table results "${INBOX_MODES[@]}"
}

# With LOAD_BASE_BIN: each mode or variant of this build over its `@base` twin, round by round
# (from the results array named $1, a line a round in run_inbox's fields).
ab_table() {
  [ -n "${LOAD_BASE_BIN:-}" ] || return 0
  local -n lines=$1
  shift
  echo "this build over the base (LOAD_BASE_BIN), round by round:"
  echo "| mode | 2xx/s | handled/s | server CPU per 2xx |"
  echo "|---|---|---|---|"
  local name
  for name in "$@"; do
    [ -n "${lines[$name@base]:-}" ] || continue
    # Fields 1, 14 and 12: 2xx/s, handled/s, the server's core busy (%).
    paste -d' ' <(printf '%s' "${lines[$name]}") <(printf '%s' "${lines[$name@base]}") | awk -v n=15 -v name="$name" '
      { a = a sep sprintf("%.3f", $1 / $(n + 1)); h = h sep sprintf("%.3f", $14 / $(n + 14))
        c = c sep sprintf("%.3f", ($12 / $1) / ($(n + 12) / $(n + 1))); sep = ", " }
      END { printf "| %s | %s | %s | %s |\n", name, a, h, c }'
  done
  echo
}
if [ "$PARTS" = inbox ]; then
inbox_pass
# 64 connections a request each 64 ms or so: about 1,000 deliveries/s, under what the slowest
# mode (Postgres, a transaction per delivery) commits.
inbox_pass "${LOAD_PACE_MS:-64}"
fi

# Per-subject ordering on against off. A variant is ENGINE-WHICH: off, on (window 0), on-1s
# (the default window), on-10 (10 subjects, window 0).
variant() { # variant -> "server-mode reorder-window-ms subjects"
  local engine=${1%%-*} which=${1#*-}
  case "$which" in
    off) echo "inbox-$engine - 1000" ;;
    on) echo "inbox-$engine-ordered 0 1000" ;;
    on-1s) echo "inbox-$engine-ordered 1000 1000" ;;
    on-10) echo "inbox-$engine-ordered 0 10" ;;
  esac
}
order_pass() {
  local engine which name mode window subjects line
  local -a variants=()
  local build
  for engine in "${ENGINES[@]}"; do
    for which in ${LOAD_ORDER_VARIANTS:-off on on-1s on-10}; do
      for build in "${BUILDS[@]}"; do variants+=("$engine-$which$build"); done
    done
  done
  echo "saturated: each of the $CONNECTIONS connections sends its next request on the last answer;"
  echo "the warm-up handled before each measured run; handled/s from the first answer to the drain's end"
  declare -A results=()
  for round in $(seq 1 "$ROUNDS"); do
    for name in $(in_turn "$round" "${variants[@]}"); do
      read -r mode window subjects <<<"$(variant "${name%@base}")"
      # Only the -ordered modes read the window.
      line=$(DRAIN_WARMUP=yes WARM_FILE="warm-$subjects.txt" MEASURE_FILE="pool-$subjects.txt" \
        LOAD_REORDER_WINDOW_MS=${window/-/0} run_inbox "$mode${name#"${name%@base}"}")
      echo "round $round $name: $line" >&2
      results[$name]+="$line"$'\n'
    done
  done
  # The median round of each variant by handled/s; and each round's ratio to `off` on the
  # same engine in that round.
  declare -A row=() rounds=() acked_ratios=() handled_ratios=()
  for name in "${variants[@]}"; do
    row[$name]=$(printf '%s' "${results[$name]}" | awk '{ print $14, $0 }' | sort -n \
      | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }' | cut -d' ' -f2-)
    rounds[$name]=$(printf '%s' "${results[$name]}" | awk '{ printf "%s%.0f", (NR > 1 ? ", " : ""), $14 }')
    local off=${name%%-*}-off${name#"${name%@base}"}
    acked_ratios[$name]=$(paste -d' ' <(printf '%s' "${results[$name]}") <(printf '%s' "${results[$off]}") \
      | awk -v n=15 '{ printf "%s%.3f", (NR > 1 ? ", " : ""), $1 / $(n + 1) }')
    handled_ratios[$name]=$(paste -d' ' <(printf '%s' "${results[$name]}") <(printf '%s' "${results[$off]}") \
      | awk -v n=15 '{ printf "%s%.3f", (NR > 1 ? ", " : ""), $14 / $(n + 14) }')
  done
  echo "| engine | ordering | subjects | window | 2xx/s | handled/s | handled/s under load | 2xx on/off | handled on/off | p50 | p99 | 2xx to handler p50 | p99 | backlog at stop | drain | server CPU | cores busy | handled/s, rounds | handled on/off, rounds | 2xx on/off, rounds |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  local rps p50 p99 bad acked cut h50 h99 first backlog drain busy cores rate load_rate
  local off_rps off_rate
  for name in "${variants[@]}"; do
    read -r mode window subjects <<<"$(variant "${name%@base}")"
    read -r off_rps _ _ _ _ _ _ _ _ _ _ _ _ off_rate _ <<<"${row[${name%%-*}-off${name#"${name%@base}"}]}"
    read -r rps p50 p99 bad acked cut h50 h99 first backlog drain busy cores rate load_rate <<<"${row[$name]}"
    [ "$bad" = 0 ] || echo "$name: $bad answers neither 202 nor 200 in the median round" >&2
    printf '| %s | %s | %s | %s | %.0f | %.0f | %.0f | %.3f | %.3f | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %d | %s s | %d%% | %s%% | %s | %s | %s |\n' \
      "${name%%-*}${name#"${name%@base}"}" "$([ "$window" = - ] && echo off || echo on)" "$subjects" \
      "$([ "$window" = - ] && echo - || echo "$window ms")" "$rps" "$rate" "$load_rate" \
      "$(awk "BEGIN { print $rps / $off_rps }")" "$(awk "BEGIN { print $rate / $off_rate }")" \
      "$(awk "BEGIN { print $p50 / 1000 }")" "$(awk "BEGIN { print $p99 / 1000 }")" \
      "$(awk "BEGIN { print $h50 / 1000 }")" "$(awk "BEGIN { print $h99 / 1000 }")" \
      "$backlog" "$drain" "$busy" "$cores" "${rounds[$name]}" "${handled_ratios[$name]}" "${acked_ratios[$name]}"
  done
  echo
  ab_table results "${variants[@]}"
}
if [ "$PARTS" = order ]; then
  order_pass
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
