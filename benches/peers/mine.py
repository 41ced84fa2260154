"""Times trailmap against DuckDB, chDB and polars on mining tasks over the same Parquet file,
load included for every engine, and checks that they agree on the answers.

Tasks:
  dfg     directly-follows graph over each customer's whole history: count of each transition
          (a -> b). Order: ts, ties by file order (DESIGN.md "Semantics").
  funnel  signup -> trial_start -> purchase within 14 days, ClickHouse windowFunnel default
          mode; the answer is the number of customers reaching each step.

Only ratios from one run count: the machine is shared and noisy. The engines run in turn,
`--repeat` rounds, and each one's best time is kept; the ratios to trailmap are also given
per round (both engines then met the same machine). Peers run in this process; trailmap
runs as a child whose peak RSS is read from its own rusage (os.wait4).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import chdb
import duckdb
import polars as pl
import pyarrow.parquet as pq

STEPS = ["signup", "trial_start", "purchase"]
WINDOW_S = 14 * 86400
WINDOW_US = WINDOW_S * 1_000_000
TIME = "/usr/bin/time"  # GNU time (Debian package `time`), for the child's peak RSS


# --------------------------------------------------------------------------------------------
# trailmap
# --------------------------------------------------------------------------------------------

def run_child(argv):
    """Runs argv; returns (seconds, stdout, peak RSS of that child in bytes).

    The peak RSS comes from GNU time. A child forked from this process would report this
    process's own peak (Linux keeps the high-water mark across exec, and the peers have made
    this process big), so the measuring process must be a small one in between.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        p = subprocess.run([TIME, "-f", "%M", "-o", rss.name, *argv], stdout=out, stderr=err)
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({p.returncode}):\n{err.read().decode()[-2000:]}")
        return elapsed, out.read().decode(), int(rss.read().split()[-1]) * 1024


def transitions_from_json(r):
    """trailmap paths JSON -> {(from, to): count}."""
    return {(t["from"], t["to"]): int(t["count"]) for t in r["transitions"]}


def tm_dfg(binary, parquet):
    t, out, rss = run_child([binary, "paths", "--input", parquet, "--format", "json",
                             "--top-variants", "10", "--dead-letter", os.devnull])
    return t, transitions_from_json(json.loads(out)), rss


def tm_funnel(binary, parquet):
    t, out, rss = run_child([binary, "funnel", "--input", parquet, "--steps", ",".join(STEPS),
                             "--window", "14d", "--format", "json",
                             "--dead-letter", os.devnull])
    r = json.loads(out)
    return t, (int(r["customers"]), tuple(int(s["reached"]) for s in r["steps"])), rss


def tm_sql_funnel(binary, parquet):
    """The same funnel as SQL: window_funnel grouped by customer over the events table."""
    conditions = ", ".join(f"touchpoint = '{s}'" for s in STEPS)
    query = (f"SELECT level, count(*) AS n FROM (SELECT customer, window_funnel({14 * 86400}, '', "
             f"ts, {conditions}) AS level FROM events GROUP BY customer) GROUP BY level")
    t, out, rss = run_child([binary, "sql", "--input", parquet, "--format", "json",
                             "--dead-letter", os.devnull, query])
    levels = {int(r["level"]): int(r["n"]) for r in json.loads(out)}
    reached = tuple(sum(n for lv, n in levels.items() if lv >= k) for k in range(1, len(STEPS) + 1))
    return t, (sum(levels.values()), reached), rss


# --------------------------------------------------------------------------------------------
# DuckDB
# --------------------------------------------------------------------------------------------

DUCK_DFG = """
SELECT touchpoint AS a, nxt AS b, count(*) AS n
FROM (SELECT touchpoint,
             lead(touchpoint) OVER (PARTITION BY customer_id
                                    ORDER BY ts, file_row_number) AS nxt
      FROM read_parquet(?, file_row_number = true))
WHERE nxt IS NOT NULL
GROUP BY ALL
"""

