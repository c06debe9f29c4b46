#!/usr/bin/env bash
# Where per-subject ordering spends its time (README.md, "Ordering by subject").
#
#   bash .ci/with-postgres bash benches/order_profile.sh [seconds of load, default 10]
#
# 1. `inbox_ops` (benches/examples/inbox_ops.rs) on a new SQLite file, and on a new Postgres
#    database: what each step (store, claim, settle) costs per delivery with ordering off and
#    on, one step at a time, and on SQLite the WAL pages each step writes.
# 2. Postgres under load: restarts the throwaway server of .ci/with-postgres with
#    pg_stat_statements and auto_explain (the plan of every statement over 2 ms, with its
#    buffers), then runs `load_server serve inbox-postgres` and `inbox-postgres-ordered`
#    (reorder window 0) for the given seconds each under wrk -c64 (deliveries over 1,000
#    calls), each on a new database, and prints per mode the statements by server time, the
#    tables' dead rows, the statements over 2 ms, and the indexes the plans logged for the
#    suspects count used. With ORDER_PROFILE_PLANS=DIR the logged plans are kept there.
#
# Without Postgres (RINGYO_TEST_POSTGRES_URL unset) only the SQLite part runs. Every request
# goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_OF_LOAD=${1:-10}
PORT=${LOAD_PORT:-38517}
WORK=$(mktemp -d)
DIR=$(mktemp -d "${LOAD_INBOX_DIR:-/var/tmp}/ringyo-order-profile.XXXXXX")
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK" "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PIN_SERVER=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1)
fi
cargo build -q --release -p ringyo-webhook-benches --example load_server --example inbox_ops
TARGET_DIR=$(cargo metadata -q --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${TARGET_DIR:-target}/release/examples
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), at $(git rev-parse --short HEAD)"

echo
echo "## inbox_ops, SQLite (a new file in $DIR)"
"${PIN_SERVER[@]}" "$BIN/inbox_ops" "sqlite://$DIR/ops.db" 64 5

