#!/usr/bin/env bash
# weft next to DuckDB (and, opt-in, Flink) on the same input files, with weft's own
# runners: generates left.csv/right.csv with scripts/peer_gen.py, runs weft (output none
# and CSV) and DuckDB under scripts/peer_measure.py (wall, CPU, peak RSS), checks every
# CSV output against DuckDB's 1-thread answer with scripts/peer_check.py, prints one
# Markdown table and writes it to perf/compare-<UTC date>.md. Stands alone: installs
# numpy and duckdb into a venv; only Flink needs an external peers harness (PEERS_DIR).
# Takes ~2-4 min for 2M events on 2 cores (DuckDB only).
#
# usage: scripts/compare.sh [N]            (N = events, left + right; default 2000000)
# knobs: PEERS="duckdb" (PEERS="duckdb flink" adds Flink: ~2-3 min per run)
#        PARS="1 2"  KEYS=100000 SEED=42 D=5000 F=0.001 M=0.3  (peer_gen.py defaults)
#        PEERS_DIR=<peers harness with run_flink.py and setup.sh> (only for flink; then also
#        VENV=/tmp/peers-venv, the venv its setup.sh makes)
#        VENV=/tmp/weft-peers-venv  RUN=/tmp/weft-compare-N
#        WEFT=path (skip the build)  OUT=perf  TIMEOUT=1800
#        RENDER_ONLY=1: only redo the table from an earlier $RUN
#
# Semantics (read before the "agrees" column): weft drops late rows (sends them to
# its late output): a row is late when ts < max(earlier ts of its file) - D (strict).
# peer_gen.py/peer_check.py call a row late when ts <= max - D. DuckDB is a batch join and joins
# every row. So weft differs from DuckDB exactly on rows that involve late rows:
# peer_check.py attributes each differing row (left_late / right_late / unexplained);
# anything "unexplained" is a real disagreement.
set -euo pipefail
N="${1:-2000000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="${PEERS:-duckdb}" PARS="${PARS:-1 2}"
KEYS="${KEYS:-100000}" SEED="${SEED:-42}" D="${D:-5000}" F="${F:-0.001}" M="${M:-0.3}"
VENV="${VENV:-/tmp/weft-peers-venv}" RUN="${RUN:-/tmp/weft-compare-$N}" OUT="${OUT:-$ROOT/perf}"
TIMEOUT="${TIMEOUT:-1800}"
PY="$VENV/bin/python"
cd "$ROOT"
DATA="$RUN/data" TINY="$RUN/tiny" REF="$RUN/out/duckdb_ref.csv"

if [ "${RENDER_ONLY:-0}" != 1 ]; then
# 1. Tools: numpy and duckdb in a venv; Flink needs the external harness's setup (~4 min).
if [[ " $PEERS " == *" flink "* ]]; then
  [ -n "${PEERS_DIR:-}" ] || { echo "compare.sh: PEERS=flink needs PEERS_DIR (a peers harness with run_flink.py)" >&2; exit 2; }
  PEERS_DIR="$(cd "$PEERS_DIR" && pwd)"
  "$PY" -c 'import pyflink, duckdb, numpy' 2>/dev/null || bash "$PEERS_DIR/setup.sh"
elif [ ! -x "$PY" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q numpy duckdb
else
  "$PY" -c 'import duckdb, numpy' 2>/dev/null || "$VENV/bin/pip" install -q numpy duckdb
fi
if [ -z "${WEFT:-}" ]; then
  cargo build --release --quiet --bin weft
  WEFT="${CARGO_TARGET_DIR:-$ROOT/target}/release/weft"
fi

# 2. Data (byte-identical for the same arguments and numpy major version).
mkdir -p "$RUN/logs" "$RUN/out" "$OUT"
: > "$RUN/results.jsonl"; : > "$RUN/checks.jsonl"
echo "== peer_gen.py N=$N KEYS=$KEYS SEED=$SEED D=$D F=$F M=$M -> $DATA" >&2
"$PY" scripts/peer_gen.py --events "$N" --keys "$KEYS" --seed "$SEED" --disorder-ms "$D" \
  --late-fraction "$F" --match-rate "$M" --out "$DATA" 2> "$RUN/logs/gen.log"
if [[ " $PEERS " == *" flink "* ]]; then
  "$PY" scripts/peer_gen.py --events 2000 --keys 100 --seed "$SEED" --disorder-ms "$D" \
    --late-fraction 0 --match-rate "$M" --out "$TINY" 2> "$RUN/logs/gen_tiny.log"
fi

measure() {  # measure NAME CMD...   (one JSON line appended to results.jsonl, tagged NAME)
  local name="$1"; shift
  echo "== $name" >&2
  "$PY" scripts/peer_measure.py --results "$RUN/results.jsonl" --name "$name" --log "$RUN/logs/$name.log" \
    --timeout "$TIMEOUT" -- "$@" > /dev/null || echo "   FAILED: see $RUN/logs/$name.log" >&2
}
check() {  # check NAME OUT [--cand-header]   (peer_check.py exits 1 when the outputs differ)
  local name="$1" out="$2" rc=0; shift 2
  "$PY" scripts/peer_check.py --data "$DATA" --ref "$REF" --cand "$out" "$@" --json > "$RUN/logs/check_$name.json" || rc=$?
  [ "$rc" -le 1 ] || echo '{"error": "peer_check.py failed"}' > "$RUN/logs/check_$name.json"
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); r["name"]=sys.argv[2]; print(json.dumps(r))' \
    "$RUN/logs/check_$name.json" "$name" >> "$RUN/checks.jsonl"
}

