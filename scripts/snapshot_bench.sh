#!/usr/bin/env bash
# Checkpoint cost and snapshot speed (issue #16 item 4), in one sitting:
#  1. the disk: `dd if=/dev/zero of=$WORK/dd.test bs=1M count=1024 oflag=direct`, 3 times;
#  2. throughput with checkpoints every second vs none: the built-in workload (1M keys,
#     EVENTS events, 2 shards, heap state, output none), runs alternated ROUNDS times;
#     events/s and events per CPU-second from each run's --report; every steady
#     snapshot's bytes and write time per shard from WEFT_DEBUG_CHECKPOINTS;
#  3. a full snapshot (every bucket new) of ~0.8 GB of state (event_time_rate 2000),
#     twice: under load (the first checkpoint, at FULL_AT_MS, while both shards join)
#     and at a stop (SIGTERM after STOP_S s, no checkpoint before: the shards are idle);
#  4. recovery: the stopped job restarted from that checkpoint (its packs were written
#     with O_DIRECT, so they are read from the disk, not the page cache): the
#     "shard N restored" log lines, s per GB of packs.
# With WEFT_B set, every measurement runs for both binaries, alternated (A = WEFT).
#
# usage: scripts/snapshot_bench.sh            (builds the release binary)
# knobs: WEFT=path WEFT_B=path WORK=/tmp/weft-snapshot-bench ROUNDS=3 EVENTS=12000000
#        BIG_EVENTS=60000000 STOP_S=12 FULL_AT_MS=5000
# Takes ~4 min with ROUNDS=3 (twice that with WEFT_B); installs nothing but python3 if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. "$ROOT/scripts/weft_bin.sh"
. "$ROOT/scripts/bench_job.sh"
WORK="${WORK:-/tmp/weft-snapshot-bench}"
ROUNDS="${ROUNDS:-3}"
EVENTS="${EVENTS:-12000000}"
BIG_EVENTS="${BIG_EVENTS:-60000000}"
STOP_S="${STOP_S:-12}"
FULL_AT_MS="${FULL_AT_MS:-5000}"
BINS=(A)
declare -A BIN=([A]="$WEFT")
if [ -n "${WEFT_B:-}" ]; then BINS+=(B); BIN[B]="$WEFT_B"; fi
rm -rf "$WORK"; mkdir -p "$WORK"

echo "# snapshot bench $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), load: $(cut -d' ' -f1-3 /proc/loadavg)"
for b in "${BINS[@]}"; do echo "binary $b: ${BIN[$b]}"; done

job() { # file events interval_ms [extra generator keys]
  builtin_job "$WORK/$1.toml" "keys = 1000000, events = $2 $4" 2
  if [ "$3" != 0 ]; then
    printf 'checkpoint_dir = "%s/ck"\ncheckpoint_interval_ms = %s\n' "$WORK" "$3" >>"$WORK/$1.toml"
  fi
}
job none "$EVENTS" 0 ""
job ck1s "$EVENTS" 1000 ""
job full-load "$BIG_EVENTS" "$FULL_AT_MS" ", event_time_rate = 2000.0"
job full-stop "$BIG_EVENTS" 3600000 ", event_time_rate = 2000.0"

# Prints the snapshot lines of a WEFT_DEBUG_CHECKPOINTS log: "n shard bytes ms".
snaps() {
  python3 - "$1" <<'EOF'
import re, sys
unit = {"s": 1e3, "ms": 1.0, "µs": 1e-3, "ns": 1e-6}
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.search(r"shard (\d+): snapshot (\d+): \d+ segments \((\d+) bytes\) written in ([\d.]+)(s|ms|µs|ns)", line)
    if m:
        print(m.group(2), m.group(1), m.group(3), float(m.group(4)) * unit[m.group(5)])
EOF
}

echo
echo "## 1. dd, O_DIRECT, 1 MiB writes"
for i in 1 2 3; do
  dd if=/dev/zero of="$WORK/dd.test" bs=1M count=1024 oflag=direct 2>&1 | tail -1 | sed 's/^/dd: /'
  rm -f "$WORK/dd.test"
done

echo
echo "## 2. checkpoints every second vs none ($EVENTS events, 2 shards)"
for r in $(seq 1 "$ROUNDS"); do
  for b in "${BINS[@]}"; do
    for v in none ck1s; do
      rm -rf "$WORK/ck"
      WEFT_DEBUG_CHECKPOINTS=1 "${BIN[$b]}" run --config "$WORK/$v.toml" --quiet \
        --report "$WORK/r-$b-$v-$r.json" >"$WORK/log-$b-$v-$r.txt" 2>&1
      snaps "$WORK/log-$b-$v-$r.txt" >"$WORK/snaps-$b-$v-$r.txt"
      python3 - "$WORK/r-$b-$v-$r.json" "$WORK/snaps-$b-$v-$r.txt" "$b" "$v" "$r" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s = [l.split() for l in open(sys.argv[2])]
