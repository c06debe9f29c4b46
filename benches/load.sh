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
# Every request goes to 127.0.0.1 only, and each run stops after its duration.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
PORT=${LOAD_PORT:-38517}
URL="http://127.0.0.1:$PORT/webhooks/ringyo"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null || {
    echo "cannot install wrk: run 'apt-get install wrk' and retry" >&2; exit 1; }
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

median() { sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), pinned: ${PIN_SERVER[*]:-no}"
echo "each run: ${SECONDS_PER_RUN}s, wrk -t1 -c32, ${ROUNDS} rounds, median round shown"
echo
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
