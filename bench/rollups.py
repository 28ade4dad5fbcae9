"""Benchmark of the signals rollups on either engine: refresh times and disk per asset-day.

Generates, in SQL (generate_series), ``--assets`` compressors × ``--days`` days of hourly
readings of the simulator's 15 metrics (two or three decimals, as the simulator rounds them),
written asset by asset as the demo's ingester writes them, into a database migrated for
``--engine plain`` (rollup tables with a jsonb ``stats`` per bucket, kept by
``signals.rollups.refresh_rollups``) or ``--engine timescale`` (TimescaleDB: telemetry a
hypertable, the rollups the narrow continuous aggregates ``rollup_hourly_metric`` /
``rollup_daily_metric``, one row per asset, bucket and metric, refreshed by the same call).
The migrations are applied without the TimescaleDB policies, so no background job runs
during the timings; compression is done explicitly with ``compress_chunk``.

Then it times, with the PostgreSQL backend's CPU seconds beside the wall clock:

1. the first ``refresh_rollups`` (everything), and the disk of telemetry and of the rollups;
2. on TimescaleDB, compressing every chunk older than 7 days before the data's end (the state
   the default compression policy, ``BASEWATCH_COMPRESS_AFTER_DAYS`` = 7, keeps);
3. incremental refreshes, each after a load, to show that a refresh does work proportional to
   what was loaded: (a) an hour of every asset plus a late second reading in 10 % of the last
   day's buckets; (b) a bulk load of a day of every asset (24 × more); (c) nothing (the fixed
   cost of a refresh); (d) late second readings for 10 % of the assets over one day 30 days
   back (on TimescaleDB into compressed telemetry and compressed aggregate chunks), after
   step 4; (e) one late reading of one asset 40 days back, after (d)'s recompression;
4. on TimescaleDB, compressing all remaining chunks, and the disk again (and once more after
   (d), the chunks it reached being recompressed);
5. (unless ``--no-layouts``) the same hourly figures stored in the other candidate layouts,
   built from the refreshed hourly rollup on the same server, with the indexes the project's
   tables have (primary key, an index on the bucket): on plain PostgreSQL a narrow table (one
   row per asset, bucket and metric) and a wide table of typed columns (``<metric>_mean`` ...
   ``<metric>_readings``), both also *sparse* (minimum, maximum and last NULL in a bucket of
   one reading, where they equal the mean), and the jsonb table with lz4 TOAST compression;
   on TimescaleDB the wide layouts, the sparse narrow one and (when ``rollup_hourly`` is not
   an aggregate already) the jsonb one as hypertables (10-day chunks, like the aggregates),
   raw and compressed (segmented by asset, ordered by bucket).

Disk is ``core.db.table_bytes`` (a hypertable's or an aggregate's chunks, compressed ones
included, with indexes and TOAST) and is reported per asset-day (bytes ÷ assets ÷ days of
data held, the loads of step 3 included) and extrapolated linearly to 10,000 assets × 180 days.
Prints figures (``--json``: one JSON document); never fails on a target.

    .venv/bin/python bench/rollups.py                           # plain, 150 × 730 days
    .venv/bin/python bench/rollups.py --engine timescale --assets 500 --days 180
    .venv/bin/python bench/rollups.py --engine plain --assets 500 --days 180 --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

import signals.rollups as rollups_module
from core.db import drop_database, ensure_database, table_bytes, with_database
from core.migrate import migrate
from signals.rollups import RefreshResult, refresh_rollups

Conn = psycopg.Connection[TupleRow]

ENGINES = {  # engine -> (default server, core.migrate timescale mode)
    "plain": ("postgresql://postgres@127.0.0.1:5432/postgres", "off"),
    "timescale": ("postgresql://postgres@127.0.0.1:5433/postgres", "on"),
}
TARGET_FIRST_S = 90.0
# issue 10: hourly rollups of 10,000 assets × 180 days <= 1 GB compressed on TimescaleDB,
# <= 5 GB on plain PostgreSQL
TARGET_ASSET_DAYS = 10_000 * 180
TARGET_HOURLY_BYTES = {"plain": 5 * 10**9, "timescale": 1 * 10**9}  # GB = 10^9 bytes here
COMPRESS_AFTER = dt.timedelta(days=7)  # the default BASEWATCH_COMPRESS_AFTER_DAYS
LAYOUT_CHUNK = "10 days"  # the aggregates' chunk interval (10 × telemetry's 1 day)
START = "2024-01-01T00:00:00Z"

# The simulator's 15 metrics: name -> value expression (l: load 0-1, h: hours since START).
METRICS = {
    "load_pct": "round((l * 100)::numeric, 2)",
    "pressure_bar": "round((7.5 - 0.4 * l + random() * 0.1)::numeric, 3)",
    "flow_m3_min": "round((l * 20)::numeric, 3)",
    "power_kw": "round((20 + l * 90)::numeric, 2)",
    "energy_kwh": "round((h * 80)::numeric, 2)",
    "running_hours": "round((h * 0.8)::numeric, 3)",
    "loaded_hours": "round((h * 0.6)::numeric, 3)",
    "oil_temp_c": "round((70 + l * 15 + random())::numeric, 2)",
    "discharge_temp_c": "round((80 + l * 18 + random())::numeric, 2)",
    "vibration_mm_s": "round((1.5 + random() * 0.5)::numeric, 2)",
    "oil_filter_dp_bar": "round((0.25 + (h %% 2000) / 2000.0)::numeric, 3)",
    "air_filter_dp_mbar": "round((18 + (h %% 3000) / 60.0)::numeric, 2)",
    "separator_dp_bar": "round((0.15 + (h %% 4000) / 6000.0)::numeric, 3)",
    "ambient_temp_c": "round((15 + 8 * sin(h / 24.0 * 6.283))::numeric, 2)",
    "starts": "h / 10",
}
_READINGS = sql.SQL("""
SELECT 'c-' || lpad(a::text, 5, '0') AS asset_id, t AS time, t AS received_at,
       jsonb_build_object({metrics}) AS metrics
