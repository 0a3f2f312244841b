#!/usr/bin/env bash
# Seeded kill -9 soak: runs tests/soak_kill.rs with a release build until N kills have
# landed (rounds of a 2-shard left/full join killed during the run, recovery and
# checkpoints, each round compared with an uninterrupted run: output rows, late rows,
# dead letters). Prints the kills, restarts, rows compared and elapsed time; on a
# failure, the seed, round and kill schedule to replay it.
#
# usage: scripts/soak.sh [N] [SEED]    (default 1000 kills; SEED 0 = from the clock,
#                                      default the test's own; 0x... hex accepted)
# env:   WEFT_SOAK_VERBOSE=1 prints every round's kill schedule
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
export WEFT_SOAK_KILLS="$N"
if [ -n "${2:-}" ]; then export WEFT_SOAK_SEED="$2"; fi

echo "soak: $N kills, seed ${WEFT_SOAK_SEED:-default}, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +dirty)"
echo "machine: $(nproc) CPUs, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
cargo test --release --locked --test soak_kill --no-run
start=$(date +%s)
set +e
cargo test --release --locked --test soak_kill -- --nocapture --test-threads 1 2>&1 \
    | grep -v '^running\|^test result\|^$'
rc=${PIPESTATUS[0]}
echo "elapsed: $(( $(date +%s) - start )) s; exit $rc"
exit "$rc"
