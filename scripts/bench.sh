#!/usr/bin/env bash
# Load-generator benchmark: builds weft (release), measures max throughput at each
# shard count, then open-loop latency at 50/80/95% of it; writes
# out/bench/bench-<UTC date>.json (+ .svg plot, + .md table). Needs cargo and python3; the
# plot's matplotlib is installed into a venv ($VENV, default /tmp/weft-bench-venv; ~30 s
# the first time). Takes about (1 + levels) x DURATION_S per shard count plus the
# closed-loop runs: ~3 min with the defaults.
#
# usage: scripts/bench.sh
# knobs: KEYS ZIPF MATCH_RATE DISORDER_MS LATE_FRACTION SHARDS="1 2" SECONDS=20
#        MAX_EVENTS=10000000 RATES_PCT="50 80 95" REPEATS=1 OUT=out/bench WORK=/tmp/weft-bench
#        CARGO_TARGET_DIR (where to build) WEFT=path (skip the build, use this binary)
# See scripts/bench_rates.py for what is measured and how "kept up" is decided.
DURATION_S="${DURATION_S:-${SECONDS:-0}}"   # bash's SECONDS holds the env value at start
set -euo pipefail
[ "${DURATION_S%.*}" -ge 1 ] 2>/dev/null || DURATION_S=20
export DURATION_S
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. "$ROOT/scripts/weft_bin.sh"
OUT="${OUT:-$ROOT/out/bench}"; mkdir -p "$OUT"   # ignored by git: copy the runs you keep into perf/
STAMP="$(date -u +%Y-%m-%dT%H%M)"
VENV="${VENV:-/tmp/weft-bench-venv}"
if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet matplotlib
fi
export BENCH_COMMAND="scripts/bench.sh (SHARDS=\"${SHARDS:-1 2}\" DURATION_S=$DURATION_S RATES_PCT=\"${RATES_PCT:-50 80 95}\")"
"$VENV/bin/python" "$ROOT/scripts/bench_rates.py" --weft "$WEFT" --root "$ROOT" --work "${WORK:-/tmp/weft-bench}" \
  --out-json "$OUT/bench-$STAMP.json" --out-svg "$OUT/bench-$STAMP.svg" | tee "$OUT/bench-$STAMP.md"
echo "wrote $OUT/bench-$STAMP.{json,svg,md}" >&2
