#!/usr/bin/env python3
"""An independent oracle for weft's join, in DuckDB SQL.

usage: duckdb_oracle.py --config JOB.toml --out OUT.csv [--late-dir DIR] [--threads N]

Reads the job's input files (CSV, or JSON lines), numbers each file's rows in file
order, applies SEMANTICS.md's per-partition lateness rule with a window function

    late  <=>  ts < max(ts) OVER (PARTITION BY file ORDER BY row_number
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                    - max_out_of_orderness_ms - allowed_lateness_ms

and computes the interval join of the configured kind over the non-late rows:

    key(l) = key(r)  AND  r.ts BETWEEN l.ts + lower_ms AND l.ts + upper_ms

The output is CSV with weft's header (`<left name>.<field>`, then the right's) and
weft's formatting for integers, booleans and strings (NULL = empty cell), so
`weft validate --expected DIR_WITH_OUT --actual WEFT_OUT` compares them row by row.
With --late-dir, late rows go to DIR/<input>-<file index>.csv as weft writes them.

Malformed rows (a cell that does not cast to its type, a NULL event time, a line
with the wrong number of cells) are dropped, as weft sends them to dead letters;
DuckDB's casts are a little more lenient than weft's parser (e.g. it trims spaces),
so inputs with malformed rows may differ at the margins.

Files of several schema versions: CSV columns and JSON keys are matched by name or by
one of the field's `aliases`; a field a CSV file has no column for takes its `default`,
else NULL, and a file without a key or time column has all its rows malformed, as in
weft. In JSON lines DuckDB cannot tell a missing key from `null`: both take the default
(weft gives the default only to a missing key, and makes a line without its time
field a dead letter), and a line with a field under both its name and an alias takes
the name's value (weft: a dead letter). f64 values may be
formatted differently; the oracle is meant for integer and string data.
Shares no code with weft. Needs Python >= 3.11 (tomllib) and the duckdb package.
"""
import argparse
import csv
import json
import os
import sys
import time
import tomllib

import duckdb

SQL_TYPES = {
    "i32": "INTEGER",
    "i64": "BIGINT",
    "u32": "UINTEGER",
    "u64": "UBIGINT",
    "f64": "DOUBLE",
    "bool": "BOOLEAN",
    "string": "VARCHAR",
}
JOINS = {"inner": "INNER JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL OUTER JOIN"}


def fail(msg):
    print(f"duckdb_oracle: {msg}", file=sys.stderr)
    sys.exit(2)


def q(name):
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(s):
    """A quoted SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def csv_header(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        row = next(csv.reader(f), None)
    if not row:
        fail(f"{path}: empty file: a header line is required")
    return [c.rstrip("\r") for c in row]


def default_text(f):
    """A field's `default` as the text of a CSV cell (None: no default, NULL)."""
    d = f.get("default")
    if d is None:
        return None
    if isinstance(d, bool):
        return "true" if d else "false"
    return str(d)


