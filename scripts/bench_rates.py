#!/usr/bin/env python3
"""Load-generator benchmark of the weft binary: max throughput, then open-loop
latency at fixed fractions of it. Called by scripts/bench.sh (which builds weft);
standard library only, so it runs on a fresh machine with just python3.

usage: bench_rates.py --weft PATH --out-json FILE --out-svg FILE [--work DIR]
       bench_rates.py --weft - --out-json - --out-svg FILE --replot RESULT.json
knobs (environment; defaults in brackets):
  KEYS [1000000] ZIPF [1.0] MATCH_RATE [0.3] DISORDER_MS [5000] LATE_FRACTION [0.001]
  SHARDS ["1 2"]   shard counts to measure
  DURATION_S [20]  seconds per open-loop run (events = rate x seconds)
  MAX_EVENTS [10000000]  events of each max-throughput run
  RATES_PCT ["50 80 95"] open-loop rates, % of the max measured for that shard count
  REPEATS [1]      max-throughput runs per shard count (the best is used)

Phase 1 (closed loop): `weft run --config C --shards S --report R --quiet` with
rate_limit = 0: the generator produces as fast as the shards consume, so
events_per_s is the max throughput and events_per_cpu_s the per-core efficiency.
Phase 2 (open loop): the same job with generator rate_limit = pct% of that max and
events = rate x DURATION_S. The generator stamps each row with its *intended* send
time, so a backlog shows up in the latency (no coordinated omission). The run kept
up when its wall time is within 5% (+0.5 s start-up) of events / rate; if it is much
longer, the engine fell behind and the backlog grew.
Latency = weft's report: emit time minus the arrival of the later row of a matched
pair (p50, p99, p99.9, max; the report has no p90).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

KEEP_UP_SLACK = 1.05
START_SLACK_S = 0.5


def env(name, default):
    v = os.environ.get(name, "")
    return v if v.strip() else default


def config_text(p, shards, events, rate):
    gen = (f"keys = {p['keys']}, zipf = {p['zipf']}, match_rate = {p['match_rate']}, "
           f"disorder_ms = {p['disorder_ms']}, late_fraction = {p['late_fraction']}, "
           f"events = {events}, rate_limit = {float(rate)}")
    return f"""# written by scripts/bench_rates.py
