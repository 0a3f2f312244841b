#!/usr/bin/env bash
# CPU flamegraph of `weft run` on the built-in workload; installs what it needs.
#
# usage: scripts/flamegraph.sh [NAME]      -> perf/flamegraph-NAME.svg (NAME default: builtin)
# knobs: EVENTS=10000000 SHARDS (default: the engine's) FREQ=999 CALLGRAPH=dwarf (or fp)
#        WEFT=path (skip the build) OUT=perf WORK=/tmp/weft-flame TOP=25
#        EXTRA="..." more `weft run` arguments (e.g. EXTRA="--config job.toml", then EVENTS="")
#
# Sampling is by `-e cpu-clock` (a software timer): this VM exposes no hardware
# counters. The release profile keeps debug info (debug = 1) but no frame pointers,
# so the default call graph is DWARF unwinding (bigger perf.data, slower report);
# CALLGRAPH=fp needs RUSTFLAGS="-C force-frame-pointers=yes" for useful stacks.
#
# Fallback where perf cannot run (no perf_event_open in a container, or no
# linux-perf package for the kernel): callgrind works on glommio binaries, ~50x slower,
# so use fewer events:
#   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
#     target/release/weft run --events 500000 --quiet
#   callgrind_annotate /tmp/cg.out | head -40
# (inferno-collapse-callgrind? no: use `gprof2dot -f callgrind` or kcachegrind for pictures.)
set -euo pipefail
NAME="${1:-builtin}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
EVENTS="${EVENTS-10000000}" FREQ="${FREQ:-999}" CALLGRAPH="${CALLGRAPH:-dwarf}" TOP="${TOP:-25}"
OUT="${OUT:-$ROOT/perf}" WORK="${WORK:-/tmp/weft-flame}"
mkdir -p "$OUT" "$WORK"

if ! command -v perf >/dev/null || ! perf --version >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq linux-perf
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  cargo install --locked inferno   # ~5 min on 2 cores
fi
if [ -z "${WEFT:-}" ]; then
  cargo build --release --quiet --bin weft
  WEFT="${CARGO_TARGET_DIR:-$ROOT/target}/release/weft"
fi

ARGS=(run --quiet)
[ -n "$EVENTS" ] && ARGS+=(--events "$EVENTS")
[ -n "${SHARDS:-}" ] && ARGS+=(--shards "$SHARDS")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && ARGS+=($EXTRA)
DATA="$WORK/perf-$NAME.data"
rm -f "$DATA" "$DATA.old"
echo "== perf record -e cpu-clock -F $FREQ -g --call-graph $CALLGRAPH -- $WEFT ${ARGS[*]}" >&2
perf record -q -e cpu-clock -F "$FREQ" -g --call-graph "$CALLGRAPH" -o "$DATA" -- "$WEFT" "${ARGS[@]}" \
  > "$WORK/run-$NAME.txt"
cat "$WORK/run-$NAME.txt" >&2

echo "== rendering $OUT/flamegraph-$NAME.svg" >&2
perf script -i "$DATA" 2>/dev/null | inferno-collapse-perf > "$WORK/folded-$NAME.txt"
inferno-flamegraph --title "weft ${ARGS[*]} ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), cpu-clock ${FREQ} Hz)" \
  < "$WORK/folded-$NAME.txt" > "$OUT/flamegraph-$NAME.svg"

echo "== top $TOP symbols by self time (perf report --no-children --sort symbol)" >&2
perf report -i "$DATA" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -n "$TOP" | tee "$WORK/top-$NAME.txt" || true  # head closes the pipe early
# Most of the hot path is inlined into a few symbols (Core::on_batch): the folded
# stacks keep the inlined frames (DWARF), so also list self time by innermost frame.
echo "== top $TOP innermost frames, inlined functions included (from the folded stacks)" >&2
awk '{ n = $NF; sub(/ [0-9]+$/, ""); k = split($0, f, ";"); s[f[k]] += n; t += n }
     END { for (x in s) printf "%7.2f%%  %s\n", 100 * s[x] / t, x }' "$WORK/folded-$NAME.txt" \
  | sort -rn | head -n "$TOP" | tee "$WORK/top-inlined-$NAME.txt" || true
echo "wrote $OUT/flamegraph-$NAME.svg; perf data $DATA, folded stacks $WORK/folded-$NAME.txt" >&2
