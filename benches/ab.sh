#!/usr/bin/env bash
# This tree's inbox against another revision's, interleaved in the same rounds: on this noisy
# machine two runs of the same code differ by 10 to 30%, so a change is measured against its
# base in one run (README.md, "A change against its base").
#
#   bash [.ci/with-postgres] bash benches/ab.sh BASE [seconds per run, default 10] [rounds, default 5] [inbox | order | stores]
#
# Builds load_server at BASE (a git revision) in a throwaway worktree, into target/ab-base (kept,
# so the next build is incremental), then runs load.sh's inbox part (or its order or stores part) with
# LOAD_BASE_BIN naming that build: every mode runs with both builds in each round, and the last
# table gives this build's 2xx/s, handled/s and server CPU per 2xx over the base's, round by
# round. load.sh's settings apply: LOAD_INBOX_MODES="queue inbox-sqlite" to run fewer modes,
# LOAD_ENGINES and LOAD_ORDER_VARIANTS for the order part. Every request goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: benches/ab.sh BASE [seconds per run] [rounds] [inbox | order | stores]}
PART=${4:-inbox}
case "$PART" in inbox | order | stores) ;; *) echo "fourth argument: inbox, order or stores" >&2; exit 1 ;; esac
rev=$(git rev-parse --verify --quiet "$BASE^{commit}") || { echo "no revision $BASE" >&2; exit 1; }
TREE=$(mktemp -d)
cleanup() { git worktree remove --force "$TREE" 2>/dev/null || rm -rf "$TREE"; git worktree prune; }
trap cleanup EXIT
trap 'exit 130' INT TERM
git worktree add -q --detach "$TREE" "$rev"
TARGET=$PWD/target/ab-base
CARGO_TARGET_DIR=$TARGET cargo build -q --release --manifest-path "$TREE/Cargo.toml" \
  -p ringyo-webhook-benches --example load_server
echo "base: $(git log -1 --format='%h %s' "$rev" | cut -c1-100)"
echo "this build: $(git log -1 --format='%h' HEAD)$(git diff --quiet HEAD -- . ':!benches' || echo ' with uncommitted changes')"
LOAD_BASE_BIN=$TARGET/release/examples/load_server bash benches/load.sh "${2:-10}" "${3:-5}" "$PART"