FROM generate_series(1, %(assets)s) a,
     LATERAL (SELECT t, extract(epoch FROM t - %(start)s::timestamptz)::int / 3600 AS h,
                     greatest(0, least(1, 0.5 + 0.4 * sin(extract(hour FROM t) / 3.8)
                                          + random() * 0.2 - 0.1)) AS l
              FROM generate_series(%(from)s::timestamptz, %(to)s::timestamptz,
                                   INTERVAL '1 hour') t) s
""").format(
    metrics=sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(m), sql.SQL(e)) for m, e in METRICS.items()
    )
)
# ingested a minute after the reading, as a connected fleet's history is
_GENERATE = sql.SQL("""
INSERT INTO telemetry (asset_id, time, received_at, metrics, ingested_at)
SELECT r.*, r.time + INTERVAL '1 minute' FROM ({readings}) r ORDER BY 1, 2
""").format(readings=_READINGS)
_LOADS: dict[str, sql.SQL | sql.Composed | None] = {
    # (a) an hour more for every asset, and a late second reading in 10 % of the last day's
    # buckets
    "hour_and_late": sql.SQL("""
INSERT INTO telemetry (asset_id, time, received_at, metrics)
{readings}
UNION ALL
SELECT asset_id, time + INTERVAL '30 minutes', time, metrics FROM telemetry
WHERE time >= %(from)s::timestamptz - INTERVAL '1 day' AND time < %(from)s::timestamptz
  AND random() < 0.1
""").format(readings=_READINGS),
    # (b) a bulk load: a day of every asset
    "bulk_day": sql.SQL("INSERT INTO telemetry (asset_id, time, received_at, metrics) {}").format(
        _READINGS
    ),
    # (c) nothing
    "nothing": None,
    # (d) late second readings of 10 % of the assets over one day, 30 days before the end
    "late_history": sql.SQL("""
INSERT INTO telemetry (asset_id, time, received_at, metrics)
SELECT asset_id, time + INTERVAL '30 minutes', time, metrics FROM telemetry
WHERE time >= %(from)s::timestamptz - INTERVAL '30 days'
  AND time < %(from)s::timestamptz - INTERVAL '29 days'
  AND abs(hashtext(asset_id)) %% 10 = 0
"""),
    # (e) one late reading of one asset, 40 days before the end
    "one_late": sql.SQL("""