[ -n "${RINGYO_TEST_POSTGRES_URL:-}" ] || {
  echo "RINGYO_TEST_POSTGRES_URL is not set: SQLite only (for Postgres: bash .ci/with-postgres bash $0)"
  exit 0
}
command -v psql >/dev/null || { echo "psql is needed for the Postgres part" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
[ -n "${RINGYO_TEST_POSTGRES_DATA:-}" ] && [ -n "${RINGYO_TEST_POSTGRES_STOP:-}" ] || {
  echo "the Postgres part restarts the server: run under .ci/with-postgres" >&2; exit 1; }
BASE=${RINGYO_TEST_POSTGRES_URL%/*}
cat >>"$RINGYO_TEST_POSTGRES_DATA/postgresql.conf" <<'CONF'
shared_preload_libraries = 'pg_stat_statements,auto_explain'
auto_explain.log_min_duration = 2
auto_explain.log_analyze = on
auto_explain.log_buffers = on
auto_explain.log_timing = off
CONF
sh -c "$RINGYO_TEST_POSTGRES_STOP" >/dev/null
sh -c "$RINGYO_TEST_POSTGRES_START" >/dev/null
pin_postgres() { # to wrk's core, as inbox.sh does
  [ ${#PIN_LOAD[@]} -gt 0 ] || return 0
  local postmaster
  postmaster=$(head -n 1 "$RINGYO_TEST_POSTGRES_DATA/postmaster.pid")
  for pid in "$postmaster" $(pgrep -P "$postmaster"); do
    taskset -a -p -c "${PIN_LOAD[2]}" "$pid" >/dev/null
  done
}
pin_postgres
new_database() {
  psql "$RINGYO_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $1" >/dev/null
  psql "$BASE/$1" -v ON_ERROR_STOP=1 -qc "CREATE EXTENSION pg_stat_statements" >/dev/null
}
statements() { # the database's statements by server time
  psql "$BASE/$1" -P pager=off -c "SELECT calls, round(total_exec_time::numeric) AS total_ms, \
    round(mean_exec_time::numeric * 1000) AS mean_us, rows, \
    (shared_blks_hit + shared_blks_read) / greatest(calls, 1) AS buffers_per_call, \
    left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query FROM pg_stat_statements \
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$1') \
      AND query NOT LIKE '%ringyo_inbox_migrations%' AND query NOT LIKE '--%' \
      AND query NOT LIKE 'CREATE%' ORDER BY total_exec_time DESC LIMIT 14"
  # The same by kind of statement: a statement whose VALUES list varies with its batch is a
  # row above for each length, so its first 60 characters, parameters unnumbered, group them.
  psql "$BASE/$1" -P pager=off -c "SELECT sum(calls) AS calls, round(sum(total_exec_time)::numeric) \
    AS total_ms, sum(rows) AS rows, left(regexp_replace(regexp_replace(query, '\s+', ' ', 'g'), \
      '\\\$[0-9]+', '\$', 'g'), 60) AS kind \
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$1') \
      AND query NOT LIKE '%ringyo_inbox_migrations%' AND query NOT LIKE '--%' \
      AND query NOT LIKE 'CREATE%' GROUP BY kind ORDER BY total_ms DESC"
  psql "$BASE/$1" -P pager=off -c "SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, \
    n_tup_hot_upd, pg_relation_size(relid) / 8192 AS pages, autovacuum_count FROM \
    pg_stat_user_tables WHERE relname IN ('ringyo_inbox', 'ringyo_inbox_lanes') ORDER BY relname"
}

echo
echo "## inbox_ops, Postgres"
new_database ringyo_profile_ops
"${PIN_SERVER[@]}" "$BIN/inbox_ops" "$BASE/ringyo_profile_ops" 64 5
statements ringyo_profile_ops

cat >"$WORK/pool.lua" <<'LUA'
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
  next_request = next_request % #requests + 1
  return this
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d\n", summary.requests, summary.errors.status))
end
LUA
POOL=$((SECONDS_OF_LOAD * 10000))
"$BIN/load_server" pool 2048 0 "$POOL" "$WORK/pool.txt" 1000
for mode in inbox-postgres inbox-postgres-ordered; do
  db=ringyo_profile_${mode//-/_}
  new_database "$db"
  log_from=$(wc -l <"$RINGYO_TEST_POSTGRES_DATA/log")
  LOAD_INBOX_URL="$BASE/$db" LOAD_REORDER_WINDOW_MS=0 "${PIN_SERVER[@]}" "$BIN/load_server" \
    serve "$mode" "127.0.0.1:$PORT" & SERVER=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.05
  done
  psql "$BASE/$db" -qc "SELECT pg_stat_statements_reset()" >/dev/null
  out=$(POOL_FILE="$WORK/pool.txt" "${PIN_LOAD[@]}" wrk -t1 -c64 -d"${SECONDS_OF_LOAD}s" --timeout 5s \
    -s "$WORK/pool.lua" "http://127.0.0.1:$PORT/webhooks/ringyo" | grep '^RESULT')
  read -r _ requests errors <<<"$out"
  [ "$requests" -lt "$POOL" ] || { echo "$mode: the pool ran out" >&2; exit 1; }
  # The drain, bounded: until the handler ran for every 202.
  for _ in $(seq 1 1200); do
    stats=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/stats")
    handled=$(awk '$1 == "handled" { print $2 }' <<<"$stats")
    acked=$(awk '$1 == "answered_202" { print $2 }' <<<"$stats")
    [ "$handled" -ge "$acked" ] && break
    sleep 0.1
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  echo
  echo "## $mode under load: ${SECONDS_OF_LOAD}s, $requests requests ($errors not 2xx), then the drain;" \
    "handled $handled of $acked"
  statements "$db"
  tail -n +"$((log_from + 1))" "$RINGYO_TEST_POSTGRES_DATA/log" >"$WORK/plans.log"
  echo "statements over 2 ms (auto_explain), by statement:"
  sed -n 's/^[[:space:]]*Query Text: //p' "$WORK/plans.log" | cut -c1-90 | sort | uniq -c | sort -rn | head
  echo "indexes the logged plans of the suspects count used:"
  awk '/Query Text: SELECT COUNT\(\*\) FROM ringyo_inbox WHERE/ { count = 1; next }
       count && /Index Scan on|Index Scan using|Seq Scan on/ { print; count = 0 }' "$WORK/plans.log" \
    | sed 's/^[[:space:]]*//; s/(cost.*//; s/  *$//' | sort | uniq -c
  cp "$WORK/plans.log" "${ORDER_PROFILE_PLANS:-$WORK}/plans-$mode.log" 2>/dev/null || true
done