nullpad() {  # nullpad NAME CAND: are extra NULL-padded rows impressions whose matches were all late plays?
  "$PY" - "$DATA" "$REF" "$2" > "$RUN/logs/nullpad_$1.json" <<'PYEOF' || echo '{"error": "nullpad failed"}' > "$RUN/logs/nullpad_$1.json"
# peer_check.py tags a differing row by its own impression / play. A NULL-padded row has no
# play, so when weft drops an impression's only matching plays as late and emits the
# impression NULL-padded, peer_check.py calls that row unexplained. This looks the
# impression's matches up in the reference instead.
import json, sys, duckdb
data, ref, cand = sys.argv[1:4]
d = json.load(open(f"{data}/meta.json"))["args"]["disorder_ms"]
T = "{'profile_id':'BIGINT','title_id':'INTEGER','i_ts':'BIGINT','p_ts':'BIGINT','duration_ms':'BIGINT'}"
con = duckdb.connect()
con.execute(f"CREATE TABLE ref AS SELECT * FROM read_csv('{ref}', header=true, auto_detect=false, columns={T})")
con.execute(f"CREATE TABLE cand AS SELECT * FROM read_csv('{cand}', header=true, auto_detect=false, columns={T})")
con.execute(f"""CREATE TABLE late_r AS SELECT DISTINCT profile_id, title_id, ts FROM (
  SELECT *, max(ts) OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS m
  FROM read_csv('{data}/right.csv', header=true) ) WHERE ts <= m - {d}""")
con.execute("CREATE TABLE extra AS SELECT * FROM (SELECT * FROM cand EXCEPT ALL SELECT * FROM ref) WHERE p_ts IS NULL")
n, ok = con.execute("""
  SELECT count(*), count(*) FILTER (WHERE n_ref > 0 AND n_ref = n_late) FROM (
    SELECT e.profile_id, e.title_id, e.i_ts,
      (SELECT count(*) FROM ref r WHERE r.profile_id = e.profile_id AND r.title_id = e.title_id
         AND r.i_ts = e.i_ts AND r.p_ts IS NOT NULL) AS n_ref,
      (SELECT count(*) FROM ref r JOIN late_r l ON l.profile_id = r.profile_id AND l.title_id = r.title_id
         AND l.ts = r.p_ts WHERE r.profile_id = e.profile_id AND r.title_id = e.title_id AND r.i_ts = e.i_ts) AS n_late
    FROM extra e)""").fetchone()
print(json.dumps({"extra_null_padded": n, "all_ref_matches_are_late_plays": ok}))
PYEOF
}

weft_job() {  # weft_job P OUTPUT_PATH -> prints the config path
  local p="$1" out="$2" cfg="$RUN/weft_p$1_$(basename "$2").toml"
  cat > "$cfg" <<TOML
# written by scripts/compare.sh: the peers' workload (see scripts/peer_gen.py)
[left]
name = "impressions"
format = "csv"
paths = ["$DATA/left.csv"]
key = ["profile_id", "title_id"]
time = "ts"
fields = [ { name = "profile_id", type = "u64" }, { name = "title_id", type = "u32" },
           { name = "ts", type = "i64" }, { name = "row", type = "u32" }, { name = "col", type = "u32" } ]
[right]
name = "plays"
format = "csv"
paths = ["$DATA/right.csv"]
key = ["profile_id", "title_id"]
time = "ts"
fields = [ { name = "profile_id", type = "u64" }, { name = "title_id", type = "u32" },
           { name = "ts", type = "i64" }, { name = "duration_ms", type = "u32" } ]
[join]
kind = "left"
lower_ms = 0
upper_ms = 3600000
max_out_of_orderness_ms = $D
allowed_lateness_ms = 0
[output]
path = "$out"
format = "csv"
[engine]
shards = $p
TOML
  echo "$cfg"
}

