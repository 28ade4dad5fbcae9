"""Benchmark of a full scoring pass: every signal family over a large fleet's rollups.

Runs on either engine: ``--engine plain`` (a database migrated with BASEWATCH_TIMESCALE=off:
the rollups are the tables ``rollup_hourly`` / ``rollup_daily`` with a jsonb ``stats`` per
bucket) or ``--engine timescale`` (TimescaleDB: the rollups are the continuous aggregates
``rollup_hourly_metric`` / ``rollup_daily_metric``, one row per asset, bucket and metric, read
through the views ``rollup_hourly`` / ``rollup_daily`` of the plain tables' shape).

Generates, in SQL (generate_series), the registry (``--assets`` compressors in accounts of 1-5
machines, 50 CSMs, four components per machine, service events) and ``--days`` days of hourly
values: nine metrics per hour (load, pressure, flow, power, the counters running_hours and
energy_kwh, the air and oil filter differential pressures, discharge temperature), one
production shift a day. One account in fifty of each kind has a story the signals should find
(usage decline and growth, a silent machine, saturation with pressure sag, leaks,
round-the-clock running without heat recovery, a fixed-speed machine at part load, a clogging
air filter, an oil filter replaced without a service order, an oil filter replaced with one, a
machine running hot).

How the values become rollups depends on the engine:

* plain PostgreSQL: written straight into ``rollup_hourly`` (``[v, v, v, v, 1]`` per metric:
  one reading an hour) in time order, as hourly refreshes write them, and ``rollup_daily``
  derived from them as ``signals.rollups`` derives days; scoring reads only rollups, so no
  telemetry is written (the refresh is measured by ``bench/rollups.py``).
* TimescaleDB: the rollups are views, so nothing can be inserted into them. The values are
  written into ``telemetry`` instead (one reading at the top of each hour, in time order, as
  the ingester writes them) and ``signals.rollups.refresh_rollups`` materializes both
  aggregates; then, unless ``--no-compress``, the chunks older than 7 days before the end of
  the data are compressed (telemetry and both aggregates: what the default compression policy,
  BASEWATCH_COMPRESS_AFTER_DAYS = 7, would have done), so scoring reads what it reads in
  production. Inserting into the aggregates' materialized hypertables would be faster but not
  honest: it bypasses the aggregates' definition (the figures would be the bench's, not
  TimescaleDB's), leaves their watermark and invalidation state unlike any real database, and
  TimescaleDB does not support writing to them. The figures are the same as on the plain path
  (one reading per hour: mean = minimum = maximum = last = the value; days as above).

Then it trains the models (``signals.scoring.train_models``) and runs ``signals.scoring.score``
once as of the end of the data, timing every function ``score`` calls (rule families and the
model-backed detectors registered in ``signals.scoring.detectors()``), and reports the disk of
the rollups (``core.db.table_bytes``: a hypertable's or an aggregate's chunks, compressed ones
included), the peak RSS of this process and of the PostgreSQL backend (``VmHWM`` of
``pg_backend_pid()``, which counts the shared buffers the backend touched), and the findings
per kind. Prints figures (``--json``: one JSON document); never fails on a target.

    .venv/bin/python bench/score.py                              # plain, 10,000 assets × 180 days
    .venv/bin/python bench/score.py --engine timescale --assets 1000 --days 180
    .venv/bin/python bench/score.py --assets 1000 --days 60 --json
    .venv/bin/python bench/score.py --keep     # keep bw_bench_score_<engine>_<assets>_<days> ...
    .venv/bin/python bench/score.py --reuse    # ... and score it again without generating
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

import signals.scoring as scoring
from basewatch.wiring import PACKAGES
from core.db import drop_database, ensure_database, table_bytes, with_database
from core.migrate import migrate
from signals.rollups import refresh_rollups

ENGINES = {  # engine -> (default server, core.migrate timescale mode)
    "plain": ("postgresql://postgres@127.0.0.1:5432/postgres", "off"),
    "timescale": ("postgresql://postgres@127.0.0.1:5433/postgres", "on"),
}
TARGET_SCORE_S = {"plain": 60.0, "timescale": 30.0}  # issue 10, at 10,000 assets × 180 days
COMPRESS_AFTER = dt.timedelta(days=7)  # the default BASEWATCH_COMPRESS_AFTER_DAYS
TARGET_RSS_BYTES = 2 * 1024**3
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
STORIES = {
    1: "usage_decline",
    2: "usage_growth",
    3: "silent_assets",
    4: "capacity_saturation",
    5: "leaks",
    6: "heat_recovery",
    7: "fixed_speed",
    8: "air_filter_due",
    9: "third_party_oil_filter",
    10: "serviced_oil_filter",
    11: "running_hot",
}

# One row per asset: its account, story and parameters. Accounts hold 1-5 assets.
_PLAN = [
    "SELECT setseed(0.42)",
    "INSERT INTO csms (csm_id, name, email) SELECT 'csm-' || i, 'CSM ' || i,"
    " 'csm' || i || '@example.com' FROM generate_series(1, 50) i",
    """
    CREATE UNLOGGED TABLE bench_plan AS
    WITH sizes AS (
        SELECT k, 1 + (k * 7 + k / 3) %% 5 AS size FROM generate_series(1, %(assets)s) k
    ), accounts AS (
        SELECT k, size, sum(size) OVER (ORDER BY k) - size AS first FROM sizes
    )
    SELECT 'b-' || lpad(k::text, 5, '0') || '-c' || n AS asset_id,
           'b-' || lpad(k::text, 5, '0') AS account_id, k, n,
           CASE WHEN k %% 50 BETWEEN 1 AND 11 THEN k %% 50 ELSE 0 END AS story,
           (ARRAY[11.2, 16.5, 21.0, 30.8])[1 + (k + n) %% 4] AS rated_flow,
           (ARRAY[55, 75, 110, 160])[1 + (k + n) %% 4] AS rated_power,
           0.55 + random() * 0.2 AS base_load,
           20000 + random() * 20000 AS hours0,
           30 + random() * 15 AS air0, 0.4 + random() * 0.2 AS oil0, 0.3 + random() * 0.2 AS sep0
    FROM accounts, generate_series(1, size) n
    WHERE first + n <= %(assets)s
    """,
    """
    INSERT INTO accounts (account_id, name, industry, region, csm_id)
    SELECT DISTINCT account_id, 'Bench account ' || k,
           (ARRAY['food', 'auto', 'pharma', 'metal', 'chemicals'])[1 + k %% 5],
           (ARRAY['north', 'south', 'east', 'west'])[1 + (k / 5) %% 4], 'csm-' || (1 + k %% 50)
    FROM bench_plan
    """,
    """
    INSERT INTO assets (asset_id, account_id, serial, model, rated_power_kw, rated_flow_m3_min,
                        installed_on)
    SELECT asset_id, account_id, 'SN' || k || n, 'GA' || rated_power || ' VSD', rated_power,
           rated_flow, DATE '2019-06-01'
    FROM bench_plan
    """,
    # a maintenance contract per account, ending within the year after the data (renewals)
    """
    INSERT INTO contracts (contract_id, account_id, product_line, kind, currency, start_date,
                           end_date, billing_period, fee, renewal, notice_days)
    SELECT account_id || '-maint', account_id, 'maintenance', 'fixed', 'EUR', DATE '2023-01-01',
           (%(start)s::date + %(days)s + 1 + (k * 37) %% 365)::date, 'month',
           180 * count(*), CASE WHEN k %% 3 = 0 THEN 'manual' ELSE 'auto' END, 90
    FROM bench_plan GROUP BY account_id, k
    """,
    # components: installed some hundreds of running hours before the data starts
    """
    INSERT INTO components (asset_id, kind, rated_life_hours, installed_at_running_hours)
    SELECT asset_id, kind, life, greatest(0, hours0 - life * (0.05 + 0.3 * random()))
    FROM bench_plan,
         (VALUES ('air_filter', 4000), ('oil_filter', 4000), ('separator', 8000),
                 ('oil', 8000)) AS c(kind, life)
    """,
    # the serviced oil filter of story 10: a service order on the day its indicator resets
    """
    INSERT INTO asset_events (asset_id, time, kind, component, received_at)
    SELECT asset_id, %(start)s::timestamptz + make_interval(days => %(days)s - 20, hours => 9),
           'component_replaced', 'oil_filter', now()
    FROM bench_plan WHERE story = 10
    """,
]
# The hourly values. Production runs 06:00-16:00 (round the clock for story 6); idle hours
# have a little flow (leaks: story 5, a lot). The counters are closed forms of the schedule.
_VALUES = """
CREATE UNLOGGED TABLE bench_values AS
SELECT p.asset_id, %(start)s::timestamptz + make_interval(hours => h) AS bucket, h,
       h %% 24 = 23 OR h = %(hours)s - 73 AND p.story = 3 AND p.n = 1 AS last_of_day,
       round((l * 100)::numeric, 2) AS load_pct,
       round((CASE WHEN p.story = 4 AND recent AND on_shift AND random() < 0.5 THEN 6.9
                   ELSE 7.5 - 0.3 * l END + random() * 0.05)::numeric, 3) AS pressure_bar,
       round((CASE WHEN on_shift THEN l
                   ELSE CASE WHEN p.story = 5 THEN 0.15 ELSE 0.02 END END
              * p.rated_flow)::numeric, 3) AS flow_m3_min,
       round((p.rated_power * CASE WHEN p.story = 7 THEN 0.35 + 0.65 * l
                                   ELSE 0.05 + 0.95 * l END)::numeric, 2) AS power_kw,
       round((p.hours0 + running)::numeric, 2) AS running_hours,
       round((p.hours0 * p.rated_power * 0.5 + running * p.rated_power * 0.6)::numeric, 1)
           AS energy_kwh,
       round((CASE WHEN p.story = 8 THEN 38 + 0.16 * d + random() * 2
                   ELSE (p.air0 + 0.04 * d) * (0.6 + 0.4 * l) + random() * 2 END)::numeric, 2)
           AS air_filter_dp_mbar,
       round((CASE WHEN p.story IN (9, 10) AND d >= %(days)s - 20
                   THEN 0.3 + 0.004 * (d - %(days)s + 20)
                   WHEN p.story IN (9, 10) THEN 0.9 + 0.002 * d
                   ELSE p.oil0 + 0.001 * d END * (0.6 + 0.4 * l) + random() * 0.05)::numeric, 3)
           AS oil_filter_dp_bar,
       round((80 + 18 * l + random() + CASE WHEN p.story = 11 AND h >= %(hours)s - 24 THEN 20
                                            ELSE 0 END)::numeric, 2) AS discharge_temp_c
