"""Times trailmap and DuckDB sessionizing the same Parquet file (30-minute gap, no maximum
session length), load included for both, and checks that they agree on the answer.

Only ratios from one run count: the machine is shared and noisy. Each engine runs
`--repeat` times and the best time is kept.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import duckdb

GAP_MINUTES = 30


def trailmap(binary, parquet):
    start = time.perf_counter()
    out = subprocess.run(
        [binary, "sessions", "--input", parquet, "--gap", f"{GAP_MINUTES}m",
         "--max-duration", "0", "--format", "json", "--dead-letter", os.devnull],
        check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    r = json.loads(out.stdout)
    return elapsed, (r["events"], r["customers"], r["sessions"])


DUCKDB_SQL = f"""
WITH g AS (
    SELECT customer_id, ts,
           lag(ts) OVER (PARTITION BY customer_id ORDER BY ts) AS prev
    FROM read_parquet(?)
)
SELECT count(*) AS events,
       count(DISTINCT customer_id) AS customers,
       sum(CASE WHEN prev IS NULL OR ts - prev > INTERVAL {GAP_MINUTES} MINUTE
                THEN 1 ELSE 0 END) AS sessions
FROM g
"""


def duck(parquet):
    con = duckdb.connect()
    start = time.perf_counter()
    row = con.execute(DUCKDB_SQL, [parquet]).fetchone()
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed, tuple(int(x) for x in row)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    results = {}
    for name, fn in [("trailmap", lambda: trailmap(a.bin, a.parquet)),
                     ("duckdb", lambda: duck(a.parquet))]:
        runs = [fn() for _ in range(a.repeat)]
        results[name] = (min(t for t, _ in runs), runs[0][1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    (t_tm, ans_tm), (t_dd, ans_dd) = results["trailmap"], results["duckdb"]
    events = ans_tm[0]
    print(f"input: {a.parquet} ({os.path.getsize(a.parquet) / 1e6:.0f} MB), "
          f"{events:,} events, {ans_tm[1]:,} customers, {ans_tm[2]:,} sessions")
    print(f"duckdb {duckdb.__version__}, best of {a.repeat}, load included")
    print(f"{'engine':<10} {'seconds':>8} {'events/s':>14}")
    for name, (t, _) in results.items():
        print(f"{name:<10} {t:>8.2f} {events / t:>14,.0f}")
    print(f"ratio trailmap/duckdb: {t_dd / t_tm:.2f}x  (target >= 3x)")
    print(f"trailmap peak RSS: {peak_mb:,.0f} MB")
    if ans_tm != ans_dd:
        print(f"DISAGREE: trailmap {ans_tm} vs duckdb {ans_dd}", file=sys.stderr)
        sys.exit(1)
    print("answers agree (events, customers, sessions)")


if __name__ == "__main__":
    main()
