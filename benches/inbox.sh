#!/usr/bin/env bash
# The durable inbox under load: load.sh's `inbox` part (see there and README.md).
#
#   bash .ci/with-postgres bash benches/inbox.sh [seconds per run, default 10] [rounds, default 3]
#
# `queue` (the in-memory receiver), `inbox-sqlite`, `inbox-sqlite-single` and, under
# .ci/with-postgres (which sets RINGYO_TEST_POSTGRES_URL), `inbox-postgres` and
# `inbox-postgres-single`; without Postgres it runs the SQLite modes and says so.
set -euo pipefail
exec bash "$(dirname "$0")/load.sh" "${1:-10}" "${2:-3}" inbox
