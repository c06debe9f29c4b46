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
# Every request goes to 127.0.0.1 only, and each run stops after its duration.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
PARTS=${3:-all}
case "$PARTS" in all | stores) ;; *) echo "third argument: all or stores" >&2; exit 1 ;; esac
PORT=${LOAD_PORT:-38517}
URL="http://127.0.0.1:$PORT/webhooks/ringyo"
# Distinct deliveries per measured run: room for 40 000 req/s (about twice this VM's rate).
POOL=$((SECONDS_PER_RUN * 40000)) WARM_POOL=60000
WORK=$(mktemp -d)
REDIS_PID=
cleanup() {
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null || {
    echo "cannot install wrk: run 'apt-get install wrk' and retry" >&2; exit 1; }
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
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
function request()
  local this = requests[next_request]
  next_request = next_request % #requests + 1 -- a wrap would send duplicates: load.sh checks
  return this
end
function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.1f %.1f %.1f %d %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    errors, summary.requests))
end
LUA

wait_ready() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server did not start" >&2; exit 1
}

run() { # mode size -> "req/s p50_us p99_us"
  # `run` is called as $(run ...), a subshell: its trap stops its own server, even on Ctrl-C.
  "${PIN_SERVER[@]}" "$BIN" serve "$1" "127.0.0.1:$PORT" & SERVER=$!
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

run_pool() { # mode -> "req/s p50_us p99_us handled/requests"
  if [ "$1" = layer-redis ]; then redis-cli -p "$REDIS_PORT" flushall >/dev/null; fi
  LOAD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" "${PIN_SERVER[@]}" "$BIN" serve "$1" "127.0.0.1:$PORT" & SERVER=$!
  trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  wait_ready
  local warm out
  warm=$(POOL_FILE="$WORK/warm.txt" "${PIN_LOAD[@]}" \
    wrk -t1 -c32 -d1s --timeout 5s -s "$WORK/pool.lua" "$URL" | grep '^RESULT')
  out=$(POOL_FILE="$WORK/pool.txt" "${PIN_LOAD[@]}" \
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" --timeout 5s -s "$WORK/pool.lua" "$URL" | grep '^RESULT')
  local stats
  stats=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/stats")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  local warm_errors warm_requests rps p50 p99 errors requests handled
  read -r _ _ _ _ warm_errors warm_requests <<<"$warm"
  read -r _ rps p50 p99 errors requests <<<"$out"
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
  echo "$rps $p50 $p99 $ratio"
}

median() { sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), pinned: ${PIN_SERVER[*]:-no}"
echo "each run: ${SECONDS_PER_RUN}s, wrk -t1 -c32, ${ROUNDS} rounds, median round shown"
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
"$BIN" pool 2048 0 "$WARM_POOL" "$WORK/warm.txt"
"$BIN" pool 2048 "$WARM_POOL" "$POOL" "$WORK/pool.txt"
echo "distinct deliveries: $WARM_POOL for each warm-up, $POOL for each measured run"
echo
echo "| body | server | req/s | p50 | p99 | handler ran | req/s vs layer | req/s vs layer-memory |"
echo "|---|---|---|---|---|---|---|---|"
declare -A results=()
for round in $(seq 1 "$ROUNDS"); do
  for mode in layer layer-memory layer-redis; do
    results[$mode]+="$(run_pool "$mode")"$'\n'
  done
done
declare -A rps=() p50=() p99=() ran=()
for mode in layer layer-memory layer-redis; do
  line=$(printf '%s' "${results[$mode]}" | median)
  read -r rps[$mode] p50[$mode] p99[$mode] ran[$mode] <<<"$line"
done
for mode in layer layer-memory layer-redis; do
  printf '| 2048 | %s | %.0f | %.0f µs | %.0f µs | %.4f | %.3f | %.3f |\n' "$mode" "${rps[$mode]}" \
    "${p50[$mode]}" "${p99[$mode]}" "${ran[$mode]}" \
    "$(awk "BEGIN { print ${rps[$mode]} / ${rps[layer]} }")" \
    "$(awk "BEGIN { print ${rps[$mode]} / ${rps[layer-memory]} }")"
done
printf 'CPU per delivery, redis - memory: %.1f µs\n' \
  "$(awk "BEGIN { print (1 / ${rps[layer-redis]} - 1 / ${rps[layer-memory]}) * 1e6 }")"
echo
echo "one delivery at a time, in-process (load_server roundtrip, 5 rounds of 2000, median):"
"${PIN_SERVER[@]}" "$BIN" roundtrip "redis://127.0.0.1:$REDIS_PORT" 2000 5
echo "a bare PING, one client (redis-benchmark -c 1 -n 20000):"
"${PIN_SERVER[@]}" redis-benchmark -p "$REDIS_PORT" -t ping -c 1 -n 20000 -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second'