def load_input(con, side, inp, base):
    """Creates table `<side>_rows` (fidx, rn, typed fields, t, late) for one input."""
    if "generator" in inp:
        fail(f"[{side}] uses the built-in generator: write its data with `weft gen` first")
    fmt = inp.get("format", "csv")
    paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in inp["paths"]]
    fields = [(f["name"], f["type"]) for f in inp["fields"]]
    names = [n for n, _ in fields]
    answers = {f["name"]: [f["name"]] + list(f.get("aliases", [])) for f in inp["fields"]}
    required = set(inp["key"]) | {inp["time"]}
    time_field = inp["time"]
    parts = []
    for i, path in enumerate(paths):
        if not os.path.exists(path):
            fail(f"{path}: no such input file")
        if fmt == "csv":
            header = csv_header(path)
            # Each field's column, by name or alias (files of older schema versions); a
            # field without one takes its default, or NULL, unless it is a key or the
            # time field: then every row of the file is malformed (a dead letter).
            exprs, absent = [], False
            for f in inp["fields"]:
                hits = [h for h in header if h in answers[f["name"]]]
                if len(hits) > 1:
                    fail(f"{path}: header has two columns for field {f['name']!r}: {hits}")
                if hits:
                    exprs.append(f"{q(hits[0])} AS {q(f['name'])}")
                else:
                    absent |= f["name"] in required
                    d = default_text(f)
                    exprs.append(f"{'NULL' if d is None else lit(d)}::VARCHAR AS {q(f['name'])}")
            cols = "{" + ", ".join(f"{lit(h)}: 'VARCHAR'" for h in header) + "}"
            src = (
                f"(SELECT {', '.join(exprs)}, {'true' if absent else 'false'} AS __absent "
                f"FROM read_csv({lit(path)}, header=true, auto_detect=false, columns={cols}, "
                "delim=',', quote='\"', escape='\"', ignore_errors=true, parallel=false))"
            )
        elif fmt == "jsonl":
            # Keys by name or alias; a missing key takes the default (DuckDB cannot tell
            # a missing key from `null`, see the note at the top).
            every = sorted({a for n in names for a in answers[n]})
            cols = "{" + ", ".join(f"{lit(n)}: 'VARCHAR'" for n in every) + "}"
            exprs = []
            for f in inp["fields"]:
                d = default_text(f)
                got = f"COALESCE({', '.join(q(a) for a in answers[f['name']])})"
                exprs.append(f"{got if d is None else f'COALESCE({got}, {lit(d)})'} AS {q(f['name'])}")
            src = (
                f"(SELECT {', '.join(exprs)}, false AS __absent FROM "
                f"read_json({lit(path)}, format='newline_delimited', columns={cols}, ignore_errors=true))"
            )
        else:
            fail(f"[{side}] format {fmt!r} is not supported")
        # One thread while numbering rows, so row_number() follows the file order.
        con.execute(f"CREATE TABLE {side}_raw_{i} AS SELECT row_number() OVER () AS rn, * FROM {src}")
        parts.append(f"SELECT {i} AS fidx, * FROM {side}_raw_{i}")
    casts = []
    bad = []
    for n, t in fields:
        sql_t = SQL_TYPES[t]
        casts.append(f"TRY_CAST({q(n)} AS {sql_t}) AS {q(n)}")
        bad.append(f"({q(n)} IS NOT NULL AND TRY_CAST({q(n)} AS {sql_t}) IS NULL)")
    time_t = SQL_TYPES[dict(fields)[time_field]]
    t_expr = f"TRY_CAST(TRY_CAST({q(time_field)} AS {time_t}) AS BIGINT)"
    con.execute(
        f"""CREATE TABLE {side}_typed AS
        SELECT fidx, rn, {', '.join(casts)}, {t_expr} AS __t,
               ({' OR '.join(bad)} OR {t_expr} IS NULL OR __absent) AS __dead
        FROM ({' UNION ALL '.join(parts)})"""
    )
    for i in range(len(paths)):
        con.execute(f"DROP TABLE {side}_raw_{i}")
    return names, len(paths)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, help="output CSV file")
    ap.add_argument("--late-dir", help="write late rows here as <input>-<file index>.csv")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()

    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(a.config))
    join = cfg["join"]
    kind = join["kind"]
    lower, upper = int(join["lower_ms"]), int(join["upper_ms"])
    slack = int(join.get("max_out_of_orderness_ms", 0)) + int(join.get("allowed_lateness_ms", 0))
    if kind not in JOINS:
        fail(f"join.kind {kind!r} is not one of {sorted(JOINS)}")

    t0 = time.perf_counter()
    con = duckdb.connect(":memory:")
    con.execute("SET threads = 1")
    con.execute("SET preserve_insertion_order = true")
    inputs = {}
    for side in ("left", "right"):
        inp = cfg[side]
        names, nfiles = load_input(con, side, inp, base)
        inputs[side] = (inp["name"], names, inp["key"], nfiles)
        # Per-file lateness over the rows before each row, in file order.
        con.execute(
            f"""CREATE TABLE {side}_rows AS
            SELECT *, (prev_max IS NOT NULL
                       AND CAST(__t AS HUGEINT) < CAST(prev_max AS HUGEINT) - {slack}) AS __late
            FROM (SELECT *, max(__t) OVER (PARTITION BY fidx ORDER BY rn
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_max
                  FROM {side}_typed WHERE NOT __dead)"""
        )
    con.execute(f"SET threads = {max(1, a.threads)}")

    (lname, lnames, lkey, _), (rname, rnames, rkey, _) = inputs["left"], inputs["right"]
    select = [f"l.{q(n)} AS {q(lname + '.' + n)}" for n in lnames] + [
        f"r.{q(n)} AS {q(rname + '.' + n)}" for n in rnames
    ]
    on = [f"l.{q(lk)} = r.{q(rk)}" for lk, rk in zip(lkey, rkey)]
    on.append(
        f"CAST(r.__t AS HUGEINT) BETWEEN CAST(l.__t AS HUGEINT) + {lower} AND CAST(l.__t AS HUGEINT) + {upper}"
    )
    query = f"""SELECT {', '.join(select)}
        FROM (SELECT * FROM left_rows WHERE NOT __late) l
        {JOINS[kind]} (SELECT * FROM right_rows WHERE NOT __late) r
        ON {' AND '.join(on)}"""
    out = os.path.abspath(a.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    con.execute(f"COPY ({query}) TO {lit(out)} (FORMAT csv, HEADER true, DELIMITER ',')")
    rows = con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]

    summary = {"kind": kind, "output_rows": rows, "out": out}
    for side in ("left", "right"):
        name, names, _, nfiles = inputs[side]
        n_in, n_late = con.execute(f"SELECT count(*), count(*) FILTER (WHERE __late) FROM {side}_rows").fetchone()
        n_dead = con.execute(f"SELECT count(*) FILTER (WHERE __dead) FROM {side}_typed").fetchone()[0]
        summary[name] = {"rows_in": n_in, "late": n_late, "dead": n_dead}
        if a.late_dir:
            os.makedirs(a.late_dir, exist_ok=True)
            cols = ", ".join(q(n) for n in names)
            for i in range(nfiles):
                late = f"SELECT {cols} FROM {side}_rows WHERE __late AND fidx = {i} ORDER BY rn"
                if con.execute(f"SELECT count(*) FROM ({late})").fetchone()[0]:
                    path = os.path.join(a.late_dir, f"{name}-{i}.csv")
                    con.execute(f"COPY ({late}) TO {lit(path)} (FORMAT csv, HEADER true, DELIMITER ',')")
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print("ORACLE " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