# ClickHouse's default windowFunnel keeps, per step, the chain that reached it last; its first
# timestamps only grow, so (steps distinct, no strict_increase) a customer reaches step k iff
# some chain s1 <= s2 <= ... <= sk (by ts; equal ts allowed since entries sort by (ts, step))
# has sk - s1 <= window. Running maxima give that exactly: for each trial the latest signup at
# or before it; for each purchase the best (latest) such signup over trials at or before it.
DUCK_FUNNEL = f"""
WITH e AS (
    SELECT customer_id, epoch_us(ts) AS t,
           CASE touchpoint WHEN '{STEPS[0]}' THEN 1 WHEN '{STEPS[1]}' THEN 2 ELSE 3 END AS step
    FROM read_parquet($p)
    WHERE touchpoint IN ('{STEPS[0]}', '{STEPS[1]}', '{STEPS[2]}')
), a AS (
    SELECT *, max(CASE WHEN step = 1 THEN t END) OVER w AS s1
    FROM e WINDOW w AS (PARTITION BY customer_id ORDER BY t, step ROWS UNBOUNDED PRECEDING)
), b AS (
    SELECT *, max(CASE WHEN step = 2 AND t - s1 <= {WINDOW_US} THEN s1 END) OVER w AS s2
    FROM a WINDOW w AS (PARTITION BY customer_id ORDER BY t, step ROWS UNBOUNDED PRECEDING)
), lv AS (
    SELECT customer_id,
           max(CASE WHEN step = 1 THEN 1
                    WHEN step = 2 AND t - s1 <= {WINDOW_US} THEN 2
                    WHEN step = 3 AND t - s2 <= {WINDOW_US} THEN 3
                    ELSE 0 END) AS level
    FROM b GROUP BY customer_id
)
SELECT (SELECT count(DISTINCT customer_id) FROM read_parquet($p)),
       count(*) FILTER (level >= 1), count(*) FILTER (level >= 2), count(*) FILTER (level >= 3)
FROM lv
"""


def duck_dfg(parquet):
    con = duckdb.connect()
    start = time.perf_counter()
    rows = con.execute(DUCK_DFG, [parquet]).fetchall()
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed, {(a, b): int(n) for a, b, n in rows}


def duck_funnel(parquet):
    con = duckdb.connect()
    start = time.perf_counter()
    row = con.execute(DUCK_FUNNEL, {"p": parquet}).fetchone()
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed, (int(row[0]), tuple(int(x) for x in row[1:]))


# --------------------------------------------------------------------------------------------
# chDB (embedded ClickHouse)
# --------------------------------------------------------------------------------------------

# _row_number is the row's position in the file: the tie breaker for equal timestamps.
CH_DFG = """
SELECT p.1, p.2, count()
FROM (SELECT arraySort((x, k) -> k, groupArray(touchpoint), groupArray((ts, _row_number))) AS tp
      FROM file('{p}', Parquet) GROUP BY customer_id)
ARRAY JOIN arrayZip(arrayPopBack(tp), arrayPopFront(tp)) AS p
GROUP BY p.1, p.2
"""

CH_FUNNEL = f"""
SELECT level, count()
FROM (SELECT windowFunnel({WINDOW_US})(toUInt64(toUnixTimestamp64Micro(ts)),
             touchpoint = '{STEPS[0]}', touchpoint = '{STEPS[1]}', touchpoint = '{STEPS[2]}')
             AS level
      FROM file('{{p}}', Parquet) GROUP BY customer_id)
GROUP BY level
"""


def ch_rows(sql):
    return [line.split("\t") for line in chdb.query(sql, "TabSeparated").data().splitlines()]


def ch_dfg(parquet):
    start = time.perf_counter()
    rows = ch_rows(CH_DFG.format(p=parquet))
    elapsed = time.perf_counter() - start
    return elapsed, {(a, b): int(n) for a, b, n in rows}


