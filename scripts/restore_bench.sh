#!/usr/bin/env bash
# Restore time of one checkpoint under three kinds of restart (issue #13, evolve):
# (a) no change, (b) rescale (engine.shards 2 -> 1 and 2 -> 3), (c) a schema change that
# migrates every state row (a field with a default added to both inputs). The job is a
# `weft gen` file job (CSV, 2 partitions per input); it runs with checkpoints on and is
# stopped with SIGTERM mid-run (its final checkpoint is then the one restored). Each
# restart starts from a fresh copy of the same checkpoint and output directories, and the
# variants are alternated round by round so they see the same machine load. Restore time
# is read from the "shard N restored (...) in X ms" log line (JSON log, fields
# elapsed_ms per shard, cpu_ms of the shard thread's CPU during it, and at_ms since the
# engine's start). STOP_AFTER_S (default 2) is when v1 is stopped; it must be before
# the job ends, which the script checks.
#
# usage: scripts/restore_bench.sh WEFT_BINARY [ROUNDS] [EVENTS]
#   ROUNDS defaults to 3, EVENTS (impressions + plays) to 12000000.
#   WORK (default /tmp/weft-restore) holds the data, the checkpoint and every run.
# Needs python3 and coreutils only. Prints one line per restart and a summary.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }
BIN="$(realpath "$1")"
ROUNDS="${2:-3}"
EVENTS="${3:-12000000}"
WORK="${WORK:-/tmp/weft-restore}"
STOP_AFTER_S="${STOP_AFTER_S:-2}"
rm -rf "$WORK"; mkdir -p "$WORK"
cd "$WORK"

"$BIN" gen --out data --events "$EVENTS" --keys 1000000 --partitions 2 --event-time-rate 300 >/dev/null 2>&1
mkdir base
# v1: the generated job with absolute input paths, 2 shards, checkpoints on.
python3 - "$WORK" <<'EOF'
import re, sys
work = sys.argv[1]
t = open(f"{work}/data/job.toml").read()
t = re.sub(r'"((left|right)-\d+\.csv)"', lambda m: f'"{work}/data/{m.group(1)}"', t)
t = t.replace("[engine]", "[engine]\nshards = 2\ncheckpoint_dir = \"ckpt\"\n"
              "checkpoint_interval_ms = 1000\ncheckpoints_retained = 3", 1)
assert "checkpoint_dir" in t
open(f"{work}/base/job.toml", "w").write(t)
# v2: a field with a default added to each input (every stored row is rewritten).
t2 = t.replace("[right]", '[[left.fields]]\nname = "device"\ntype = "u32"\ndefault = 7\n\n[right]', 1)
t2 = t2.replace("[join]", '[[right.fields]]\nname = "quality"\ntype = "u32"\ndefault = 1\n\n[join]', 1)
open(f"{work}/base/job-v2.toml", "w").write(t2)
EOF

# The checkpoint: run v1, SIGTERM once STOP_AFTER_S seconds passed and a manifest exists.
"$BIN" run --config base/job.toml --quiet --log-format json --report base.report.json >base.log 2>&1 &
pid=$!
sleep "$STOP_AFTER_S"
until ls base/ckpt/chk-*.json >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { echo "the job ended before its first checkpoint: raise EVENTS" >&2; exit 1; }
  sleep 0.2
done
if ! kill -TERM "$pid" 2>/dev/null; then
  echo "the job ran to its end before STOP_AFTER_S=$STOP_AFTER_S s: nothing to restore mid-run; lower STOP_AFTER_S or raise EVENTS" >&2
  exit 1
fi
wait "$pid" || { echo "the stopped job failed; see $WORK/base.log" >&2; exit 1; }
if grep -q '"finished": *true' "$(ls base/ckpt/chk-*.json | tail -1)"; then
  echo "the job finished before it was stopped: lower STOP_AFTER_S or raise EVENTS" >&2
  exit 1
fi
echo "checkpoint: $(ls base/ckpt/chk-*.json | tail -1 | xargs basename), $(du -sb base/ckpt | cut -f1) bytes in base/ckpt" \
     "($(du -sb base/ckpt/state | cut -f1) in packs)"
"$BIN" inspect base/ckpt --json >inspect.json 2>/dev/null || true
"$BIN" schema check --config base/job-v2.toml --checkpoint base/ckpt >schema-check.txt 2>&1 || true

variants="same shards1 shards3 migrate"
for r in $(seq 1 "$ROUNDS"); do
  for v in $variants; do
    d="run-$v-$r"
    rm -rf "$d"; cp -a base "$d"
    args=(--config "$d/job.toml")
    case "$v" in
      shards1) args+=(--shards 1) ;;
      shards3) args+=(--shards 3) ;;
      migrate) args=(--config "$d/job-v2.toml") ;;
    esac
    "$BIN" run "${args[@]}" --quiet --log-format json --report "$d.report.json" >"$d.log" 2>&1
    python3 - "$d" <<'EOF'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(f"{d}.log") if l.startswith("{")]
rs = [r for r in rows if "restored (" in r.get("message", "")]
el = [float(r["elapsed_ms"]) for r in rs]
cpu = [float(r.get("cpu_ms", "nan")) for r in rs]
at = [float(r["at_ms"]) for r in rs]
print(f"{d}: shards {len(rs)}  restore ms per shard " + " ".join(f"{x:.1f}" for x in el)
      + f"  max {max(el):.1f}  sum {sum(el):.1f}  thread CPU ms " + " ".join(f"{x:.1f}" for x in cpu)
      + f" (sum {sum(cpu):.1f})  done at {max(at):.1f} ms after start")
EOF
  done
done

python3 - "$WORK" "$ROUNDS" $variants <<'EOF'
import json, statistics, sys
work, rounds, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def restore(d):
    rows = [json.loads(l) for l in open(f"{work}/{d}.log") if l.startswith("{")]
    rs = [r for r in rows if "restored (" in r.get("message", "")]
    el = [float(r["elapsed_ms"]) for r in rs]
    cpu = [float(r.get("cpu_ms", "nan")) for r in rs]
    return max(el), sum(el), sum(cpu)
res = {v: [restore(f"run-{v}-{r}") for r in range(1, rounds + 1)] for v in variants}
base = [statistics.median(x[i] for x in res["same"]) for i in range(3)]
print("medians over rounds; ratio = variant / same (no change)")
print("variant   max-shard wall ms  ratio   sum wall ms  ratio   sum thread-CPU ms  ratio")
for v in variants:
    m = [statistics.median(x[i] for x in res[v]) for i in range(3)]
    print(f"{v:9} {m[0]:17.1f} {m[0]/base[0]:6.2f} {m[1]:13.1f} {m[1]/base[1]:6.2f} {m[2]:19.1f} {m[2]/base[2]:6.2f}")
EOF