INSERT INTO telemetry (asset_id, time, received_at, metrics)
SELECT asset_id, time + INTERVAL '20 minutes', time, metrics FROM telemetry
WHERE asset_id = 'c-00001' AND time = %(from)s::timestamptz - INTERVAL '40 days'
"""),
}
_LOAD_HOURS = {"hour_and_late": 1, "bulk_day": 24, "nothing": 0, "late_history": 0, "one_late": 0}
_LOAD_TEXT = {
    "hour_and_late": "an hour of every asset + late readings in 10 % of the last day's buckets",
    "bulk_day": "bulk load: a day of every asset",
    "nothing": "nothing loaded",
    "late_history": "late readings of 10 % of the assets over a day 30 days back"
    " (TimescaleDB: into compressed chunks)",
    "one_late": "one late reading of one asset 40 days back (TimescaleDB: compressed chunks)",
}

# The candidate layouts of the hourly figures, built from the hourly rollup (jsonb shape:
# table on plain PostgreSQL, view over the narrow aggregate on TimescaleDB).
_FIGURES = (("mean", 0), ("min", 1), ("max", 2), ("last", 3))


def _figure(source: sql.Composable, index: int, sparse: bool) -> sql.Composable:
    """Figure ``index`` of a [mean, min, max, last, readings] jsonb array; ``sparse``: NULL for
    min, max and last when the bucket has one reading (they equal the mean)."""
    value = sql.SQL("({} ->> {})::double precision").format(source, sql.Literal(index))
    if sparse and index in (1, 2, 3):
        return sql.SQL("CASE WHEN ({} ->> 4)::integer > 1 THEN {} END").format(source, value)
    return value


def _wide(sparse: bool) -> sql.Composable:
    return sql.SQL(", ").join(
        [
            _figure(sql.SQL("stats -> {}").format(sql.Literal(m)), i, sparse)
            for m in METRICS
            for _, i in _FIGURES
        ]
        + [sql.SQL("(stats -> {} ->> 4)::integer").format(sql.Literal(m)) for m in METRICS]
    )


def _narrow(sparse: bool) -> sql.Composable:
    figures = sql.SQL(", ").join(_figure(sql.SQL("value"), i, sparse) for _, i in _FIGURES)
    return sql.SQL(
        "SELECT asset_id, bucket, key, (value ->> 4)::integer, {}"
        " FROM rollup_hourly CROSS JOIN LATERAL jsonb_each(stats)"
    ).format(figures)


_KEYS = sql.SQL("asset_id text NOT NULL, bucket timestamptz NOT NULL")
_WIDE_TABLE = sql.SQL("{}, samples integer NOT NULL, {}, PRIMARY KEY (asset_id, bucket)").format(
    _KEYS,
    sql.SQL(", ").join(
        [
            sql.SQL("{} double precision").format(sql.Identifier(f"{m}_{f}"))
            for m in METRICS
            for f, _ in _FIGURES
        ]
        + [sql.SQL("{} integer").format(sql.Identifier(f"{m}_readings")) for m in METRICS]
    ),
)
_NARROW_TABLE = _KEYS + sql.SQL(
    ", metric text NOT NULL, readings integer NOT NULL, mean double precision,"
    " minimum double precision, maximum double precision, last double precision,"
    " PRIMARY KEY (asset_id, bucket, metric)"
)
_FROM_HOURLY = sql.SQL("SELECT asset_id, bucket, samples, {} FROM rollup_hourly")
# name -> (columns, rows from the hourly rollup, description)
_LAYOUTS: dict[str, tuple[sql.Composable, sql.Composable, str]] = {
    "jsonb": (
        _KEYS
        + sql.SQL(
            ", samples integer NOT NULL, stats jsonb NOT NULL, PRIMARY KEY (asset_id, bucket)"
        ),
        sql.SQL("SELECT asset_id, bucket, samples, stats FROM rollup_hourly"),
        "jsonb per bucket (the plain tables' layout)",
    ),
    "jsonb_lz4": (
        _KEYS
        + sql.SQL(
            ", samples integer NOT NULL, stats jsonb COMPRESSION lz4 NOT NULL,"
            " PRIMARY KEY (asset_id, bucket)"
        ),
        sql.SQL("SELECT asset_id, bucket, samples, stats FROM rollup_hourly"),
        "jsonb per bucket, lz4 TOAST compression, toast_tuple_target 128",
    ),
    "wide": (
        _WIDE_TABLE,
        _FROM_HOURLY.format(_wide(False)),
        f"typed columns, one row per bucket ({len(METRICS) * 5} figures)",
    ),
    "wide_sparse": (
        _WIDE_TABLE,
        _FROM_HOURLY.format(_wide(True)),
        "typed columns, min/max/last NULL in single-reading buckets",
    ),
    "narrow": (_NARROW_TABLE, _narrow(False), "narrow, one row per bucket and metric"),
    "narrow_sparse": (
        _NARROW_TABLE,
        _narrow(True),
        "narrow, min/max/last NULL in single-reading buckets",
    ),
}
# The layouts built on each engine besides its own (plain: jsonb; TimescaleDB: narrow, and
# jsonb too when rollup_hourly is an aggregate rather than a view).
_OTHER_LAYOUTS = {
    False: ("narrow", "narrow_sparse", "wide", "wide_sparse", "jsonb_lz4"),
    True: ("jsonb", "wide", "wide_sparse", "narrow_sparse"),
}
_AGGREGATE_LAYOUTS = {"rollup_hourly_metric": "narrow", "rollup_hourly": "jsonb"}


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cpu_s(pid: int) -> float | None:
    """CPU seconds of a local process (the PostgreSQL backend), None when not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(conn: Conn, work: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """``work()``'s result, wall seconds and the backend's CPU seconds."""
    pid = conn.info.backend_pid
    cpu = _cpu_s(pid)
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    after = _cpu_s(pid)
    return result, seconds, (after - cpu) if cpu is not None and after is not None else None


def _one(conn: Conn, query: str | sql.Composed, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _hypertable(conn: Conn, name: str) -> str:
    """The hypertable holding ``name``'s chunks: itself, or a continuous aggregate's
    materialized hypertable."""
    found = _one(
        conn,
        "SELECT coalesce((SELECT format('%%I.%%I', materialization_hypertable_schema,"
        " materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates"
        " WHERE view_name = %(n)s), %(n)s)",
        {"n": name},
    )
    return str(found)


def _compress(conn: Conn, names: tuple[str, ...], older_than: dt.datetime | None) -> float:
    """Compress the chunks of hypertables / continuous aggregates (those ending before
    ``older_than``, or all), one committed call per chunk; returns seconds."""
    started = time.perf_counter()
    for name in names:
        relation = _hypertable(conn, name)
        if older_than is None:
            chunks = conn.execute("SELECT c::text FROM show_chunks(%s::regclass) c", (relation,))
        else:
            chunks = conn.execute(
                "SELECT c::text FROM show_chunks(%s::regclass, older_than => %s) c",
                (relation, older_than),
            )
        for (chunk,) in chunks.fetchall():
            conn.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
            conn.commit()
    conn.commit()
    return time.perf_counter() - started


def _rollups(conn: Conn, timescale: bool) -> tuple[str, ...]:
    """The relations holding the rollups: the tables, or every continuous aggregate in
    creation order (those built on others come after them)."""
    if not timescale:
        return ("rollup_hourly", "rollup_daily")
    rows = conn.execute(
        "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = 'public'"
        " ORDER BY substring(materialization_hypertable_name FROM '[0-9]+$')::integer"
    ).fetchall()
    conn.commit()
    return tuple(str(r[0]) for r in rows)


def _disk(conn: Conn, relations: tuple[str, ...]) -> dict[str, int]:
    """Bytes of telemetry and the rollups, after a VACUUM (as autovacuum would leave them: a
    recompressed chunk's emptied heap is truncated; indexes keep their pages)."""
    conn.commit()
    conn.autocommit = True
    try:
        conn.execute("VACUUM")
    finally:
        conn.autocommit = False
    sizes = {name: table_bytes(conn, name) for name in ("telemetry", *relations)}
    hourly = [name for name in relations if "hourly" in name]
    if len(hourly) > 1:
        sizes["hourly_total"] = sum(sizes[name] for name in hourly)
    conn.commit()
    return sizes


def _first_refresh(conn: Conn, timescale: bool) -> dict[str, Any]:
    """The first ``refresh_rollups``. On TimescaleDB, timed aggregate by aggregate: the call
    is made once per aggregate, in the module's order, with the module's list of aggregates
    narrowed to that one (the same code path; the sum is the whole refresh)."""
    attribute = "_AGGREGATES"
    aggregates = getattr(rollups_module, attribute, None)
    if not timescale or not aggregates:
        result, seconds, cpu = _timed(conn, lambda: refresh_rollups(conn))
        return _refresh_figures(result, seconds, cpu)
    parts: dict[str, dict[str, Any]] = {}
    try:
        for view in aggregates:
            setattr(rollups_module, attribute, (view,))
            _progress(f"  {view} ...")
            result, seconds, cpu = _timed(conn, lambda: refresh_rollups(conn))
            parts[view] = _refresh_figures(result, seconds, cpu)
    finally:
        setattr(rollups_module, attribute, aggregates)
    cpus = [p["backend_cpu_seconds"] for p in parts.values()]
    return {
        "seconds": round(sum(p["seconds"] for p in parts.values()), 2),
        "backend_cpu_seconds": round(sum(cpus), 2) if None not in cpus else None,
        "by_aggregate": parts,
    }


def _refresh_figures(result: RefreshResult, seconds: float, cpu: float | None) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        "backend_cpu_seconds": round(cpu, 2) if cpu is not None else None,
        "buckets_or_windows": result.buckets,
        "hourly_rows": result.hourly_rows,
        "daily_rows": result.daily_rows,
    }


def _load_and_refresh(
    conn: Conn, name: str, params: dict[str, Any], end: dt.datetime
) -> tuple[dict[str, Any], dt.datetime]:
    """Load ``name`` after ``end`` (the hour after the last reading), refresh; returns the
    figures and the new end."""
    hours = _LOAD_HOURS[name]
    added = 0
    statement = _LOADS[name]
    if statement is not None:
        conn.execute("SELECT setseed(0.18)")
        load = {**params, "from": end, "to": end + dt.timedelta(hours=max(hours, 1) - 1)}
        added = conn.execute(statement, load).rowcount
        conn.commit()
    _progress(f"incremental refresh after {name} ({added:,} readings) ...")
    result, seconds, cpu = _timed(conn, lambda: refresh_rollups(conn))
    figures = {
        "load": _LOAD_TEXT[name],
        "readings_added": added,
        **_refresh_figures(result, seconds, cpu),
        "ms_per_reading_added": round(seconds * 1000 / added, 3) if added else None,
    }
    return figures, end + dt.timedelta(hours=hours)


def _layouts(conn: Conn, timescale: bool) -> list[dict[str, Any]]:
    """The hourly figures in each candidate layout: rows and bytes, raw and (TimescaleDB)
    compressed. The engine's own layout is measured elsewhere and not rebuilt."""
    results = []
    present = {_AGGREGATE_LAYOUTS.get(name) for name in _rollups(conn, timescale)}
    for name in _OTHER_LAYOUTS[timescale]:
        if timescale and name in present:
            continue
        columns, fill, description = _LAYOUTS[name]
        table = f"bench_layout_{name}"
        ident = sql.Identifier(table)
        _progress(f"layout {name} ...")
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, columns))
        if timescale:
            conn.execute(
                sql.SQL(
                    "SELECT create_hypertable({}, 'bucket', chunk_time_interval => INTERVAL {})"
                ).format(sql.Literal(table), sql.Literal(LAYOUT_CHUNK))
            )
            order = "metric, bucket DESC" if name.startswith("narrow") else "bucket DESC"
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress,"
                    " timescaledb.compress_segmentby = 'asset_id',"
                    " timescaledb.compress_orderby = {})"
                ).format(ident, sql.Literal(order))
            )
        else:
            conn.execute(sql.SQL("CREATE INDEX ON {} (bucket)").format(ident))  # as rollup_hourly
            if name == "jsonb_lz4":
                conn.execute(sql.SQL("ALTER TABLE {} SET (toast_tuple_target = 128)").format(ident))
        started = time.perf_counter()
        rows = conn.execute(sql.SQL("INSERT INTO {} {}").format(ident, fill)).rowcount
        conn.commit()
        fill_s = time.perf_counter() - started
        raw = table_bytes(conn, table)
        conn.commit()
        compressed = None
        if timescale:
            _compress(conn, (table,), None)
            compressed = table_bytes(conn, table)
        conn.execute(sql.SQL("DROP TABLE {}").format(ident))
        conn.commit()
        results.append(
            {
                "layout": name,
                "description": description,
                "rows": rows,
                "fill_seconds": round(fill_s, 1),
                "raw_bytes": raw,
                "compressed_bytes": compressed,
            }
        )
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    server, mode = ENGINES[args.engine]
    url = with_database(args.database_url or server, f"bw_bench_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    hours = args.days * 24
    params = {"assets": args.assets, "start": START, "from": START}
    load_average = {"start": os.getloadavg()[0]}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            timescale = migrate(conn, ("core", "ingest", "signals"), mode).timescale
            versions = conn.execute(
                "SELECT current_setting('server_version'),"
                " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
            ).fetchone()
            assert versions is not None
            _progress(f"generating {args.assets:,} assets × {args.days} days ...")
            started = time.perf_counter()
            conn.execute("SELECT setseed(0.17)")
            end = _one(conn, "SELECT %s::timestamptz + make_interval(hours => %s)", (START, hours))
            conn.execute(_GENERATE, {**params, "to": end - dt.timedelta(hours=1)})
            conn.execute("VACUUM ANALYZE telemetry")
            conn.execute("CHECKPOINT")  # write the generated pages out now, not during a refresh
            generate_s = time.perf_counter() - started
            readings = _one(conn, "SELECT count(*) FROM telemetry")
        with psycopg.connect(url) as conn:
            _progress("first refresh ...")
            load_average["before_first_refresh"] = os.getloadavg()[0]
            first = _first_refresh(conn, timescale)
            load_average["after_first_refresh"] = os.getloadavg()[0]
            relations = _rollups(conn, timescale)
            rows = {
                name: _one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
                for name in relations
            }
            conn.commit()
            disk = {"raw": _disk(conn, relations)}
            names = ("telemetry", *relations)
            compress_s: dict[str, float] = {}
            if timescale:
                _progress("compressing the chunks older than 7 days ...")
                compress_s["older_than_7_days"] = _compress(conn, names, end - COMPRESS_AFTER)
            incremental = []
            for name in ("hour_and_late", "bulk_day", "nothing"):
                figures, end = _load_and_refresh(conn, name, params, end)
                incremental.append(figures)
            held_hours = _one(
                conn, "SELECT extract(epoch FROM max(time) - min(time)) / 3600 + 1 FROM telemetry"
            )
            conn.commit()
            if timescale:
                _progress("compressing every chunk ...")
                compress_s["the_rest"] = _compress(conn, names, None)
                disk["compressed"] = _disk(conn, relations)
            # late data into old (on TimescaleDB compressed) chunks
            figures, end = _load_and_refresh(conn, "late_history", params, end)
            incremental.append(figures)
            if timescale:
                _progress("compressing again (the chunks the late readings reached) ...")
                compress_s["after_late_history"] = _compress(conn, names, None)
                disk["compressed_after_late_history"] = _disk(conn, relations)
            else:
                disk["after_loads"] = _disk(conn, relations)
            figures, end = _load_and_refresh(conn, "one_late", params, end)
            incremental.append(figures)
            layouts = [] if args.no_layouts else _layouts(conn, timescale)
            load_average["end"] = os.getloadavg()[0]
    finally:
        if args.keep:
            _progress(f"kept database {url}")
        else:
            drop_database(url)
    return _document(
        args,
        timescale=timescale,
        versions=versions,
        readings=readings,
        generate_s=generate_s,
        first=first | {"rows": rows},
        disk=disk,
        compress=compress_s,
        incremental=incremental,
        held_hours=float(held_hours),
        layouts=layouts,
        load_average=load_average,
    )


def _document(args: argparse.Namespace, **d: Any) -> dict[str, Any]:
    """The JSON document: the measured figures plus bytes per asset-day and the linear
    extrapolation to 10,000 assets × 180 days."""
    raw_asset_days = args.assets * args.days
    final_asset_days = args.assets * d["held_hours"] / 24
    engine = "timescale" if d["timescale"] else "plain"

    def per(size: int | None, asset_days: float) -> dict[str, Any] | None:
        if size is None:
            return None
        per_day = size / asset_days
        return {
            "bytes": size,
            "bytes_per_asset_day": round(per_day),
            "extrapolated_10000x180_bytes": round(per_day * TARGET_ASSET_DAYS),
        }

    asset_days = {
        state: raw_asset_days if state == "raw" else round(final_asset_days, 1)
        for state in d["disk"]
    }
    disk = {
        state: {k: per(v, asset_days[state]) for k, v in sizes.items()}
        for state, sizes in d["disk"].items()
    }
    layouts = [
        {
            **layout,
            "raw": per(layout["raw_bytes"], final_asset_days),
            "compressed": per(layout["compressed_bytes"], final_asset_days),
        }
        for layout in d["layouts"]
    ]
    return {
        "engine": engine,
        "server_version": d["versions"][0],
        "timescaledb_version": d["versions"][1],
        "assets": args.assets,
        "days": args.days,
        "metrics": len(METRICS),
        "readings": d["readings"],
        "generate_seconds": round(d["generate_s"], 1),
        "first_refresh": {**d["first"], "target_seconds": TARGET_FIRST_S},
        "compress_seconds": {k: round(v, 1) for k, v in d["compress"].items()},
        "incremental_refreshes": d["incremental"],
        "asset_days": asset_days,
        "disk": disk,
        "layouts": layouts,
        "target_hourly_bytes_10000x180": TARGET_HOURLY_BYTES[engine],
        "load_average_1min": d["load_average"],
    }


def _size(figures: dict[str, Any] | None) -> str:
    if figures is None:
        return "n/a"
    return (
        f"{figures['bytes'] / 1e6:>9,.0f} MB {figures['bytes_per_asset_day']:>8,} B/asset-day"
        f" → {figures['extrapolated_10000x180_bytes'] / 1e9:>7,.1f} GB at 10,000 × 180"
    )


def _text(d: dict[str, Any]) -> str:
    first = d["first_refresh"]
    load = d["load_average_1min"]
    engine = d["engine"] + (f" (TimescaleDB {d['timescaledb_version']})" * (d["engine"] != "plain"))
    lines = [
        f"rollups bench on {engine}, PostgreSQL {d['server_version']}: {d['assets']:,} assets × "
        f"{d['days']} days × {d['metrics']} metrics = {d['readings']:,} hourly readings, "
        f"generated in {d['generate_seconds']} s",
        f"  first refresh        {first['seconds']:>8.1f} s  (target < "
        f"{first['target_seconds']:.0f} s), backend CPU {first['backend_cpu_seconds']} s; rows: "
        + ", ".join(f"{name} {rows:,}" for name, rows in first["rows"].items()),
    ]
    for view, part in first.get("by_aggregate", {}).items():
        lines.append(
            f"    {view:<22} {part['seconds']:>8.1f} s, backend CPU {part['backend_cpu_seconds']} s"
        )
    for inc in d["incremental_refreshes"]:
        per = inc["ms_per_reading_added"]
        lines.append(
            f"  refresh after {inc['readings_added']:>7,} readings {inc['seconds']:>7.2f} s "
            f"(CPU {inc['backend_cpu_seconds']} s"
            + (f", {per} ms per reading" if per is not None else "")
            + f"): {inc['load']}"
        )
    if d["compress_seconds"]:
        lines.append(
            "  compress_chunk: "
            + ", ".join(f"{k.replace('_', ' ')} {v} s" for k, v in d["compress_seconds"].items())
        )
    for state, sizes in d["disk"].items():
        days = d["asset_days"][state]
        lines.append(f"  disk, {state} ({days:,} asset-days):")
        lines += [f"    {name:<20} {_size(figures)}" for name, figures in sizes.items()]
    if d["layouts"]:
        lines.append("  the hourly figures in other layouts:")
        for layout in d["layouts"]:
            lines.append(f"    {layout['description']}: {layout['rows']:,} rows")
            lines.append(f"      raw        {_size(layout['raw'])}")
            if layout["compressed"]:
                lines.append(f"      compressed {_size(layout['compressed'])}")
    lines.append(
        f"  target: hourly rollups at 10,000 × 180 <= "
        f"{d['target_hourly_bytes_10000x180'] / 1e9:.0f} GB"
    )
    lines.append("  load average (1 min): " + ", ".join(f"{k} {v:.2f}" for k, v in load.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The benchmark database is bw_bench_<random> on the server, dropped at the end.",
    )
    parser.add_argument("--assets", type=int, default=150)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument(
        "--engine",
        choices=sorted(ENGINES),
        default="plain",
        help="plain: rollup tables (migrations with BASEWATCH_TIMESCALE=off); timescale:"
        " TimescaleDB continuous aggregates (the server must have the extension)."
        " Default server: "
        + "; ".join(f"{engine} {server}" for engine, (server, _) in ENGINES.items()),
    )
    parser.add_argument(
        "--database-url",
        help="a connection string to the server to use (its database name is replaced)",
    )
    parser.add_argument(
        "--no-layouts", action="store_true", help="skip building the other candidate layouts"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--keep", action="store_true", help="keep the database (to inspect it)")
    args = parser.parse_args()
    document = run(args)
    print(json.dumps(document, indent=2) if args.json else _text(document))


if __name__ == "__main__":
    main()
