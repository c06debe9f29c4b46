#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints executions, coverage and findings.
#
#   bash fuzz/run.sh [seconds per target, default 60]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); builds on the stable toolchain with
# RUSTC_BOOTSTRAP=1, as cargo-fuzz needs nightly flags (the address sanitizer). Every target
# starts from the committed envelopes in fuzz/seeds (read, never written), with the JSON tokens of
# fuzz/json.dict to splice in; corpora grow in
# fuzz/corpus/<target>, crashes land in fuzz/artifacts/<target>: each becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null
echo "| target | seconds | executions | exec/s | coverage (cov) | features (ft) | corpus | crashes |"
echo "|---|---|---|---|---|---|---|---|"
status=0
for target in $(cargo fuzz list); do
  log=$(mktemp)
  mkdir -p "fuzz/corpus/$target"
  if ! cargo fuzz run -O "$target" "fuzz/corpus/$target" fuzz/seeds -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 \
      -timeout=5 -dict=fuzz/json.dict >"$log" 2>&1; then
    status=1
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | awk '{ print $2 }' | tail -n 1)
  stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$stats" | awk '{ print $2 }')
  ft=$(grep -o 'ft: [0-9]*' <<<"$stats" | awk '{ print $2 }')
  corpus=$(find "fuzz/corpus/$target" -type f 2>/dev/null | wc -l)
  crashes=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
  echo "| $target | $SECONDS_PER_TARGET | ${runs:-?} | $(( ${runs:-0} / SECONDS_PER_TARGET )) | ${cov:-?} | ${ft:-?} | $corpus | $crashes |"
  if [ "$crashes" != 0 ]; then tail -n 30 "$log" >&2; fi
  rm -f "$log"
done
exit $status
