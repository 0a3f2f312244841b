#!/usr/bin/env bash
# [state] benchmark: heap state vs arena state (engine.state_dir) at 1M and 10M keys, and a
# sweep of engine.state_memory_mb at 10M keys (and a budget of a quarter of the state);
# events per CPU-second and peak RSS from each run's --report, resident file-backed and
# anonymous memory sampled every 0.1 s from /proc/PID/status. Runs alternate heap/arena so that drift on a shared machine hits
# both. Prints a markdown table (tee it into perf/).
#
# usage: scripts/state_bench.sh
# knobs: WEFT=path (skip the build)  WORK=/tmp/weft-state-bench  SHARDS=2
#        BUDGETS="64 256 512 1024 4096"  REPEATS=2  SMALL_EVENTS=6000000  BIG_EVENTS=8000000
#        LIVE_EVENTS=16000000
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. "$ROOT/scripts/weft_bin.sh"
. "$ROOT/scripts/bench_job.sh"
WORK="${WORK:-/tmp/weft-state-bench}"
SHARDS="${SHARDS:-2}"
BUDGETS="${BUDGETS:-64 256 512 1024 4096}"
REPEATS="${REPEATS:-2}"
mkdir -p "$WORK"

job() { # name keys events [extra generator keys]
  builtin_job "$WORK/$1.toml" "keys = $2, events = $3 ${4:-, event_time_rate = 1000.0}" "$SHARDS"
}
job k1m 1000000 "${SMALL_EVENTS:-6000000}" ""
job k10m 10000000 "${BIG_EVENTS:-8000000}" ""
# Few reads of stored rows (match_rate 0.01): how close RSS gets to the budget when
# probes rarely fault released pages back in.
job k10m-cold 10000000 "${BIG_EVENTS:-8000000}" ", event_time_rate = 1000.0, match_rate = 0.01"
# 10M keys live at once: uniform profile ids and 3000 impressions per second of event
# time, so that the 1-hour window holds ~11M rows (the zipf jobs above peak at 5M keys).
job k10m-live 10000000 "${LIVE_EVENTS:-16000000}" ", zipf = 0.0, event_time_rate = 3000.0"

run() { # label job [args]
  local label="$1" cfg="$2"; shift 2
  rm -rf "$WORK/state"
  "$WEFT" run --config "$WORK/$cfg.toml" --quiet --report "$WORK/r.json" "$@" >/dev/null &
  local pid=$!
  # Resident set every 0.1 s: file-backed (mapped arenas and index tables) and anonymous.
  : >"$WORK/rss.txt"
  while kill -0 "$pid" 2>/dev/null; do
    awk '/^RssFile:/{f=$2} /^RssAnon:/{a=$2} END{if (f != "") print f, a}' "/proc/$pid/status" >>"$WORK/rss.txt" 2>/dev/null || true
    sleep 0.1
  done
  wait "$pid"
  python3 - "$label" "$cfg" "$WORK/r.json" "$WORK/rss.txt" <<'PY'
import json, sys
label, cfg, path, rss = sys.argv[1:]
r = json.load(open(path))
mib = lambda b: b / 2**20
s = [tuple(int(x) * 1024 for x in l.split()) for l in open(rss) if len(l.split()) == 2]
# Samples after the first second (start-up) and before the end; median and max.
body = s[10:-2] or s
f = sorted(x[0] for x in body); a = sorted(x[1] for x in body)
med = lambda v: v[len(v) // 2] if v else 0
print(f"| {cfg} | {label} | {r['events_per_s']:,.0f} | {r['events_per_cpu_s']:,.0f} | "
      f"{mib(r['state_bytes_peak']):,.0f} MiB | {mib(r['index_bytes_peak']):,.0f} MiB, {r['keys_peak']/1e6:.2f}M keys | "
      f"{mib(med(f)):,.0f} / {mib(max(f, default=0)):,.0f} MiB | {mib(med(a)):,.0f} / {mib(max(a, default=0)):,.0f} MiB | "
      f"{mib(r['peak_rss_bytes']):,.0f} MiB | {r.get('state_cold_reads', 0) / max(r['events'], 1):.2f} |")
PY
}

# Budget at a quarter of the state (rows + index) of a heap run of job $1.
quarter() {
  rm -rf "$WORK/state"
  "$WEFT" run --config "$WORK/$1.toml" --quiet --report "$WORK/q.json" >/dev/null
  python3 -c "import json; r = json.load(open('$WORK/q.json')); print(int((r['state_bytes_peak'] + r['index_bytes_peak']) / 4 / 2**20))"
}

echo "weft $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, $(uname -r), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
Q10=$(quarter k10m)
echo "k10m: state (rows + index) / 4 = $Q10 MiB"
echo
echo "| job | state | events/s | events per CPU-s | state rows (peak) | index (peak) | RssFile median / max | RssAnon median / max | peak RSS | cold reads per event |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for _ in $(seq "$REPEATS"); do
  run heap k1m
  run "arena, 1024 MiB" k1m --state-dir "$WORK/state" --state-memory-mb 1024
done
for _ in $(seq "$REPEATS"); do
  run heap k10m
  for b in $BUDGETS; do
    run "arena, $b MiB" k10m --state-dir "$WORK/state" --state-memory-mb "$b"
  done
  run "arena, $Q10 MiB (state/4)" k10m --state-dir "$WORK/state" --state-memory-mb "$Q10"
done
run heap k10m-cold
for b in $BUDGETS; do
  run "arena, $b MiB" k10m-cold --state-dir "$WORK/state" --state-memory-mb "$b"
done
QL=$(quarter k10m-live)
for _ in $(seq "$REPEATS"); do
  run heap k10m-live
  run "arena, 8192 MiB" k10m-live --state-dir "$WORK/state" --state-memory-mb 8192
  run "arena, $QL MiB (state/4)" k10m-live --state-dir "$WORK/state" --state-memory-mb "$QL"
done
rm -rf "$WORK/state"
