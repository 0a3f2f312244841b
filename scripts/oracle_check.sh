#!/usr/bin/env bash
# Cross-checks weft against an independent oracle: generates a data set with disorder
# and late rows (`weft gen`), computes the join with DuckDB SQL
# (scripts/duckdb_oracle.py), and checks that `weft batch` and the streaming engine
# (`weft run`) both produce the same multiset of rows and the same late rows, for
# inner and left joins. Exits non-zero on any difference.
#
# usage: scripts/oracle_check.sh [EVENTS]        (default 200000 rows, >= 100000)
# env:   WEFT   the weft binary (default: cargo build --release, then target/release/weft)
#        VENV   Python venv with duckdb (default /tmp/weft-oracle-venv; created if missing)
#        KEEP=1 keep the work directory
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-200000}
VENV=${VENV:-/tmp/weft-oracle-venv}

if [ -z "${WEFT:-}" ]; then
    cargo build --release --locked --bin weft
    WEFT="${CARGO_TARGET_DIR:-target}/release/weft"
fi
if ! "$VENV/bin/python" -c "import duckdb" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet duckdb
fi

WORK=$(mktemp -d /tmp/weft-oracle.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then echo "work directory: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
DATA="$WORK/data"

# 1% of rows arrive 2 x disorder + up to 2 min late; B = disorder (set by gen), A = 1 s.
"$WEFT" gen --out "$DATA" --events "$EVENTS" --seed 7 --keys 50000 --titles 2000 \
    --match-rate 0.5 --disorder-ms 2000 --late-fraction 0.01 --late-max-ms 120000 \
    --partitions 2 --kind left

fail=0
check() { # label expected actual
    echo "== $1"
    if "$WEFT" validate --expected "$2" --actual "$3" --show 5; then
        echo "-- $1: equal"
    else
        echo "-- $1: DIFFERENT (or error)"
        fail=1
    fi
}

for kind in inner left; do
    job="$DATA/job-$kind.toml"
    sed -e "s/^kind = .*/kind = \"$kind\"/" \
        -e "s/^allowed_lateness_ms = .*/allowed_lateness_ms = 1000/" \
        -e "s|^path = \"out\"|path = \"out-$kind\"|" "$DATA/job.toml" > "$job"
    grep -q "^kind = \"$kind\"" "$job" && grep -q "^allowed_lateness_ms = 1000" "$job" \
        || { echo "cannot set kind/allowed_lateness_ms in $job"; exit 2; }

    t0=$(date +%s.%N)
    "$VENV/bin/python" scripts/duckdb_oracle.py --config "$job" \
        --out "$WORK/oracle-$kind/out.csv" --late-dir "$WORK/oracle-$kind/late"
    t1=$(date +%s.%N)
    "$WEFT" batch --config "$job" --output "$WORK/batch-$kind"
    t2=$(date +%s.%N)
    "$WEFT" run --config "$job" --quiet
    t3=$(date +%s.%N)
    awk -v k="$kind" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
        'BEGIN { printf "times (%s): duckdb oracle %.2f s, weft batch %.2f s, weft run %.2f s\n", k, b - a, c - b, d - c }'

    check "$kind: batch vs duckdb" "$WORK/oracle-$kind" "$WORK/batch-$kind"
    check "$kind: streaming vs duckdb" "$WORK/oracle-$kind" "$DATA/out-$kind"
    echo "== $kind: weft validate --config (streaming vs batch)"
    if "$WEFT" validate --config "$job" --output "$DATA/out-$kind" --show 5; then
        echo "-- $kind: streaming vs batch: equal"
    else
        echo "-- $kind: streaming vs batch: DIFFERENT (or error)"
        fail=1
    fi
done

if [ "$fail" != 0 ]; then
    echo "oracle check FAILED"
    exit 1
fi
echo "oracle check passed: weft batch and streaming equal DuckDB for inner and left joins ($EVENTS rows)"