[left]
name = "impressions"
generator = {{ {gen} }}
[right]
name = "plays"
generator = {{}}
[join]
kind = "left"
lower_ms = 0
upper_ms = 3600000
max_out_of_orderness_ms = {p['disorder_ms']}
[output]
path = "none"
[engine]
shards = {shards}
"""


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def run_weft(weft, work, tag, p, shards, events, rate):
    cfg = os.path.join(work, f"{tag}.toml")
    rep = os.path.join(work, f"{tag}.json")
    log = os.path.join(work, f"{tag}.log")
    with open(cfg, "w") as f:
        f.write(config_text(p, shards, events, rate))
    cmd = [weft, "run", "--config", cfg, "--shards", str(shards), "--report", rep, "--quiet"]
    load0 = loadavg()
    # A run that hangs must not hang the benchmark: open-loop runs get 3x their nominal
    # time + 60 s, closed-loop runs 20 min; then SIGTERM, and SIGKILL 10 s later.
    limit = 3 * events / rate + 60 if rate > 0 else 1200
    t0 = time.monotonic()
    with open(log, "w") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(limit)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            rc = f"timeout after {limit:.0f} s (hung?)"
    wall = time.monotonic() - t0
    if rc != 0:
        print(f"weft failed ({rc}): {' '.join(cmd)}; see {log}", file=sys.stderr)
        return {"_failed": str(rc), "_cmd": " ".join(cmd), "_process_wall_s": round(wall, 3),
                "_load_before": load0, "_load_after": loadavg(), "_log": log}
    with open(rep) as f:
        r = json.load(f)
    r["_cmd"] = " ".join(cmd)
    r["_process_wall_s"] = round(wall, 3)
    r["_load_before"] = load0
    r["_load_after"] = loadavg()
    return r


def summary(r):
    if "_failed" in r:
        return {"failed": r["_failed"], "cmd": r["_cmd"], "process_wall_s": r["_process_wall_s"],
                "load_before": r["_load_before"], "load_after": r["_load_after"], "log": r["_log"],
                "events_per_s": 0, "events_per_cpu_s": 0, "wall_s": r["_process_wall_s"],
                "latency_us": {"count": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None}}
    lat = r["latency"]
    return {
        "events": r["events"], "wall_s": round(r["wall_s"], 3),
        "events_per_s": round(r["events_per_s"]), "cpu_s": round(r["cpu_s"], 3),
        "events_per_cpu_s": round(r["events_per_cpu_s"]),
        "late": r["left"]["late"] + r["right"]["late"], "output_rows": r["output_rows"],
        "matched_pairs": r["matched_pairs"], "keys_peak": r["keys_peak"],
        "state_bytes_peak": r["state_bytes_peak"],
        "latency_us": {"count": lat["count"], "p50": lat["p50_us"], "p90": lat.get("p90_us"),
                       "p99": lat["p99_us"], "p999": lat["p999_us"], "max": lat["max_us"]},
        "process_wall_s": r["_process_wall_s"], "load_before": r["_load_before"],
        "load_after": r["_load_after"], "cmd": r["_cmd"],
    }


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e:  # informational only
        return f"<{e}>"


def machine(root):
    return {
        "nproc": sh("nproc"), "lscpu": sh("lscpu | head -20").splitlines(),
        "kernel": platform.release(), "os": sh(". /etc/os-release 2>/dev/null && echo $PRETTY_NAME"),
        "mem": sh("free -g | sed -n 2p"), "rustc": sh("rustc --version"),
        "commit": os.environ.get("WEFT_COMMIT") or sh(f"git -C '{root}' rev-parse HEAD"),
        "dirty": sh(f"git -C '{root}' status --porcelain --untracked-files=no | wc -l"),
        "hostname": platform.node(),
    }


# ---- a small hand-written SVG (no plotting library needed) ----

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def nice_max(v):
    if v <= 0:
        return 1.0
    e = 10 ** len(str(int(v))) / 10
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def fmt_si(v):
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suf}"
    return f"{v:g}"


def panel(x0, y0, w, h, title, xlabel, ylabel, series, log_y=False):
    """series: list of (label, color, [(x, y)]) ; returns SVG elements."""
    import math
    out = [f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>',
           f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    xs = [x for _, _, pts in series for x, _ in pts] or [1]
    ys = [y for _, _, pts in series for _, y in pts if y is not None and y > 0] or [1]
    xmax = nice_max(max(xs) * 1.05)
    if log_y:
        lo = 10 ** math.floor(math.log10(min(ys)))
        hi = 10 ** math.ceil(math.log10(max(ys)))
        if hi <= lo:
            hi = lo * 10
        ty = lambda y: y0 + h - (math.log10(y) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * h
        ticks = [lo * 10 ** i for i in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        ymax = nice_max(max(ys) * 1.05)
        ty = lambda y: y0 + h - y / ymax * h
        ticks = [ymax * i / 5 for i in range(6)]
    tx = lambda x: x0 + x / xmax * w
    for t in ticks:
        y = ty(t)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{fmt_si(t)}</text>')
    for i in range(6):
        x = xmax * i / 5
        out.append(f'<text x="{tx(x):.1f}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{fmt_si(x)}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle" font-size="12">{xlabel}</text>')
    out.append(f'<text x="{x0 - 52}" y="{y0 + h / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {x0 - 52} {y0 + h / 2})">{ylabel}</text>')
    for k, (label, color, pts) in enumerate(series):
        pts = [(x, y) for x, y in pts if y is not None and (y > 0 or not log_y)]
        if not pts:
            continue
        path = " ".join(f"{tx(x):.1f},{ty(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5,4"' if ("offered" in label or "p50" in label) else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{tx(x):.1f}" cy="{ty(y):.1f}" r="3.5" fill="{color}"/>')
        ly = y0 + 16 + 16 * k
        out.append(f'<line x1="{x0 + 10}" y1="{ly - 4}" x2="{x0 + 30}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x0 + 36}" y="{ly}" font-size="11">{label}</text>')
    return out


def write_svg(path, res, subtitle):
    tp, lat = [], []
    for i, s in enumerate(res["shards"]):
        c = COLORS[i % len(COLORS)]
        runs = res["open_loop"][str(s)]
        tp.append((f"{s} shard(s): achieved", c, [(r["rate"], r["events_per_s"]) for r in runs]))
        lat.append((f"{s} shard(s): p99", c, [(r["rate"], r["latency_us"]["p99"]) for r in runs]))
        lat.append((f"{s} shard(s): p50", c, [(r["rate"], r["latency_us"]["p50"]) for r in runs]))
    allr = [r["rate"] for s in res["shards"] for r in res["open_loop"][str(s)]]
    if allr:
        tp.append(("offered = achieved", "#999", [(0, 0), (max(allr), max(allr))]))
    W, H = 1000, 430
    els = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="12">{subtitle}</text>']
    els += panel(90, 60, 370, 290, "throughput per offered rate", "offered rate (events/s)", "achieved events/s", tp)
    els += panel(590, 60, 370, 290, "latency per offered rate", "offered rate (events/s)", "latency (us, log)", lat, log_y=True)
    els.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(els) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weft", required=True)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-svg", required=True)
    ap.add_argument("--work", default="/tmp/weft-bench")
    ap.add_argument("--root", default=".")
    ap.add_argument("--replot", metavar="JSON", help="only redraw --out-svg from an earlier result file")
    a = ap.parse_args()
    if a.replot:
        with open(a.replot) as f:
            res = json.load(f)
        m, p = res["machine"], res["workload"]
        write_svg(a.out_svg, res, f"weft {m['commit'][:10]} | {m['nproc']} CPUs | keys={p['keys']} zipf={p['zipf']} "
                                  f"match={p['match_rate']} D={p['disorder_ms']}ms F={p['late_fraction']} | "
                                  f"{res['started_utc']}")
        return
    os.makedirs(a.work, exist_ok=True)
    p = {"keys": int(env("KEYS", "1000000")), "zipf": float(env("ZIPF", "1.0")),
         "match_rate": float(env("MATCH_RATE", "0.3")), "disorder_ms": int(env("DISORDER_MS", "5000")),
         "late_fraction": float(env("LATE_FRACTION", "0.001"))}
    shards = [int(s) for s in env("SHARDS", "1 2").split()]
    dur = float(env("DURATION_S", "20"))
    max_events = int(env("MAX_EVENTS", "10000000"))
    pcts = [float(x) for x in env("RATES_PCT", "50 80 95").split()]
    repeats = int(env("REPEATS", "1"))
    started = datetime.datetime.now(datetime.timezone.utc)
    res = {"started_utc": started.isoformat(timespec="seconds"), "workload": p, "shards": shards,
           "duration_s": dur, "max_events": max_events, "rates_pct": pcts,
           "machine": machine(a.root), "max": {}, "open_loop": {},
           "notes": ["latency = weft report (emit - arrival of the later row of a matched pair); "
                     "no p90 in the report", "the machine may be shared: see load_before/after"]}
    for s in shards:
        best = None
        for k in range(repeats):
            r = summary(run_weft(a.weft, a.work, f"max-s{s}-{k}", p, s, max_events, 0))
            print(f"max  shards={s}: {r['events_per_s']:,} ev/s, {r['events_per_cpu_s']:,} ev/CPU-s, "
                  f"wall {r['wall_s']} s, load {r['load_before'][0]}", file=sys.stderr)
            res["max"].setdefault(str(s), []).append(r)
            if best is None or r["events_per_s"] > best["events_per_s"]:
                best = r
        runs = []
        if not best or not best["events_per_s"]:
            print(f"no successful max-throughput run at shards={s}: open-loop runs skipped", file=sys.stderr)
            res["open_loop"][str(s)] = runs
            continue
        for pct in pcts:
            rate = round(best["events_per_s"] * pct / 100)
            events = max(1, int(rate * dur))
            r = summary(run_weft(a.weft, a.work, f"rate-s{s}-{int(pct)}", p, s, events, rate))
            expected = events / rate
            r.update({"pct_of_max": pct, "rate": rate, "expected_s": round(expected, 3),
                      "wall_over_expected": round(r["wall_s"] / expected, 3),
                      "kept_up": "failed" not in r and r["wall_s"] <= expected * KEEP_UP_SLACK + START_SLACK_S})
            l = r["latency_us"]
            print(f"rate shards={s} {pct:g}% = {rate:,} ev/s: wall {r['wall_s']} s (expected {expected:.1f}),"
                  f" kept_up={r['kept_up']}, p50 {l['p50']} us, p99 {l['p99']} us, p99.9 {l['p999']} us,"
                  f" max {l['max']} us, load {r['load_before'][0]}", file=sys.stderr)
            runs.append(r)
        res["open_loop"][str(s)] = runs
    res["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(a.out_json, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    m = res["machine"]
    write_svg(a.out_svg, res, f"weft {m['commit'][:10]} | {m['nproc']} CPUs | keys={p['keys']} zipf={p['zipf']} "
                              f"match={p['match_rate']} D={p['disorder_ms']}ms F={p['late_fraction']} | "
                              f"{res['started_utc']}")
    # Markdown summary on stdout.
    print("| shards | run | offered ev/s | achieved ev/s | ev/CPU-s | wall s | expected s | kept up |"
          " p50 us | p99 us | p99.9 us | max us | load1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in shards:
        for r in res["max"][str(s)]:
            l = r["latency_us"]
            print(f"| {s} | max | - | {r['events_per_s']:,} | {r['events_per_cpu_s']:,} | {r['wall_s']} | - | - |"
                  f" {l['p50']} | {l['p99']} | {l['p999']} | {l['max']} | {r['load_before'][0]} |")
        for r in res["open_loop"][str(s)]:
            l = r["latency_us"]
            print(f"| {s} | {r['pct_of_max']:g}% | {r['rate']:,} | {r['events_per_s']:,} | {r['events_per_cpu_s']:,} |"
                  f" {r['wall_s']} | {r['expected_s']} | {'FAILED: ' + r['failed'] if 'failed' in r else 'yes' if r['kept_up'] else 'NO'} |"
                  f" {l['p50']} | {l['p99']} | {l['p999']} | {l['max']} | {r['load_before'][0]} |")


if __name__ == "__main__":
    main()
