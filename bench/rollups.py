"""Benchmark of the signals rollups: the first refresh of a fleet's history and an incremental
refresh after it.

Generates, in SQL (generate_series), ``--assets`` compressors × ``--days`` days of hourly
readings of the simulator's 15 metrics (two or three decimals, as the simulator rounds them),
written asset by asset as the demo's ingester writes them, then times ``refresh_rollups`` on
them (the first refresh reads everything), then adds an hour of readings for every asset plus
a late second reading into 10 % of the last day's buckets and times the incremental refresh.
Prints figures (``--json``: one JSON document); never fails on a target.

    .venv/bin/python bench/rollups.py                  # the demo's size: 150 × 730 days
    .venv/bin/python bench/rollups.py --days 90 --json
"""

# Run as a script, this folder comes first on sys.path, so it is dropped before the project
# is imported (see bench/README.md).
# ruff: noqa: E402

from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
_ROOT = _BENCH_DIR.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse
import json
import os
import time
import uuid
from typing import Any

import psycopg

from core.db import drop_database, ensure_database, with_database
from core.migrate import migrate
from signals.rollups import refresh_rollups

TARGET_FIRST_S = 90.0
START = "2024-01-01T00:00:00Z"

_READINGS = """
SELECT 'c-' || lpad(a::text, 5, '0') AS asset_id, t AS time, t AS received_at,
       jsonb_build_object(
         'load_pct', round((l * 100)::numeric, 2),
         'pressure_bar', round((7.5 - 0.4 * l + random() * 0.1)::numeric, 3),
         'flow_m3_min', round((l * 20)::numeric, 3),
         'power_kw', round((20 + l * 90)::numeric, 2),
         'energy_kwh', round((h * 80)::numeric, 2),
         'running_hours', round((h * 0.8)::numeric, 3),
         'loaded_hours', round((h * 0.6)::numeric, 3),
         'oil_temp_c', round((70 + l * 15 + random())::numeric, 2),
         'discharge_temp_c', round((80 + l * 18 + random())::numeric, 2),
         'vibration_mm_s', round((1.5 + random() * 0.5)::numeric, 2),
         'oil_filter_dp_bar', round((0.25 + (h %% 2000) / 2000.0)::numeric, 3),
         'air_filter_dp_mbar', round((18 + (h %% 3000) / 60.0)::numeric, 2),
         'separator_dp_bar', round((0.15 + (h %% 4000) / 6000.0)::numeric, 3),
         'ambient_temp_c', round((15 + 8 * sin(h / 24.0 * 6.283))::numeric, 2),
         'starts', h / 10) AS metrics
FROM generate_series(1, %(assets)s) a,
     LATERAL (SELECT t, extract(epoch FROM t - %(start)s::timestamptz)::int / 3600 AS h,
                     greatest(0, least(1, 0.5 + 0.4 * sin(extract(hour FROM t) / 3.8)
                                          + random() * 0.2 - 0.1)) AS l
              FROM generate_series(%(from)s::timestamptz, %(to)s::timestamptz,
                                   INTERVAL '1 hour') t) s
"""
# ingested a minute after the reading, as a connected fleet's history is
_GENERATE = f"""
INSERT INTO telemetry (asset_id, time, received_at, metrics, ingested_at)
SELECT r.*, r.time + INTERVAL '1 minute' FROM ({_READINGS}) r ORDER BY 1, 2
"""
# An hour more for every asset, and a late second reading in 10 % of the last day's buckets.
_MORE = f"""
INSERT INTO telemetry (asset_id, time, received_at, metrics)
{_READINGS}
UNION ALL
SELECT asset_id, time + INTERVAL '30 minutes', time, metrics FROM telemetry
WHERE time >= %(from)s::timestamptz - INTERVAL '1 day' AND random() < 0.1
"""


