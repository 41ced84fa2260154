#!/usr/bin/env bash
# Sessionization, trailmap vs DuckDB, on one flat Parquet file, in one run, load included.
#
#   benches/peers/sessionize.sh            # ~20M events, 1.2M customers
#   CUSTOMERS=100000 benches/peers/sessionize.sh
#
# Installs what it needs (a virtualenv with duckdb) and builds trailmap in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."

CUSTOMERS="${CUSTOMERS:-1200000}"
OUT="${OUT:-benches/peers/out}"
VENV="benches/peers/.venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trailmap-target}"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "duckdb>=1.1"

cargo build --release --locked -p trailmap
BIN="$CARGO_TARGET_DIR/release/trailmap"

PARQUET="$OUT/c$CUSTOMERS/events.parquet"
if [ ! -f "$PARQUET" ]; then
    "$BIN" gen --customers "$CUSTOMERS" --layout flat --file-format parquet \
        --out "$OUT/c$CUSTOMERS" --format json > /dev/null
fi
exec "$VENV/bin/python" benches/peers/sessionize.py --bin "$BIN" --parquet "$PARQUET"