# 3. DuckDB's single-threaded CSV output is the reference answer.
measure duckdb_csv_p1 "$PY" scripts/peer_duckdb.py --data "$DATA" --threads 1 --sink csv --out "$REF"
[ -s "$REF" ] || { echo "DuckDB reference failed: $RUN/logs/duckdb_csv_p1.log" >&2; exit 1; }

for p in $PARS; do
  # weft: output none (throughput) and CSV (checked). Its CSV has 9 columns and a header
  # per part file; peer_check.py wants profile_id,title_id,i_ts,p_ts,duration_ms: columns 1,2,3,8,9.
  measure "weft_none_p$p" "$WEFT" run --config "$(weft_job "$p" none)" --report "$RUN/out/weft_none_p$p.json" --quiet
  rm -rf "$RUN/out/weft_p$p"
  measure "weft_csv_p$p" "$WEFT" run --config "$(weft_job "$p" "$RUN/out/weft_p$p")" --report "$RUN/out/weft_csv_p$p.json" --quiet --force
  awk -F, 'BEGIN { OFS = ","; print "profile_id,title_id,i_ts,p_ts,duration_ms" }
           FNR > 1 { print $1, $2, $3, $8, $9 }' "$RUN/out/weft_p$p"/part-*.csv > "$RUN/out/weft_p$p.projected.csv"
  check "weft_csv_p$p" "$RUN/out/weft_p$p.projected.csv" --cand-header
  nullpad "weft_csv_p$p" "$RUN/out/weft_p$p.projected.csv"
  for peer in $PEERS; do
    case "$peer" in
      duckdb)
        measure "duckdb_count_p$p" "$PY" scripts/peer_duckdb.py --data "$DATA" --threads "$p" --sink count
        if [ "$p" != 1 ]; then
          measure "duckdb_csv_p$p" "$PY" scripts/peer_duckdb.py --data "$DATA" --threads "$p" --sink csv --out "$RUN/out/duckdb_p$p.csv"
          check "duckdb_csv_p$p" "$RUN/out/duckdb_p$p.csv" --cand-header
        fi ;;
      flink)
        measure "flink_blackhole_p$p" "$PY" "$PEERS_DIR/run_flink.py" --data "$DATA" --tiny "$TINY" --parallelism "$p" --sink blackhole
        rm -rf "$RUN/out/flink_p$p"
        measure "flink_csv_p$p" "$PY" "$PEERS_DIR/run_flink.py" --data "$DATA" --tiny "$TINY" --parallelism "$p" --sink csv --out "$RUN/out/flink_p$p"
        check "flink_csv_p$p" "$RUN/out/flink_p$p" ;;
      *) echo "unknown peer $peer (this script runs duckdb and flink; other engines: an external peers harness)" >&2 ;;
    esac
  done
done

fi

# 4. One table (RENDER_ONLY=1 scripts/compare.sh N: redo just this from $RUN).
STAMP="$(date -u +%Y-%m-%dT%H%M)"
MD="$OUT/compare-$STAMP.md"
"$PY" - "$RUN" "$ROOT" "$N" "$PEERS" "$*" > "$MD" <<'PYEOF'
import json, os, platform, subprocess, sys
run, root, n, peers, args = sys.argv[1:6]
def load(p):
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
res, checks = load(f"{run}/results.jsonl"), {c["name"]: c for c in load(f"{run}/checks.jsonl")}
meta = json.load(open(f"{run}/data/meta.json")); g = meta["args"]
events = meta["left_rows"] + meta["right_rows"]
commit = os.environ.get("WEFT_COMMIT") or sh(f"git -C {root} rev-parse HEAD")
cmd = os.environ.get("COMPARE_CMD") or ('PEERS="%s" scripts/compare.sh %s' % (peers, n))
cpu_model = sh("lscpu | sed -n 's/^Model name: *//p'")
mem_gib = sh("free -g | awk '/Mem:/ {print $2}'")
duck = sh(sys.executable + " -c 'import duckdb; print(duckdb.__version__)'")
load_end = open("/proc/loadavg").read().split()[:3]
print("# weft vs peers on the same files (%s)\n" % sh("date -u +%Y-%m-%dT%H:%MZ"))
print("Command: `%s`  " % cmd)
print("Commit: `%s`  " % commit)
print("Machine: %s CPUs, %s, kernel %s, %s GiB RAM; DuckDB %s  " % (sh("nproc"), cpu_model, platform.release(), mem_gib, duck))
print("Load average at the end: %s (column load1: at each run's start). The machine is shared with other "
      "engineers' builds: wall-clock numbers are noisy and pessimistic; CPU s is less sensitive.\n" % " ".join(load_end))
