#!/usr/bin/env bash
# A checkpoint written by one build of weft is resumed by another: weft is built twice,
# by default and with RUSTFLAGS="-C target-cpu=native" (which turns on the CPU's AES,
# AVX2... and changed ahash's output, so routing once differed between the two builds),
# and a job killed (-9) mid-run under one build is finished by the other, both ways.
# Each finished output must equal `weft batch` on the same files (`weft validate`).
# The routing unit tests (recorded hash values) also run under the native build.
#
# usage: scripts/cross_build.sh [EVENTS]      (default 3000000)
# env:   KEEP=1 keep the work directory
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-3000000}
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-target}")   # absolute: the runs below cd into a work directory

cargo build --release --locked --bin weft
RUSTFLAGS="-C target-cpu=native" cargo build --release --locked --bin weft --target-dir "$TARGET/native"
RUSTFLAGS="-C target-cpu=native" cargo test --release --locked --lib --target-dir "$TARGET/native" router::
DEFAULT="$TARGET/release/weft"
NATIVE="$TARGET/native/release/weft"
if cmp -s "$DEFAULT" "$NATIVE"; then
    echo "cross_build: the two builds are the same binary; nothing to compare" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/weft-cross.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then echo "work directory: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
"$DEFAULT" gen --out "$WORK" --events "$EVENTS" --keys 100000 --partitions 3 --kind left --seed 21 >/dev/null
sed -i 's/^\[engine\]/[engine]\nshards = 2\npin_cores = false\ncheckpoint_dir = "ckpt"\ncheckpoint_interval_ms = 20\ncheckpoints_retained = 3/' "$WORK/job.toml"
cd "$WORK"

# Runs BIN on the job and kills it (-9) once its first checkpoint completed.
kill_after_checkpoint() {
    local bin=$1 log=$2
    "$bin" run --quiet --log-level debug --config job.toml 2>"$log" &
    local pid=$!
    for _ in $(seq 1 6000); do
        if grep -q "complete at" "$log"; then
            kill -9 "$pid" 2>/dev/null || true
            local rc=0
            wait "$pid" 2>/dev/null || rc=$?
            [ "$rc" = 137 ]   # killed by SIGKILL; anything else ran to its end first
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" || rc=$?
            if [ "$rc" != 0 ]; then echo "cross_build: the run failed (exit $rc):" >&2; tail -20 "$log" >&2; exit 1; fi
            return 1
        fi
        sleep 0.005
    done
    kill -9 "$pid"; echo "cross_build: no checkpoint within 30 s" >&2; exit 1
}

for order in "$NATIVE $DEFAULT native-then-default" "$DEFAULT $NATIVE default-then-native"; do
    set -- $order
    first=$1 second=$2 name=$3
    ok=0
    for try in 1 2 3 4 5 6; do
        rm -rf ckpt out
        if kill_after_checkpoint "$first" "first.log"; then ok=1; break; fi
        echo "cross_build: $name try $try ran to its end before the kill; again. Its log ends:" >&2
        tail -3 first.log >&2
    done
    [ $ok = 1 ] || { echo "cross_build: $name: never killed mid-run (input too small?)" >&2; exit 1; }
    "$second" run --quiet --config job.toml 2>second.log || { cat second.log >&2; exit 1; }
    grep -q "resuming from checkpoint" second.log || { echo "cross_build: $name did not resume" >&2; cat second.log >&2; exit 1; }
    if ! "$DEFAULT" validate --config job.toml --output out >validate.log 2>&1; then
        echo "cross_build: $name: the output differs from weft batch" >&2
        cat validate.log >&2
        exit 1
    fi
    echo "cross_build: $name: killed mid-run, resumed by the other build, output equals weft batch"
done
