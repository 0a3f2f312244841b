#!/usr/bin/env bash
# A/B of two weft binaries on the built-in workload, alternating A and B so that both see
# the same machine load; prints events per CPU-second of every run and the B/A ratios of
# the means and medians. Timing on a shared 2-vCPU VM is noisy: compare ratios from one
# sitting only, never absolute figures across sittings.
#
# usage: scripts/ab.sh A_BINARY B_BINARY [PAIRS] [-- extra `weft run` arguments]
#   PAIRS defaults to 8 (each run of the default 20M-event workload takes ~5-10 s here).
# Needs python3 only. Writes the reports to ${WORK:-/tmp/weft-ab}.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,9p "$0"; exit 2; }
A="$1"; B="$2"; shift 2
PAIRS=8
if [ $# -gt 0 ] && [ "$1" != "--" ]; then PAIRS="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
WORK="${WORK:-/tmp/weft-ab}"
rm -rf "$WORK"; mkdir -p "$WORK"
for i in $(seq 1 "$PAIRS"); do
  for which in A B; do
    bin="$A"; [ "$which" = B ] && bin="$B"
    "$bin" run --quiet --report "$WORK/$which-$i.json" "$@" >/dev/null
  done
  echo "pair $i done" >&2
done
python3 - "$WORK" "$PAIRS" "$A" "$B" <<'EOF'
import json, statistics, sys
work, pairs, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = {w: [json.load(open(f"{work}/{w}-{i}.json")) for i in range(1, pairs + 1)] for w in "AB"}
for w, bin in (("A", a), ("B", b)):
    eps = [r["events_per_cpu_s"] for r in runs[w]]
    print(f"{w} {bin}")
    print("  events per CPU-s: " + " ".join(f"{e/1e6:.3f}M" for e in eps))
    print(f"  mean {statistics.mean(eps)/1e6:.3f}M  median {statistics.median(eps)/1e6:.3f}M  "
          f"wall mean {statistics.mean(r['wall_s'] for r in runs[w]):.2f} s")
same = all(ra["output_rows"] == rb["output_rows"] and ra["matched_pairs"] == rb["matched_pairs"]
           for ra, rb in zip(runs["A"], runs["B"]))
ea = [r["events_per_cpu_s"] for r in runs["A"]]
eb = [r["events_per_cpu_s"] for r in runs["B"]]
wins = sum(y > x for x, y in zip(ea, eb))
print(f"B/A events per CPU-s: mean {statistics.mean(eb)/statistics.mean(ea):.3f}  "
      f"median {statistics.median(eb)/statistics.median(ea):.3f}  B ahead in {wins} of {pairs} pairs")
print(f"output rows and matched pairs identical in every pair: {same}")
EOF
