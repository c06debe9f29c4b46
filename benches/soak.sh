#!/usr/bin/env bash
# The soak: a long stream of deliveries to the layer with a memory delivery store, a tenth of
# them bad, every answer checked, the server's resident memory read after each tenth.
#
#   bash benches/soak.sh [deliveries, default 50000] [concurrency, default 64]
#
# `load_server serve layer-memory` on a free port of 127.0.0.1, and `soak` (see
# benches/examples/soak.rs) as the client. Fails if any answer is not the one expected, if
# any is a 5xx, or if the handler did not run exactly once per genuine delivery. Every
# request goes to 127.0.0.1 only, and the run stops after its deliveries.
set -euo pipefail
cd "$(dirname "$0")/.."

DELIVERIES=${1:-50000}
CONCURRENCY=${2:-64}
cargo build -q --release -p ringyo-webhook-benches --example load_server --example soak
TARGET_DIR=$(cargo metadata -q --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${TARGET_DIR:-target}/release/examples
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The store capped at 4 000 entries: full within the first tenth, it then stops growing
# (forgetting the oldest handled deliveries), so any growth after that is something else.
LOAD_MEMORY_CAPACITY=4000 "$BIN/load_server" serve layer-memory "127.0.0.1:$PORT" & SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.05
done
kill -0 "$SERVER" 2>/dev/null || { echo "the server did not start" >&2; exit 1; }
echo "machine: $(nproc) cores; server: load_server layer-memory, store capped at 4 000 (pid $SERVER)"
"$BIN/soak" "127.0.0.1:$PORT" "$DELIVERIES" "$CONCURRENCY" "$SERVER"