def ch_funnel(parquet):
    start = time.perf_counter()
    rows = ch_rows(CH_FUNNEL.format(p=parquet))
    elapsed = time.perf_counter() - start
    levels = {int(lv): int(n) for lv, n in rows}
    reached = tuple(sum(n for lv, n in levels.items() if lv >= k) for k in range(1, len(STEPS) + 1))
    return elapsed, (sum(levels.values()), reached)


# --------------------------------------------------------------------------------------------
# polars
# --------------------------------------------------------------------------------------------

def polars_dfg(parquet):
    start = time.perf_counter()
    df = (pl.scan_parquet(parquet)
          .select("customer_id", "ts", "touchpoint")
          .sort("customer_id", "ts", maintain_order=True)   # stable: ties keep file order
          .with_columns(nxt=pl.col("touchpoint").shift(-1),
                        same=pl.col("customer_id") == pl.col("customer_id").shift(-1))
          .filter(pl.col("same"))
          .group_by("touchpoint", "nxt").len()
          .collect())
    elapsed = time.perf_counter() - start
    return elapsed, {(a, b): int(n) for a, b, n in df.iter_rows()}


# --------------------------------------------------------------------------------------------

def in_turn(fns, repeat):
    """Runs every engine once per round, in turn, for `repeat` rounds: the machine's speed
    drifts by tens of percent within a minute, and running one engine's repeats and then
    the next's let the drift decide the ratio. Each engine's runs, in round order."""
    runs = {eng: [] for eng in fns}
    for _ in range(repeat):
        for eng, fn in fns.items():
            runs[eng].append(fn())
    return runs


def best_of(runs):
    best = min(runs, key=lambda r: r[0])
    return best[0], runs[0][1], (max(r[2] for r in runs) if len(runs[0]) > 2 else None)


