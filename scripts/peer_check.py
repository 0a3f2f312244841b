#!/usr/bin/env python3
"""Compares an engine's output of the peers' left interval join with DuckDB's answer as
multisets, and tags each differing row by the late rows it involves.

A row of DIR/left.csv or DIR/right.csv is *late* when ts <= max(ts of the earlier rows
of its file) - D (D = meta.json's disorder_ms). A differing output row is `left_late`
when its (profile_id, title_id, i_ts) is a late impression, `right_late` when its
(profile_id, title_id, p_ts) is a late play, `unexplained` when neither.

usage: peer_check.py --data DIR --ref REF.csv --cand FILE_OR_DIR [--cand-header] [--json]
REF has a header; CAND is one CSV file or a directory of part files (dot-files and empty
files ignored), columns profile_id,title_id,i_ts,p_ts,duration_ms, NULL = empty.
Exit 0 when both agree, 1 when they differ, 2 on bad input. Needs duckdb and numpy.
"""
import argparse
import json
import os
import sys

import duckdb
import numpy as np

COLS = "{'profile_id': 'UBIGINT', 'title_id': 'UINTEGER', 'i_ts': 'BIGINT', 'p_ts': 'BIGINT', 'duration_ms': 'UINTEGER'}"


def files_of(cand):
    if os.path.isdir(cand):
        fs = sorted(os.path.join(cand, f) for f in os.listdir(cand)
                    if not f.startswith(".") and os.path.getsize(os.path.join(cand, f)) > 0)
        if not fs:
            sys.exit(f"peer_check.py: {cand}: no non-empty part files")
        return fs
    if not os.path.isfile(cand):
        sys.exit(f"peer_check.py: {cand}: no such file or directory")
    return [cand]


def late_keys(con, path, d):
    """(profile_id, title_id, ts) of the late rows of one input file, in file order."""
    # One thread keeps the scan in file order, which the running maximum needs.
    a = con.execute(f"SELECT profile_id, title_id, ts FROM read_csv('{path}', header = true)").fetchnumpy()
    ts = a["ts"].astype(np.int64)
    late = np.zeros(len(ts), dtype=bool)
    if len(ts) > 1:
        late[1:] = ts[1:] <= np.maximum.accumulate(ts)[:-1] - d
    return {k: np.asarray(a[k])[late] for k in ("profile_id", "title_id", "ts")}


def tally(con, table):
    q = f"""SELECT count(*),
              count(*) FILTER (WHERE p_ts IS NULL),
              count(*) FILTER (WHERE l.ts IS NOT NULL),
              count(*) FILTER (WHERE r.ts IS NOT NULL),
              count(*) FILTER (WHERE l.ts IS NULL AND r.ts IS NULL)
            FROM {table} d
            LEFT JOIN (SELECT DISTINCT * FROM late_l) l
              ON l.profile_id = d.profile_id AND l.title_id = d.title_id AND l.ts = d.i_ts
            LEFT JOIN (SELECT DISTINCT * FROM late_r) r
              ON r.profile_id = d.profile_id AND r.title_id = d.title_id AND r.ts = d.p_ts"""
    rows, null_padded, left_late, right_late, unexplained = con.execute(q).fetchone()
    return {"rows": rows, "null_padded": null_padded, "left_late": left_late,
            "right_late": right_late, "unexplained": unexplained}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--cand", required=True)
    p.add_argument("--cand-header", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    try:
        d = json.load(open(os.path.join(a.data, "meta.json")))["args"]["disorder_ms"]
    except (OSError, KeyError, ValueError) as e:
        print(f"peer_check.py: {a.data}/meta.json: {e}", file=sys.stderr)
        sys.exit(2)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.execute("SET preserve_insertion_order = true")
    late_l = late_keys(con, os.path.join(a.data, "left.csv"), d)
    late_r = late_keys(con, os.path.join(a.data, "right.csv"), d)
    con.register("late_l_df", late_l)
    con.register("late_r_df", late_r)
    con.execute("CREATE TABLE late_l AS SELECT * FROM late_l_df")
    con.execute("CREATE TABLE late_r AS SELECT * FROM late_r_df")
    con.execute(f"CREATE TABLE ref AS SELECT * FROM read_csv('{a.ref}', header = true, auto_detect = false, columns = {COLS})")
    cands = ", ".join("'" + f.replace("'", "''") + "'" for f in files_of(a.cand))
    hdr = "true" if a.cand_header else "false"
    con.execute(f"CREATE TABLE cand AS SELECT * FROM read_csv([{cands}], header = {hdr}, auto_detect = false, columns = {COLS})")
    con.execute("CREATE TABLE only_ref AS SELECT * FROM ref EXCEPT ALL SELECT * FROM cand")
    con.execute("CREATE TABLE only_cand AS SELECT * FROM cand EXCEPT ALL SELECT * FROM ref")
    r, c = tally(con, "only_ref"), tally(con, "only_cand")
    out = {
        "ref_rows": con.execute("SELECT count(*) FROM ref").fetchone()[0],
        "cand_rows": con.execute("SELECT count(*) FROM cand").fetchone()[0],
        "match": r["rows"] == 0 and c["rows"] == 0,
        "only_in_ref": r,
        "only_in_cand": c,
        "diff_explained_by_late": r["unexplained"] == 0 and c["unexplained"] == 0,
        "late_rows": {"left": int(len(late_l["ts"])), "right": int(len(late_r["ts"]))},
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"ref {out['ref_rows']} rows, cand {out['cand_rows']}: "
              + ("equal as multisets" if out["match"] else
                 f"{r['rows']} only in ref ({r['unexplained']} unexplained), "
                 f"{c['rows']} only in cand ({c['unexplained']} unexplained)"))
    sys.exit(0 if out["match"] else 1)


if __name__ == "__main__":
    main()
