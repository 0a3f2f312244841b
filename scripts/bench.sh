#!/usr/bin/env bash
# Load-generator benchmark: builds weft (release), measures max throughput at each
# shard count, then open-loop latency at 50/80/95% of it; writes
# perf/bench-<UTC date>.json (+ .svg plot, + .md table). Needs cargo and python3 only.
#
# usage: scripts/bench.sh
# knobs: KEYS ZIPF MATCH_RATE DISORDER_MS LATE_FRACTION SHARDS="1 2" SECONDS=20
#        MAX_EVENTS=10000000 RATES_PCT="50 80 95" REPEATS=1 OUT=perf WORK=/tmp/weft-bench
#        CARGO_TARGET_DIR (where to build) WEFT=path (skip the build, use this binary)
# See scripts/bench_rates.py for what is measured and how "kept up" is decided.
DURATION_S="${DURATION_S:-${SECONDS:-0}}"   # bash's SECONDS holds the env value at start
set -euo pipefail
[ "${DURATION_S%.*}" -ge 1 ] 2>/dev/null || DURATION_S=20
export DURATION_S
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. "$ROOT/scripts/weft_bin.sh"
OUT="${OUT:-$ROOT/perf}"; mkdir -p "$OUT"
STAMP="$(date -u +%Y-%m-%dT%H%M)"
python3 "$ROOT/scripts/bench_rates.py" --weft "$WEFT" --root "$ROOT" --work "${WORK:-/tmp/weft-bench}" \
  --out-json "$OUT/bench-$STAMP.json" --out-svg "$OUT/bench-$STAMP.svg" | tee "$OUT/bench-$STAMP.md"
echo "wrote $OUT/bench-$STAMP.{json,svg,md}" >&2