print("data: events=%d keys=%s seed=%s D=%sms F=%s M=%s | left=%d right=%d late (ts <= max - D): "
      "left=%s right=%s\n" % (events, g["keys"], g["seed"], g["disorder_ms"], g["late_fraction"], g["match_rate"],
                               meta["left_rows"], meta["right_rows"], meta["left_late_vs_watermark"],
                               meta["right_late_vs_watermark"]))
hdr = ["engine", "par", "sink", "events/s", "events/s per core (CPU-s)", "wall s", "CPU s", "peak RSS MB",
       "load1", "output rows", "agrees with DuckDB"]
print("| " + " | ".join(hdr) + " |"); print("|" + "---|" * len(hdr))
def agree(c):
    if c is None: return "n/a (no rows kept)"
    if c.get("error"): return "check failed: " + c["error"]
    if c["match"]: return "yes"
    r, k = c["only_in_ref"], c["only_in_cand"]
    why = ("all touch late rows" if c["diff_explained_by_late"]
           else f"**{r['unexplained'] + k['unexplained']} NOT explained by late rows**")
    return (f"no: {r['rows']} ref rows missing ({r['null_padded']} null-padded; left_late {r['left_late']}, "
            f"right_late {r['right_late']}), {k['rows']} extra ({k['null_padded']} null-padded; "
            f"left_late {k['left_late']}, right_late {k['right_late']}); {why}")
for r in res:
    name = r["name"]
    if r.get("rc") != 0:
        print(f"| {name} | | | FAILED rc={r.get('rc')} log {r.get('log')} |" + " |" * 7); continue
    cpu = r.get("cpu_s") or 0
    if name.startswith("weft"):
        rep = json.load(open(f"{run}/out/{name}.json"))
        eng, par = "weft", rep["shards"]
        sink = "none" if "none" in name else "csv"
        eps, rows = rep["events_per_s"], rep["output_rows"]
        cell = "n/a (no rows kept)" if sink == "none" else agree(checks.get(name))
        np_path = f"{run}/logs/nullpad_{name}.json"
        c = checks.get(name)
        if sink == "csv" and os.path.exists(np_path) and c and not c.get("error") and not c["match"]:
            np_ = json.load(open(np_path))
            ok = np_.get("all_ref_matches_are_late_plays", 0)
            left = c["only_in_ref"]["unexplained"] + max(0, c["only_in_cand"]["unexplained"] - ok)
            oref, ocand = c["only_in_ref"], c["only_in_cand"]
            cell = (f"no: {oref['rows']} ref rows missing ({oref['null_padded']} null-padded; left_late "
                    f"{oref['left_late']}, right_late {oref['right_late']}), {ocand['rows']} extra "
                    f"({ocand['null_padded']} null-padded, of which "
                    f"{ok} are impressions whose every DuckDB match is a late play); "
                    + ("all touch late rows" if left == 0 else f"**{left} NOT explained by late rows**"))
    else:
        eng, par, sink = r.get("engine", name), r.get("parallelism", "?"), r.get("sink", "?")
        eps, rows = r.get("events_per_s"), r.get("rows")
        cell = "reference" if name == "duckdb_csv_p1" else (
            agree(checks.get(name)) if name in checks else (f"count only: {rows - checks['weft_csv_p1']['ref_rows']:+d} vs ref" if rows is not None and 'weft_csv_p1' in checks else "n/a"))
        if cell.startswith("count only: +0"): cell = "count only: = ref"
    per_core = f"{events / cpu:,.0f}" if cpu else "-"
    print("| " + " | ".join(str(x) for x in [eng, par, sink, f"{eps:,.0f}" if eps else "-", per_core, r["wall_s"], cpu,
          r["peak_rss_mb"], r.get("loadavg1_start", "-"), f"{rows:,}" if rows is not None else "-", cell]) + " |")
print("""
Columns: `events/s` = the engine's own timing (weft: its report, from job start to end, process start-up
excluded; DuckDB: the query's time, Python start-up and import excluded; Flink: t(big job) - t(tiny job)).
`events/s per core (CPU-s)` = events / `CPU s`, where `CPU s` is the user+sys time of the whole process tree
from peer_measure.py (so it *includes* start-up: Python + DuckDB import ~0.3-0.5 s, the JVM for Flink).
`wall s` = whole process. weft's `par` = shards (glommio executors); DuckDB's = threads.
`agrees with DuckDB`: peer_check.py's multiset comparison; `left_late`/`right_late` count differing rows whose
impression/play is a late row of its file (the rule ts <= max - D). weft drops late rows (strict rule
ts < max - D) into its late output instead of joining them, while DuckDB joins every row. An impression whose
only matching plays were late is therefore NULL-padded by weft: peer_check.py cannot tag such a row (it has no play),
so the last clause counts them by looking up the impression's matches in DuckDB's answer.""")
PYEOF
cat "$MD"
echo "wrote $MD (run dir $RUN)" >&2