def _cpu_s(pid: int) -> float | None:
    """CPU seconds of a local process (the PostgreSQL backend), None when not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed_refresh(conn: psycopg.Connection[Any]) -> tuple[Any, float, float | None]:
    pid = conn.info.backend_pid
    cpu = _cpu_s(pid)
    started = time.perf_counter()
    result = refresh_rollups(conn)
    seconds = time.perf_counter() - started
    after = _cpu_s(pid)
    return result, seconds, (after - cpu) if cpu is not None and after is not None else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = with_database(args.database_url, f"bw_bench_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    hours = args.days * 24
    params = {"assets": args.assets, "start": START, "from": START}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, ("core", "ingest", "signals"), "off")
            print("generating ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            conn.execute("SELECT setseed(0.17)")
            end = conn.execute(
                "SELECT %s::timestamptz + make_interval(hours => %s)", (START, hours - 1)
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(_GENERATE.encode(), {**params, "to": end})
            conn.execute("VACUUM ANALYZE telemetry")
            conn.execute("CHECKPOINT")  # write the generated pages out now, not during the refresh
            generate_s = time.perf_counter() - started
            readings = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]  # type: ignore[index]
            telemetry_bytes = conn.execute("SELECT pg_total_relation_size('telemetry')").fetchone()[
                0
            ]  # type: ignore[index]
        with psycopg.connect(url) as conn:
            print("first refresh ...", file=sys.stderr, flush=True)
            load_before = os.getloadavg()[0]
            first, first_s, first_cpu = _timed_refresh(conn)
            load_first = os.getloadavg()[0]
            sizes = conn.execute(
                "SELECT pg_total_relation_size('rollup_hourly'),"
                " pg_total_relation_size('rollup_daily')"
            ).fetchone()
            assert sizes is not None
            after = conn.execute("SELECT max(time) + INTERVAL '1 hour' FROM telemetry").fetchone()
            assert after is not None
            conn.execute("SELECT setseed(0.18)")
            added = conn.execute(
                _MORE.encode(), {**params, "from": after[0], "to": after[0]}
            ).rowcount
            conn.commit()
            print("incremental refresh ...", file=sys.stderr, flush=True)
            incremental, incremental_s, incremental_cpu = _timed_refresh(conn)
    finally:
        if args.keep:
            print(f"kept database {url}", file=sys.stderr)
        else:
            drop_database(url)
    return {
        "assets": args.assets,
        "days": args.days,
        "readings": readings,
        "telemetry_bytes": telemetry_bytes,
        "generate_seconds": round(generate_s, 1),
        "first_refresh": {
            "seconds": round(first_s, 1),
            "backend_cpu_seconds": round(first_cpu, 1) if first_cpu is not None else None,
            "readings_per_second": round(readings / first_s),
            "hourly_rows": first.hourly_rows,
            "daily_rows": first.daily_rows,
            "target_seconds": TARGET_FIRST_S,
        },
        "incremental_refresh": {
            "readings_added": added,
            "seconds": round(incremental_s, 2),
            "backend_cpu_seconds": (
                round(incremental_cpu, 2) if incremental_cpu is not None else None
            ),
            "buckets": incremental.buckets,
            "hourly_rows": incremental.hourly_rows,
            "daily_rows": incremental.daily_rows,
        },
        "rollup_bytes": {"hourly": sizes[0], "daily": sizes[1]},
        "load_average_1min": {"before": load_before, "after_first_refresh": load_first},
    }


def _text(d: dict[str, Any]) -> str:
    first, inc = d["first_refresh"], d["incremental_refresh"]
    load = d["load_average_1min"]
    mb = 1024 * 1024
    return "\n".join(
        [
            f"rollups bench: {d['assets']:,} assets × {d['days']} days = {d['readings']:,} hourly "
            f"readings ({d['telemetry_bytes'] / mb:,.0f} MB), generated in "
            f"{d['generate_seconds']} s",
            f"  first refresh        {first['seconds']:>8.1f} s  (target < "
            f"{first['target_seconds']:.0f} s): {first['readings_per_second']:,} readings/s, "
            f"backend CPU {first['backend_cpu_seconds']} s; {first['hourly_rows']:,} hourly and "
            f"{first['daily_rows']:,} daily rows "
            f"({d['rollup_bytes']['hourly'] / mb:,.0f} MB + "
            f"{d['rollup_bytes']['daily'] / mb:,.0f} MB)",
            f"  incremental refresh  {inc['seconds']:>8.2f} s: {inc['readings_added']:,} readings "
            f"added (an hour of every asset, late readings in 10 % of the last day's buckets), "
            f"{inc['buckets']:,} buckets, {inc['daily_rows']:,} days recomputed",
            f"  load average (1 min) {load['before']:.2f} before, "
            f"{load['after_first_refresh']:.2f} after the first refresh",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=150)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--keep", action="store_true", help="keep the database (to inspect it)")
    args = parser.parse_args()
    document = run(args)
    print(json.dumps(document, indent=2) if args.json else _text(document))


if __name__ == "__main__":
    main()