def describe_dfg_diff(a, b):
    keys = set(a) | set(b)
    diff = [(k, a.get(k), b.get(k)) for k in sorted(keys, key=str) if a.get(k) != b.get(k)]
    return f"{len(diff)} transitions differ, e.g. {diff[:3]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="trailmap binary; without it only the peers run")
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tasks", default="dfg,funnel")
    ap.add_argument("--engines", default="trailmap,trailmap-sql,duckdb,chdb,polars")
    a = ap.parse_args()
    tasks, engines = a.tasks.split(","), a.engines.split(",")
    if not a.bin:
        engines = [e for e in engines if not e.startswith("trailmap")]

    meta = pq.ParquetFile(a.parquet).metadata
    events = meta.num_rows
    arrow = pq.read_table(a.parquet, columns=["customer_id", "ts", "touchpoint"])
    arrow_bytes = arrow.nbytes
    del arrow
    ties = duckdb.connect().execute(f"SELECT count(*) FROM (SELECT 1 FROM read_parquet('{a.parquet}') "
                      f"GROUP BY customer_id, ts HAVING count(*) > 1)").fetchone()[0]
    ch_version = chdb.query("SELECT version()", "CSV").data().strip().strip('"')
    print(f"input: {a.parquet} ({os.path.getsize(a.parquet) / 1e6:,.0f} MB), {events:,} events, "
          f"{ties:,} (customer, ts) pairs shared by several events")
    print(f"peers: duckdb {duckdb.__version__}, chdb {chdb.__version__} (ClickHouse "
          f"{ch_version}), polars {pl.__version__}; "
          f"in turn, best of {a.repeat}, load included")

    plan = {
        "dfg": {"trailmap": lambda: tm_dfg(a.bin, a.parquet), "duckdb": lambda: duck_dfg(a.parquet),
                "chdb": lambda: ch_dfg(a.parquet), "polars": lambda: polars_dfg(a.parquet)},
        "funnel": {"trailmap": lambda: tm_funnel(a.bin, a.parquet),
                   "trailmap-sql": lambda: tm_sql_funnel(a.bin, a.parquet),
                   "duckdb": lambda: duck_funnel(a.parquet), "chdb": lambda: ch_funnel(a.parquet)},
    }
    table, ok, rss_rows, paired = [], True, [], {}
    for task in tasks:
        results = {}
        runs = in_turn({eng: plan[task][eng] for eng in engines if eng in plan[task]}, a.repeat)
        for eng, eng_runs in runs.items():
            t, ans, rss = best_of(eng_runs)
            results[eng] = (t, ans)
            if rss is not None:
                rss_rows.append((task, eng, rss))
        if "trailmap" in runs:
            for eng, eng_runs in runs.items():
                paired[(task, eng)] = [r[0] / tm[0] for r, tm in zip(eng_runs, runs["trailmap"])]
        base_name = "trailmap" if "trailmap" in results else next(iter(results))
        t_base, ans_base = results[base_name]
        for eng, (t, ans) in results.items():
            if eng == base_name:
                agree = "reference"
            elif ans == ans_base:
                agree = "agree"
            else:
                ok = False
                agree = ("DISAGREE: " + (describe_dfg_diff(ans_base, ans) if task == "dfg"
                                         else f"{base_name} {ans_base} vs {eng} {ans}"))
            table.append((task, eng, t, events / t, t / t_base, agree))
        if task == "dfg":
            print(f"dfg: {len(ans_base)} transitions summing to {sum(ans_base.values()):,}")
        else:
            print(f"funnel {' -> '.join(STEPS)} within 14d: customers, reached = {ans_base}")

    print(f"\n{'task':<7} {'engine':<12} {'seconds':>8} {'events/s':>13} "
          f"{'ratio':>7}  answers (ratio = this time / {'trailmap' if a.bin else 'first'} time)")
    for task, eng, t, eps, ratio, agree in table:
        print(f"{task:<7} {eng:<12} {t:>8.2f} {eps:>13,.0f} {ratio:>6.2f}x  {agree}")

    by = {(task, eng): t for task, eng, t, *_ in table}
    if a.bin:
        for task, peer in (("funnel", "chdb"), ("dfg", "duckdb")):
            if (task, "trailmap") in by and (task, peer) in by:
                r = by[(task, peer)] / by[(task, "trailmap")]
                print(f"target {task}: {peer} time / trailmap time = {r:.2f} (target >= 3): "
                      f"{'met' if r >= 3 else 'NOT met'}")
                # The same ratio within each round, where both engines met the same machine.
                rounds = sorted(paired[(task, peer)])
                print(f"  per round ({len(rounds)}): median {statistics.median(rounds):.2f}, "
                      f"{rounds[0]:.2f} to {rounds[-1]:.2f}")
        if ("funnel", "trailmap-sql") in by and ("funnel", "trailmap") in by:
            sql = by[("funnel", "trailmap-sql")]
            r = sql / by[("funnel", "trailmap")]
            print(f"target sql: window_funnel time / trailmap funnel time = {r:.2f} "
                  f"(target <= 1.5): {'met' if r <= 1.5 else 'NOT met'}")
            if ("funnel", "chdb") in by:
                r = by[("funnel", "chdb")] / sql
                print(f"target sql: chdb time / window_funnel time = {r:.2f} (target >= 2): "
                      f"{'met' if r >= 2 else 'NOT met'}")
    print(f"\nArrow size of the columns trailmap reads (customer_id, ts, touchpoint): "
          f"{arrow_bytes / 2**20:,.0f} MiB")
    for task, eng, rss in rss_rows:
        print(f"{eng} {task}: peak RSS {rss / 2**20:,.0f} MiB = {rss / arrow_bytes:.2f}x "
              f"the Arrow size (target <= 1.5x)")
    if not ok:
        sys.exit(1)
    print("all answers agree")


if __name__ == "__main__":
    main()
