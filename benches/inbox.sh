#!/usr/bin/env bash
# The durable inbox under load: load.sh's `inbox` part, or with `order` its `order` part (see
# there and README.md).
#
#   bash .ci/with-postgres bash benches/inbox.sh [seconds per run, default 10] [rounds, default 3] [order]
#
# `queue` (the in-memory receiver), `inbox-sqlite`, `inbox-sqlite-single` and, under
# .ci/with-postgres (which sets RINGYO_TEST_POSTGRES_URL), `inbox-postgres` and
# `inbox-postgres-single`; without Postgres it runs the SQLite modes and says so. With `order`:
# per-subject ordering on against off, over 1,000 subjects and over 10, on each engine.
set -euo pipefail
case "${3:-inbox}" in
  inbox | order) ;;
  *) echo "third argument: order, or none" >&2; exit 1 ;;
esac
exec bash "$(dirname "$0")/load.sh" "${1:-10}" "${2:-3}" "${3:-inbox}"
