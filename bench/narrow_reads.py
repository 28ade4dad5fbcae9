"""Probe: a rule reading the narrow rollup rows directly against reading the jsonb shape.

On TimescaleDB the hourly rollup is the narrow continuous aggregate ``rollup_hourly_metric``
(one row per asset, bucket and metric); the rules read ``rollup_hourly``, the plain tables'
shape (a jsonb ``stats`` per bucket, which signals/migrations/007 materializes as a second
continuous aggregate on the narrow one), and take two or three figures back out of the JSON.
This probe times the capacity rule's statement (``signals.rules._CAPACITY``: 28 days of hourly
rows, three metrics) as it is, against two statements reading the three metrics' rows of the
narrow aggregate instead (pivoted back to one row per asset and hour, or grouped by hour and
account at once), checks that they return the same rows, and prints the times of ``--rounds``
alternations. It needs a database that ``bench/score.py --engine timescale
--keep`` made; it changes nothing in it.

    .venv/bin/python bench/score.py --engine timescale --assets 1000 --days 180 --keep
    .venv/bin/python bench/narrow_reads.py \\
        --database-url postgresql://postgres@127.0.0.1:5433/bw_bench_score_timescale_1000_180
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import psycopg
from psycopg import sql

from signals import rules

# The inner subquery of rules._CAPACITY (rollup_hourly's JSON), replaced by one reading the
# narrow rows: the three metrics' rows of each (asset, bucket) in the window, pivoted by a
# grouped FILTER.
_VIEW_PART = rules._CAPACITY[
    rules._CAPACITY.index("        SELECT a.account_id, r.bucket") : rules._CAPACITY.index(
        "    ) readings"
    )
]
_NARROW_PART = """        SELECT a.account_id, m.bucket, a.rated_flow_m3_min AS rated,
               max(m.mean) FILTER (WHERE m.metric = 'flow_m3_min') AS flow,
               max(m.mean) FILTER (WHERE m.metric = 'load_pct') AS load,
               max(m.minimum) FILTER (WHERE m.metric = 'pressure_bar') AS pressure
        FROM rollup_hourly_metric m JOIN assets a USING (asset_id)
        WHERE m.bucket >= %(as_of)s - make_interval(days => %(recent)s)
          AND m.bucket <= %(as_of)s - INTERVAL '1 hour'
          AND a.rated_flow_m3_min IS NOT NULL
          AND m.metric IN ('flow_m3_min', 'load_pct', 'pressure_bar')
        GROUP BY a.account_id, m.asset_id, m.bucket, a.rated_flow_m3_min
        HAVING count(*) FILTER (WHERE m.metric = 'flow_m3_min') > 0
        ORDER BY m.bucket
        OFFSET 0
"""
_NARROW = rules._CAPACITY.replace(_VIEW_PART, _NARROW_PART)
# The same, grouped once by (bucket, account) straight from the narrow rows, without the pivot
# per asset: equal to the rule when every machine reports the three metrics in each hour it
# reports flow (true of the generated fleet; the rows are compared below).
_GROUPED = sql.SQL("""
WITH hourly AS (
    SELECT a.account_id, m.bucket,
           sum(m.mean) FILTER (WHERE m.metric = 'flow_m3_min') AS flow,
           (sum(a.rated_flow_m3_min) FILTER (WHERE m.metric = 'flow_m3_min'))::double precision
               AS capacity,
           min(m.mean) FILTER (WHERE m.metric = 'load_pct') AS min_load,
           min(m.minimum) FILTER (WHERE m.metric = 'pressure_bar') AS min_pressure,
           count(*) FILTER (WHERE m.metric = 'flow_m3_min') AS machines
    FROM rollup_hourly_metric m JOIN assets a USING (asset_id)
    WHERE m.bucket >= %(as_of)s - make_interval(days => %(recent)s)
      AND m.bucket <= %(as_of)s - INTERVAL '1 hour'
      AND a.rated_flow_m3_min IS NOT NULL
      AND m.metric IN ('flow_m3_min', 'load_pct', 'pressure_bar')
    GROUP BY m.bucket, a.account_id
    HAVING count(*) FILTER (WHERE m.metric = 'flow_m3_min') > 0
""") + sql.SQL(rules._CAPACITY[rules._CAPACITY.index(")\nSELECT account_id") :])
_STATEMENTS: dict[str, sql.SQL | sql.Composed] = {
    "jsonb": sql.SQL(rules._CAPACITY),
    "narrow_pivot": sql.SQL(_NARROW),
    "narrow_grouped": _GROUPED,
}
_TEXT = {
    "jsonb": "rollup_hourly (jsonb stats, the rule as it is)",
    "narrow_pivot": "rollup_hourly_metric, pivoted per asset and hour",
    "narrow_grouped": "rollup_hourly_metric, grouped by hour and account at once",
}


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal rows, floats to 12 significant digits (sums taken in another order)."""
    if len(a) != len(b):
        return False
    for x, y in zip(sorted(a), sorted(b), strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and isinstance(v, float):
                if not math.isclose(u, v, rel_tol=1e-12, abs_tol=1e-12):
                    return False
            elif u != v:
                return False
    return True


def run(args: argparse.Namespace) -> dict[str, Any]:
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT max(bucket) + INTERVAL '1 hour', (SELECT count(*) FROM assets)"
            " FROM rollup_hourly_metric"
        ).fetchone()
        assert row is not None
        as_of, assets = row
        params = {
            "as_of": as_of,
            "recent": rules.RECENT_DAYS,
            "saturated": rules.SATURATED_LOAD_PCT,
            "sag": rules.SAG_PRESSURE_BAR,
            "idle": rules.IDLE_LOAD_SHARE,
        }
        seconds: dict[str, list[float]] = {name: [] for name in _STATEMENTS}
        results: dict[str, list[tuple[Any, ...]]] = {}
        load_before = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name, query in _STATEMENTS.items():
                started = time.perf_counter()
                results[name] = conn.execute(query, params).fetchall()
                seconds[name].append(round(time.perf_counter() - started, 2))
        load_after = os.getloadavg()[0]
    return {
        "database": args.database_url,
        "assets": assets,
        "as_of": as_of.isoformat(),
        "statement": "signals.rules._CAPACITY (28 days of hourly rows, 3 metrics)",
        "seconds": seconds,
        "rows": len(results["jsonb"]),
        "same_rows": {name: _same(results["jsonb"], rows) for name, rows in results.items()},
        "load_average_1min": {"before": load_before, "after": load_after},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", required=True, help="a database bench/score.py --engine timescale kept"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two (3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    d = run(args)
    if args.json:
        print(json.dumps(d, indent=2))
        return
    lines = [
        f"capacity statement on {d['assets']:,} assets as of {d['as_of']}: {d['rows']:,} rows",
        *(
            f"  {_TEXT[name]:<58} {times} s, same rows: {d['same_rows'][name]}"
            for name, times in d["seconds"].items()
        ),
        f"  load average (1 min) {d['load_average_1min']['before']:.2f} before, "
        f"{d['load_average_1min']['after']:.2f} after",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