FROM generate_series(0, %(hours)s - 1) h
CROSS JOIN LATERAL (SELECT * FROM bench_plan WHERE h >= 0) p  -- time-major, as refreshes write
CROSS JOIN LATERAL (
    SELECT h / 24 AS d, h >= %(hours)s - 28 * 24 AS recent,
           CASE WHEN p.story = 6 THEN h %% 24 BETWEEN 1 AND 22 ELSE h %% 24 BETWEEN 6 AND 15 END
               AS on_shift,
           (h / 24) * CASE WHEN p.story = 6 THEN 22 ELSE 10 END
             + CASE WHEN p.story = 6 THEN least(greatest(h %% 24 - 0, 0), 22)
                    ELSE least(greatest(h %% 24 - 5, 0), 10) END AS running
) s
CROSS JOIN LATERAL (
    SELECT CASE WHEN NOT s.on_shift THEN 0
                WHEN p.story = 4 AND s.recent THEN 0.97 + random() * 0.03
                ELSE least(1.0, (p.base_load + random() * 0.2 - 0.1)
                     * CASE WHEN p.story = 1 AND s.recent THEN 0.5
                            WHEN p.story = 2 AND s.recent THEN 1.35 ELSE 1 END) END AS l
) load
WHERE NOT (p.story = 3 AND p.n = 1 AND h >= %(hours)s - 72)
"""
_METRICS = (
    "load_pct",
    "pressure_bar",
    "flow_m3_min",
    "power_kw",
    "running_hours",
    "energy_kwh",
    "air_filter_dp_mbar",
    "oil_filter_dp_bar",
    "discharge_temp_c",
)
# One reading an hour: [v, v, v, v, 1] per metric, written as JSON text.
_HOURLY = sql.SQL(
    "INSERT INTO rollup_hourly (asset_id, bucket, samples, stats)"
    " SELECT asset_id, bucket, 1, ('{{' || {} || '}}')::jsonb FROM bench_values"
).format(
    sql.SQL(" || ',' || ").join(
        sql.SQL("{} || repeat({} || ',', 4) || '1]'").format(
            sql.Literal(f'"{m}":['), sql.Identifier(m)
        )
        for m in _METRICS
    )
)
# The days from the hours, as signals.rollups derives them: mean of the hourly means weighted
# by readings (one each), minimum, maximum, the last hour's value, readings.
_DAILY = sql.SQL(
    "INSERT INTO rollup_daily (asset_id, bucket, samples, stats)"
    " SELECT asset_id, day, n, ('{{' || {json} || '}}')::jsonb"
    " FROM (SELECT asset_id, date_bin('1 day', bucket, %(start)s) AS day, count(*) AS n,"
    " {aggregates} FROM bench_values GROUP BY 1, 2) days"
).format(
    json=sql.SQL(" || ',' || ").join(
        sql.SQL("{} || {} || ',' || {} || ',' || {} || ',' || {} || ',' || n || ']'").format(
            sql.Literal(f'"{m}":['),
            sql.Identifier(f"a_{m}"),
            sql.Identifier(f"lo_{m}"),
            sql.Identifier(f"hi_{m}"),
            sql.Identifier(f"last_{m}"),
        )
        for m in _METRICS
    ),
    aggregates=sql.SQL(", ").join(
        sql.SQL(
            "avg({m}::double precision) AS {a}, min({m}::double precision) AS {lo},"
            " max({m}::double precision) AS {hi},"
            " max({m}::double precision) FILTER (WHERE last_of_day) AS {last}"
        ).format(
            m=sql.Identifier(m),
            a=sql.Identifier(f"a_{m}"),
            lo=sql.Identifier(f"lo_{m}"),
            hi=sql.Identifier(f"hi_{m}"),
            last=sql.Identifier(f"last_{m}"),
        )
        for m in _METRICS
    ),
)
# TimescaleDB: the values as telemetry, one reading at the top of each hour (bench_values is
# written time-major, so this inserts in time order, as the ingester does).
_TELEMETRY = sql.SQL(
    "INSERT INTO telemetry (asset_id, time, received_at, metrics, ingested_at)"
    " SELECT asset_id, bucket, bucket, jsonb_build_object({}),"
    " bucket + INTERVAL '1 minute' FROM bench_values"
).format(
    sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(m), sql.Identifier(m)) for m in _METRICS
    )
)
_STEPS: dict[bool, tuple[tuple[str, str | sql.Composed], ...]] = {
    False: (("values", _VALUES), ("hourly", _HOURLY), ("daily", _DAILY)),
    True: (("values", _VALUES), ("telemetry", _TELEMETRY)),
}


def _rollups(conn: psycopg.Connection[TupleRow], timescale: bool) -> list[str]:
    """What holds the rollups' rows: the tables, or every continuous aggregate (the narrow
    ones, and whatever the migrations build on them)."""
    if not timescale:
        return ["rollup_hourly", "rollup_daily"]
    rows = conn.execute(
        "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = 'public'"
        " ORDER BY substring(materialization_hypertable_name FROM '[0-9]+$')::integer"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def generate(
    conn: psycopg.Connection[TupleRow], assets: int, days: int, timescale: bool
) -> dict[str, float]:
    """The registry and the rollups (on TimescaleDB through telemetry and a refresh); returns
    seconds per step. ``conn`` is in autocommit mode."""
    params = {"assets": assets, "days": days, "hours": days * 24, "start": START}
    steps: dict[str, float] = {}
    started = time.perf_counter()
    for statement in _PLAN:
        conn.execute(statement, params)
    steps["registry"] = time.perf_counter() - started
    for name, step in _STEPS[timescale]:
        _progress(f"  generating {name} ...")
        started = time.perf_counter()
        conn.execute(step, params)
        steps[name] = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("DROP TABLE bench_values")
    conn.execute("DROP TABLE bench_plan")
    if timescale:
        conn.execute("VACUUM ANALYZE telemetry")
        steps["vacuum_analyze"] = time.perf_counter() - started
        _progress("  refreshing the continuous aggregates ...")
        started = time.perf_counter()
        refresh_rollups(conn)
        conn.autocommit = True
        steps["refresh"] = time.perf_counter() - started
        started = time.perf_counter()
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")  # write the generated pages out now, not during the timed pass
    steps["vacuum_analyze"] = steps.get("vacuum_analyze", 0.0) + time.perf_counter() - started
    return steps


def compress(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> tuple[float, int]:
    """TimescaleDB: compress the chunks of telemetry and both aggregates that end at least
    ``COMPRESS_AFTER`` before ``until`` (those the compression policy would have compressed),
    then VACUUM ANALYZE; returns seconds and chunks compressed. ``conn`` is in autocommit
    mode."""
    started = time.perf_counter()
    relations = conn.execute(
        "SELECT 'telemetry' UNION ALL"
        " SELECT format('%I.%I', materialization_hypertable_schema,"
        " materialization_hypertable_name)"
        " FROM timescaledb_information.continuous_aggregates WHERE view_schema = 'public'"
    ).fetchall()
    chunks = 0
    for (relation,) in relations:
        for (chunk,) in conn.execute(
            "SELECT c::text FROM show_chunks(%s::regclass, older_than => %s) c",
            (relation, until - COMPRESS_AFTER),
        ).fetchall():
            row = conn.execute(
                "SELECT NOT is_compressed FROM timescaledb_information.chunks"
                " WHERE format('%%I.%%I', chunk_schema, chunk_name) = %s",
                (chunk,),
            ).fetchone()
            if row and row[0]:
                conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))
                chunks += 1
    if chunks:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started, chunks


def _vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident set (VmHWM) of a local process, None when not readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _TimedDetector:
    """A registered detector whose ``findings`` and ``train`` calls are timed."""

    def __init__(self, detector: Any, seconds: dict[str, float]) -> None:
        self.NAME = detector.NAME
        self._detector = detector
        self._seconds = seconds

    def train(self, conn: psycopg.Connection[TupleRow], until: dt.datetime) -> object | None:
        started = time.perf_counter()
        try:
            model: object | None = self._detector.train(conn, until)
            return model
        finally:
            self._seconds[f"train {self.NAME}"] = time.perf_counter() - started

    def findings(self, conn: Any, as_of: Any, prices: Any, model: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._detector.findings(conn, as_of, prices, model)
        finally:
            self._seconds[f"detector {self.NAME}"] = time.perf_counter() - started


def _timed(function: Callable[..., Any], name: str, seconds: dict[str, float]) -> Any:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

    return wrapper


def instrument(seconds: dict[str, float]) -> None:
    """Time whatever ``score`` calls: the functions it imported (``*_findings`` and
    ``accounts_with_heat_recovery``) and every registered detector."""
    for name, value in list(vars(scoring).items()):
        if callable(value) and (
            name.endswith("_findings") or name == "accounts_with_heat_recovery"
        ):
            setattr(scoring, name, _timed(value, name, seconds))
    registered = scoring.detectors()
    timed = tuple(_TimedDetector(d, seconds) for d in registered)
    scoring.detectors = lambda: timed


def _database_url(args: argparse.Namespace) -> str:
    if args.keep or args.reuse:
        name = f"bw_bench_score_{args.engine}_{args.assets}_{args.days}"
    else:
        name = f"bw_bench_{os.urandom(4).hex()}"
    return with_database(args.database_url or ENGINES[args.engine][0], name)


def _generated(url: str) -> bool:
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT coalesce(to_regclass('rollup_daily_metric'), to_regclass('rollup_daily'))"
            ).fetchone()
            if not (row and row[0]):
                return False
            found = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(str(row[0])))
            ).fetchone()
            return bool(found and found[0])
    except psycopg.OperationalError:
        return False


def _count(conn: psycopg.Connection[TupleRow], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = _database_url(args)
    mode = ENGINES[args.engine][1]
    reused = args.reuse and _generated(url)
    generation: dict[str, float] = {}
    compression: dict[str, Any] = {}
    if not reused:
        drop_database(url)
        ensure_database(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            # on a reused database: the migrations added since
            timescale = migrate(conn, PACKAGES, mode).timescale
            if not reused:
                _progress(f"generating {args.assets:,} assets × {args.days} days ...")
                generation = generate(conn, args.assets, args.days, timescale)
            relations = _rollups(conn, timescale)
            row = conn.execute(
                sql.SQL("SELECT max(bucket) + INTERVAL '1 hour' FROM {}").format(
                    sql.Identifier(relations[0])
                )
            ).fetchone()
            assert row is not None
            assert row[0] is not None, "no rollups"
            as_of: dt.datetime = row[0]
            if timescale and not args.no_compress:
                _progress("compressing the chunks older than 7 days ...")
                seconds_, chunks = compress(conn, as_of)
                compression = {"seconds": round(seconds_, 1), "chunks_compressed_now": chunks}
            if timescale:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE is_compressed), count(*)"
                    " FROM timescaledb_information.chunks"
                    " WHERE hypertable_name IN (SELECT materialization_hypertable_name"
                    " FROM timescaledb_information.continuous_aggregates)"
                ).fetchone()
                assert row is not None
                compression["aggregate_chunks_compressed"] = f"{row[0]} of {row[1]}"
            rows = {
                table: _count(conn, table)
                for table in ("accounts", "assets", "components", *relations)
            }
            disk = {name: table_bytes(conn, name) for name in relations}
            hourly = [name for name in relations if "hourly" in name]
            if len(hourly) > 1:
                disk["hourly_total"] = sum(disk[name] for name in hourly)
            if timescale:
                disk["telemetry"] = table_bytes(conn, "telemetry")
        seconds: dict[str, float] = {}
        instrument(seconds)
        load_before = os.getloadavg()[0]
        with psycopg.connect(url, autocommit=True) as conn:
            backend = conn.info.backend_pid
            _progress("training models ...")
            started = time.perf_counter()
            models = scoring.train_models(conn, as_of)
            train_s = time.perf_counter() - started
            backend_train_hwm = _vm_hwm_bytes(backend)
        with psycopg.connect(url, autocommit=True) as conn:  # a fresh backend for the pass
            backend = conn.info.backend_pid
            _progress("scoring ...")
            started = time.perf_counter()
            findings = scoring.score(conn, as_of, models=models)
            score_s = time.perf_counter() - started
            backend_hwm = _vm_hwm_bytes(backend)
        load_after = os.getloadavg()[0]
    finally:
        if args.keep or args.reuse:
            _progress(f"kept database {url}")
        else:
            drop_database(url)
    python_hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kinds = Counter(f.kind for f in findings)
    asset_days = args.assets * args.days
    return {
        "engine": args.engine,
        "rollups": (
            "continuous aggregates " + ", ".join(relations)
            if timescale
            else "tables rollup_hourly / rollup_daily (jsonb stats)"
        ),
        "assets": args.assets,
        "days": args.days,
        "as_of": as_of.isoformat(),
        "reused_database": reused,
        "generation_seconds": {k: round(v, 1) for k, v in generation.items()},
        "compression": compression,
        "rows": rows,
        "disk_bytes": disk,
        "disk_bytes_per_asset_day": {k: round(v / asset_days) for k, v in disk.items()},
        "train_models_seconds": round(train_s, 2),
        "score_seconds": round(score_s, 2),
        "seconds_by_call": {
            k: round(v, 2) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])
        },
        "peak_rss_bytes": {
            "python": python_hwm,
            "backend_scoring": backend_hwm,
            "backend_training": backend_train_hwm,
        },
        "targets": {
            "score_seconds_at_10000x180": TARGET_SCORE_S[args.engine],
            "rss_bytes": TARGET_RSS_BYTES,
        },
        "findings": len(findings),
        "findings_by_kind": dict(sorted(kinds.items())),
        "load_average_1min": {"before": load_before, "after": load_after},
    }


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024**2:,.0f} MB"


def _text(d: dict[str, Any]) -> str:
    rss = d["peak_rss_bytes"]
    gen = d["generation_seconds"]
    per_day = d["disk_bytes_per_asset_day"]
    lines = [
        f"score bench on {d['engine']} ({d['rollups']}): {d['assets']:,} assets × {d['days']} "
        f"days as of {d['as_of']}: "
        + ", ".join(f"{name} {rows:,}" for name, rows in d["rows"].items())
        + " rows",
        "  disk: "
        + ", ".join(
            f"{name} {size / 1e6:,.0f} MB ({per_day[name]:,} B/asset-day)"
            for name, size in d["disk_bytes"].items()
        ),
        "  generated in "
        + (
            f"{sum(gen.values()):,.0f} s ("
            + ", ".join(f"{k} {v:,.0f} s" for k, v in gen.items())
            + ")"
            if gen
            else "an earlier run (--reuse)"
        ),
    ]
    if d["compression"]:
        lines.append("  compression: " + ", ".join(f"{k} {v}" for k, v in d["compression"].items()))
    lines += [
        f"  train_models   {d['train_models_seconds']:>8.2f} s",
        f"  score          {d['score_seconds']:>8.2f} s  (target at 10,000 assets × 180 days: < "
        f"{d['targets']['score_seconds_at_10000x180']:.0f} s)",
    ]
    lines += [f"    {name:<34} {s:>8.2f} s" for name, s in d["seconds_by_call"].items()]
    lines += [
        f"  peak RSS: Python {_mb(rss['python'])}, PostgreSQL backend {_mb(rss['backend_scoring'])}"
        f" scoring, {_mb(rss['backend_training'])} training (target < 2 GB each)",
        f"  findings: {d['findings']:,}: "
        + ", ".join(f"{k} {v:,}" for k, v in d["findings_by_kind"].items()),
        f"  load average (1 min): {d['load_average_1min']['before']:.2f} before, "
        f"{d['load_average_1min']['after']:.2f} after",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument(
        "--engine",
        choices=sorted(ENGINES),
        default="plain",
        help="plain: rollup tables (migrations with BASEWATCH_TIMESCALE=off); timescale:"
        " TimescaleDB continuous aggregates, generated through telemetry and a refresh (the"
        " server must have the extension). Default server: "
        + "; ".join(f"{engine} {server}" for engine, (server, _) in ENGINES.items()),
    )
    parser.add_argument(
        "--database-url",
        help="a connection string to the server to use (its database name is replaced)",
    )
    parser.add_argument(
        "--no-compress",
        action="store_true",
        help="TimescaleDB: leave every chunk uncompressed (default: compress those older than"
        " 7 days before the end of the data, as the compression policy would, also on --reuse)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the database bw_bench_score_<engine>_<assets>_<days>",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="score bw_bench_score_<engine>_<assets>_<days> if an earlier --keep made it"
        " (and keep it)",
    )
    args = parser.parse_args()
    document = run(args)
    print(json.dumps(document, indent=2) if args.json else _text(document))


if __name__ == "__main__":
    main()
