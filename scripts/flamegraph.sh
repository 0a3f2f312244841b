#!/usr/bin/env bash
# CPU flamegraph of `weft run` on the built-in workload; installs what it needs
# (linux-perf from apt, inferno from crates.io: ~5 min the first time).
#
# usage: scripts/flamegraph.sh [NAME]      -> out/flamegraph/flamegraph-NAME.svg (NAME default: builtin)
# knobs: EVENTS=10000000 SHARDS (default: the engine's) FREQ=999 CALLGRAPH=fp (or dwarf)
#        WEFT=path (skip the build) OUT=out/flamegraph WORK=/tmp/weft-flame TOP=25
#        EXTRA="..." more `weft run` arguments (e.g. EXTRA="--config job.toml", then EVENTS="")
# Takes the run's time (~10 s for the default 10M events) plus ~1 min to render.
#
# Runs write to out/flamegraph/ (ignored by git); copy the pictures worth keeping into
# perf/ yourself, with a note saying what they show.
#
# Sampling is by `-e cpu-clock` (a software timer): this VM exposes no hardware
# counters. The stacks come from frame pointers: weft is built with the `profiling`
# profile (release + debug line tables) and `-C force-frame-pointers=yes`, into its own
# target directory (target/fp) so the normal build's cache stays valid. The
# default DWARF stack dump (8 KiB) is too short for glommio's task stacks: most
# samples ended under `[unknown]` and each shard split into several towers. With frame
# pointers every shard thread (`weft-shard-N-M`) is one tree (measured: 90% of the
# samples under `start_thread` of their shard, 1.8% `[unknown]`; the rest are libc
# leaves such as memmove, which has no frame pointer, as short towers beside it).
# CALLGRAPH=dwarf still works (with a 64 KiB dump) for a binary built without frame
# pointers (WEFT=...). Counts are nanoseconds of CPU (perf's cpu-clock period, about
# 1e9 / FREQ per sample), and the tooltips say so.
#
# Fallback where perf cannot run (no perf_event_open in a container, or no
# linux-perf package for the kernel): callgrind works on glommio binaries, ~50x slower,
# so use fewer events:
#   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
#     target/release/weft run --events 500000 --quiet
#   callgrind_annotate /tmp/cg.out | head -40
set -euo pipefail
NAME="${1:-builtin}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
EVENTS="${EVENTS-10000000}" FREQ="${FREQ:-999}" CALLGRAPH="${CALLGRAPH:-fp}" TOP="${TOP:-25}"
OUT="${OUT:-$ROOT/out/flamegraph}" WORK="${WORK:-/tmp/weft-flame}"
[ "$CALLGRAPH" = dwarf ] && CALLGRAPH="dwarf,65528"
mkdir -p "$OUT" "$WORK"

if ! command -v perf >/dev/null || ! perf --version >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq linux-perf
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  cargo install --locked inferno   # ~5 min on 2 cores
fi
if [ -z "${WEFT:-}" ]; then
  RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR="$ROOT/target/fp" \
    cargo build --profile profiling --quiet --bin weft
  WEFT="$ROOT/target/fp/profiling/weft"
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
inferno-flamegraph --countname "ns of CPU" \
  --title "weft ${ARGS[*]} ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), cpu-clock ${FREQ} Hz, $CALLGRAPH stacks)" \
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
