#!/usr/bin/env bash
# Mining (DFG and funnel), trailmap vs DuckDB, chDB and polars, on one flat Parquet file, in one
# run, load included for every engine.
#
#   benches/peers/mine.sh                       # ~20M events, 1.2M customers
#   CUSTOMERS=100000 REPEAT=5 benches/peers/mine.sh
#   benches/peers/mine.sh --tasks funnel        # extra arguments go to mine.py
#
# Installs what it needs (a virtualenv with the peers) and builds trailmap in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."

CUSTOMERS="${CUSTOMERS:-1200000}"
REPEAT="${REPEAT:-3}"
OUT="${OUT:-benches/peers/out}"
VENV="benches/peers/.venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trailmap-target}"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "duckdb>=1.1" "chdb>=4.4" "polars>=1.20" "pyarrow>=18"

if [ ! -x /usr/bin/time ]; then
    # GNU time measures the trailmap child's peak memory (see mine.py).
    apt-get install -y time >/dev/null 2>&1 || sudo apt-get install -y time >/dev/null
fi

cargo build --release --locked -p trailmap
BIN="$CARGO_TARGET_DIR/release/trailmap"

PARQUET="$OUT/c$CUSTOMERS/events.parquet"
if [ ! -f "$PARQUET" ]; then
    "$BIN" gen --customers "$CUSTOMERS" --layout flat --file-format parquet \
        --out "$OUT/c$CUSTOMERS" --format json > /dev/null
fi
exec "$VENV/bin/python" benches/peers/mine.py --bin "$BIN" --parquet "$PARQUET" \
    --repeat "$REPEAT" "$@"