extra = ""
if s:
    mbs = sorted(int(x[2]) / 1e6 / (float(x[3]) / 1e3) for x in s)
    ms = sorted(float(x[3]) for x in s)
    extra = (f"  snapshots {len(s)}, MB/shard median {sorted(int(x[2]) for x in s)[len(s)//2]/1e6:.1f}, "
             f"ms median {ms[len(ms)//2]:.0f} (max {ms[-1]:.0f}), MB/s per shard median {mbs[len(mbs)//2]:.0f}")
print(f"{sys.argv[3]} {sys.argv[4]:5} round {sys.argv[5]}: {r['events_per_s']:,.0f} events/s, "
      f"{r['events_per_cpu_s']:,.0f} events/CPU-s{extra}")
EOF
    done
  done
done
python3 - "$WORK" "$ROUNDS" "${BINS[@]}" <<'EOF'
import json, statistics, sys
work, rounds, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for b in bins:
    def med(v, k):
        return statistics.median(json.load(open(f"{work}/r-{b}-{v}-{r}.json"))[k] for r in range(1, rounds + 1))
    for k in ("events_per_s", "events_per_cpu_s"):
        print(f"{b} ratio ck1s/none, medians of {k}: {med('ck1s', k) / med('none', k):.3f}"
              f" (per round: " + ", ".join(
                  f"{json.load(open(f'{work}/r-{b}-ck1s-{r}.json'))[k] / json.load(open(f'{work}/r-{b}-none-{r}.json'))[k]:.3f}"
                  for r in range(1, rounds + 1)) + ")")
EOF

echo
echo "## 3. full snapshot (every bucket new), ~$((BIG_EVENTS / 1000000))M-event job with event_time_rate 2000"
full() { # bin variant label
  local b="$1" v="$2"
  rm -rf "$WORK/ck"
  WEFT_DEBUG_CHECKPOINTS=1 "${BIN[$b]}" run --config "$WORK/$v.toml" --quiet >"$WORK/log-$b-$v.txt" 2>&1 &
  local pid=$!
  if [ "$v" = full-load ]; then
    # Until checkpoint 1 is complete (its manifest), then stop.
    until ls "$WORK"/ck/chk-*1.json >/dev/null 2>&1; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  else
    sleep "$STOP_S"
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  snaps "$WORK/log-$b-$v.txt" | awk '$1 == 1' >"$WORK/snaps-$b-$v.txt"
  python3 - "$WORK/snaps-$b-$v.txt" "$b" "$v" <<'EOF'
import sys
s = [l.split() for l in open(sys.argv[1])]
if not s:
    sys.exit(f"{sys.argv[2]} {sys.argv[3]}: no snapshot 1 in the log")
per = ", ".join(f"shard {x[1]} {int(x[2])/1e6:.0f} MB in {float(x[3]):.0f} ms = {int(x[2])/1e6/(float(x[3])/1e3):.0f} MB/s" for x in s)
tot = sum(int(x[2]) for x in s) / 1e6
ms = max(float(x[3]) for x in s)
print(f"{sys.argv[2]} {sys.argv[3]}: {per}; both: {tot:.0f} MB in {ms:.0f} ms = {tot/(ms/1e3):.0f} MB/s")
EOF
}
recover() { # bin: restarts full-stop's checkpoint, stops once both shards restored
  local b="$1"
  local packs; packs=$(du -sb "$WORK/ck/state" | cut -f1)
  sync
  WEFT_DEBUG_CHECKPOINTS=1 "${BIN[$b]}" run --config "$WORK/full-stop.toml" --quiet >"$WORK/log-$b-recover.txt" 2>&1 &
  local pid=$!
  until [ "$(cat "$WORK/log-$b-recover.txt" 2>/dev/null | grep -c ' restored (' || true)" -ge 2 ]; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  python3 - "$WORK/log-$b-recover.txt" "$packs" "$b" <<'EOF'
import re, sys
ms = [(float(m.group(1)), float(m.group(2))) for m in re.finditer(r"restored \(own\) in ([\d.]+) ms \(([\d.]+) ms of its thread", open(sys.argv[1]).read())]
gb = int(sys.argv[2]) / 1e9
if not ms:
    sys.exit(f"{sys.argv[3]} recovery: no 'restored' line")
wall = max(w for w, _ in ms)
print(f"{sys.argv[3]} recovery: {gb:.3f} GB of packs, shards restored in " + ", ".join(f"{w:.0f} ms ({c:.0f} ms CPU)" for w, c in ms)
      + f": {wall / 1e3 / gb:.2f} s/GB (slowest shard's wall), {sum(c for _, c in ms) / 1e3 / gb:.2f} CPU-s/GB")
EOF
}
for b in "${BINS[@]}"; do full "$b" full-load; done
for b in "${BINS[@]}"; do full "$b" full-stop; recover "$b"; done
