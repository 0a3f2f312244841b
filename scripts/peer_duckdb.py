#!/usr/bin/env python3
"""DuckDB's answer to the peers' left interval join on DIR/left.csv and DIR/right.csv
(see scripts/peer_gen.py): the batch reference weft is compared with, and its speed.

  SELECT i.profile_id, i.title_id, i.ts AS i_ts, p.ts AS p_ts, p.duration_ms
  FROM impressions i LEFT JOIN plays p
    ON i.profile_id = p.profile_id AND i.title_id = p.title_id
   AND p.ts BETWEEN i.ts AND i.ts + 3600000

usage: peer_duckdb.py --data DIR --threads P (--sink count | --sink csv --out FILE)
count: count(*) and sums over every output column (a blackhole that DuckDB cannot
skip); csv: COPY to FILE with a header, NULL as an empty field. Prints one line
`RESULT {...}` with the query's own time (CSV parse + join + sink). Needs duckdb.
"""
import argparse
import json
import os
import time

import duckdb

LEFT = "{'profile_id': 'UBIGINT', 'title_id': 'UINTEGER', 'ts': 'BIGINT', 'row': 'USMALLINT', 'col': 'USMALLINT'}"
RIGHT = "{'profile_id': 'UBIGINT', 'title_id': 'UINTEGER', 'ts': 'BIGINT', 'duration_ms': 'UINTEGER'}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sink", choices=["count", "csv"], default="count")
    p.add_argument("--out")
    a = p.parse_args()
    if a.sink == "csv" and not a.out:
        p.error("--sink csv needs --out FILE")
    for f in ("left.csv", "right.csv"):
        if not os.path.isfile(os.path.join(a.data, f)):
            p.error(f"{os.path.join(a.data, f)}: no such file (make it with scripts/peer_gen.py)")
    left = os.path.join(a.data, "left.csv").replace("'", "''")
    right = os.path.join(a.data, "right.csv").replace("'", "''")
    join = f"""
      SELECT i.profile_id, i.title_id, i.ts AS i_ts, p.ts AS p_ts, p.duration_ms
      FROM read_csv('{left}', header = true, columns = {LEFT}) i
      LEFT JOIN read_csv('{right}', header = true, columns = {RIGHT}) p
        ON i.profile_id = p.profile_id AND i.title_id = p.title_id
       AND p.ts BETWEEN i.ts AND i.ts + 3600000"""
    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    t0 = time.monotonic()
    if a.sink == "count":
        rows, *_ = con.execute(
            f"SELECT count(*), sum(profile_id), sum(title_id), sum(i_ts), sum(p_ts), sum(duration_ms) FROM ({join})"
        ).fetchone()
    else:
        out = a.out.replace("'", "''")
        con.execute(f"COPY ({join}) TO '{out}' (HEADER, DELIMITER ',', NULLSTR '')")
        rows = None
    net = time.monotonic() - t0
    if rows is None:
        with open(a.out) as f:
            rows = sum(1 for _ in f) - 1
    meta_path = os.path.join(a.data, "meta.json")
    events = None
    if os.path.isfile(meta_path):
        m = json.load(open(meta_path))
        events = m.get("left_rows", 0) + m.get("right_rows", 0)
    r = {"engine": "duckdb", "parallelism": a.threads, "sink": a.sink, "events": events,
         "net_s": round(net, 4), "rows": rows, "duckdb": duckdb.__version__}
    if events:
        r["events_per_s"] = round(events / net)
    if a.out:
        r["out"] = a.out
    print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
