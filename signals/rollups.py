"""Refresh of the hourly and daily rollups (set-based, in the database), on both engines.

On TimescaleDB the rollups are continuous aggregates (signals/migrations/007): a refresh asks
TimescaleDB to refresh them (its invalidation log knows what changed) window by window, each
window committed; its refresh policies do the same every 15 minutes without the scheduler.

On plain PostgreSQL they are tables. A refresh covers the telemetry written (``ingested_at``)
from the watermark up to a bound no open transaction can still write below: the start of the
oldest transaction open in the database (a row's ``ingested_at`` is its writing transaction's
start), or now() minus ``OVERLAP`` when the server does not show other sessions' transactions
to this role. So no row is read twice and none is missed, and a refresh after a bulk load does
work proportional to what was loaded. It finds the (asset, hour) buckets those rows touch,
recomputes them whole from telemetry, then the days that contain them from the hourly rollup.
Recomputing whole buckets makes a refresh idempotent.

A refresh commits in bounded steps, asset range by asset range (``STEP_BUCKETS`` changed
buckets, or ``FIRST_BATCH_ROWS`` readings on a first refresh); ``rollup_state`` records the
bound under way (``target``) and the last asset done, so a refresh stopped between steps (the
``stop`` callback, a SIGTERM, a crash) resumes where it stopped. Only one refresh runs at a
time (a session advisory lock).

The first refresh reads every row, so it has its own plan (``bench/rollups.py`` measures it),
run in batches of assets (``FIRST_BATCH_ROWS`` readings each, so sorts and hash tables stay in
memory) on ``FIRST_WORKERS`` connections at once, each batch in three statements:

1. *single-reading buckets* (the common case for hourly data): the bucket's stats are
   ``[v, v, v, v, 1]`` per metric, built as JSON text straight from the reading and parsed once,
   with no per-metric grouping. A reading is alone in its bucket when its neighbours in
   (asset, time) order, found by ``lag``/``lead`` in the same statement, are in other hours.
   ``v`` goes through ``double precision`` as in the general path, so the stored numbers are
   the same (``55.30`` is stored as ``55.3``, as the general path stores it).
2. *buckets with several readings*: the general per-metric aggregate, for the buckets this
   statement finds holding more than one reading; the days they fall in are noted.
3. *days*: a day none of whose buckets took the general path is aggregated straight from its
   readings (each hour holds one reading, so the hourly means are the values themselves and
   ``sum(mean × readings) / sum(readings)`` is ``sum(v) / count``); ``last`` is read from
   the day's latest reading holding the metric. The noted days take the general path from the
   hourly rollup, as every day of an incremental refresh does.

Should a batch's readings not fit the text path (metric names with control characters,
non-numeric values), the batch takes the general path whole.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

OVERLAP = dt.timedelta(minutes=5)  # longer than any write transaction of the ingesters
STEP_BUCKETS = 50_000  # changed hour buckets per committed step of an incremental refresh
TIMESCALE_WINDOW = dt.timedelta(days=30)  # per committed refresh of a continuous aggregate
_LOCK = 7420240002  # one refresher at a time
# TimescaleDB's continuous aggregates, each after those it is built on (migration 007).
_AGGREGATES = ("rollup_hourly_metric", "rollup_hourly", "rollup_daily_metric", "rollup_daily")
FIRST_BATCH_ROWS = 200_000  # readings per batch of the first refresh
FIRST_WORK_MEM = "64MB"  # per sort / hash of the first refresh (a batch's window partition)
FIRST_WORKERS = 2  # connections the first refresh works on (batches in parallel)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_CHANGED = """
CREATE TEMP TABLE rollup_changed AS
SELECT DISTINCT asset_id, date_bin('1 hour', time, %(origin)s) AS bucket
FROM telemetry WHERE ingested_at >= %(since)s AND ingested_at < %(until)s
  AND asset_id > %(after)s
"""
# The changed buckets of one step (an asset range).
_STEP = """
CREATE TEMP TABLE rollup_step ON COMMIT DROP AS
SELECT asset_id, bucket FROM rollup_changed WHERE asset_id >= %(low)s AND asset_id <= %(high)s
"""
# The bound below which no open transaction can still write (see the module docstring).
_SAFE_UNTIL = """
SELECT now(),
       min(xact_start) FILTER (WHERE pid <> pg_backend_pid()),
       bool_or(query = '<insufficient privilege>')
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
"""
# The aggregate of one bucket's (or one day's) rows; the FROM clause names the rows (the
# changed buckets, each read through the primary key, or the first refresh's general buckets).
_HOURLY_VALUES = """
SELECT asset_id, bucket, max(readings)::integer,
       jsonb_object_agg(metric, jsonb_build_array(mean, minimum, maximum, last, readings))
FROM (
    SELECT t.asset_id, date_bin('1 hour', t.time, %(origin)s) AS bucket, m.key AS metric,
           count(*) AS readings, avg(m.value::double precision) AS mean,
           min(m.value::double precision) AS minimum, max(m.value::double precision) AS maximum,
           (array_agg(m.value::double precision ORDER BY t.time DESC))[1] AS last
    FROM {source}
    CROSS JOIN LATERAL jsonb_each_text(t.metrics) AS m(key, value)
    GROUP BY 1, 2, 3
) per_metric
GROUP BY asset_id, bucket
"""
_HOURLY_CHANGED = """rollup_step c
JOIN LATERAL (SELECT * FROM telemetry t1 WHERE t1.asset_id = c.asset_id
              AND t1.time >= c.bucket AND t1.time < c.bucket + INTERVAL '1 hour') t ON true"""
_DAILY_VALUES = """
SELECT asset_id, day, max(readings)::integer,
       jsonb_object_agg(metric, jsonb_build_array(mean, minimum, maximum, last, readings))
FROM (
    SELECT h.asset_id, date_bin('1 day', h.bucket, %(origin)s) AS day, s.key AS metric,
           sum((s.value->>4)::integer) AS readings,
           sum((s.value->>0)::double precision * (s.value->>4)::integer)
               / sum((s.value->>4)::integer) AS mean,
           min((s.value->>1)::double precision) AS minimum,
           max((s.value->>2)::double precision) AS maximum,
           (array_agg((s.value->>3)::double precision ORDER BY h.bucket DESC))[1] AS last
    FROM {source}
    CROSS JOIN LATERAL jsonb_each(h.stats) AS s(key, value)
    GROUP BY 1, 2, 3
) per_metric
GROUP BY asset_id, day
"""
_DAILY_CHANGED = """(SELECT DISTINCT asset_id, date_bin('1 day', bucket, %(origin)s) AS day
      FROM rollup_step) d
JOIN LATERAL (SELECT * FROM rollup_hourly h1 WHERE h1.asset_id = d.asset_id
              AND h1.bucket >= d.day AND h1.bucket < d.day + INTERVAL '1 day') h ON true"""
_UPSERT = """
INSERT INTO {table} AS r (asset_id, bucket, samples, stats)
{values}
ON CONFLICT (asset_id, bucket) DO UPDATE SET samples = EXCLUDED.samples, stats = EXCLUDED.stats
"""

# First refresh. Batches: ranges of asset ids holding about FIRST_BATCH_ROWS readings.
_FIRST_ASSETS = "SELECT asset_id, count(*) FROM telemetry GROUP BY asset_id ORDER BY asset_id"
_FIRST_SETUP = """
CREATE TEMP TABLE rollup_general_days (asset_id text NOT NULL, day timestamptz NOT NULL)
ON COMMIT DROP
"""
# 1. Single-reading buckets. A metric name is written as a JSON string with its backslashes
# and quotes escaped; a value is double precision's text ('null' for a JSON null), parsed by
# jsonb as the general path's jsonb_build_array parses it. An empty object has no stats.
_FIRST_SINGLE = """
INSERT INTO rollup_hourly AS r (asset_id, bucket, samples, stats)
SELECT asset_id, bucket, 1,
       ('{' || (SELECT string_agg('"' || replace(replace(m.key, '\\', '\\\\'), '"', '\\"')
                                  || '":[' || repeat(m.x || ',', 4) || '1]', ',')
                FROM (SELECT key, coalesce(value::double precision::text, 'null') AS x
                      FROM jsonb_each_text(s.metrics)) m) || '}')::jsonb
FROM (
    SELECT asset_id, time, metrics, date_bin('1 hour', time, %(origin)s) AS bucket,
           lag(time) OVER w AS previous, lead(time) OVER w AS next
    FROM telemetry WHERE asset_id >= %(low)s AND asset_id <= %(high)s
    WINDOW w AS (PARTITION BY asset_id ORDER BY time)
) s
WHERE (previous IS NULL OR previous < bucket)
  AND (next IS NULL OR next >= bucket + INTERVAL '1 hour')
  AND metrics <> '{}'::jsonb
"""
# 2. Buckets with several readings (all buckets of the batch when `everything`), general path;
# their days are noted for step 3.
_FIRST_GENERAL = """
WITH general AS (
    SELECT DISTINCT asset_id, bucket FROM (
        SELECT asset_id, date_bin('1 hour', time, %(origin)s) AS bucket,
               lag(time) OVER w AS previous
        FROM telemetry WHERE asset_id >= %(low)s AND asset_id <= %(high)s
        WINDOW w AS (PARTITION BY asset_id ORDER BY time)
    ) s
    WHERE %(everything)s OR previous >= bucket
), written AS (
    {upsert}
    RETURNING r.asset_id, r.bucket
), noted AS (
    INSERT INTO rollup_general_days (asset_id, day)
    SELECT DISTINCT asset_id, date_bin('1 day', bucket, %(origin)s) FROM written
)
SELECT count(*) FROM written
"""
_FIRST_GENERAL_SOURCE = """general c
JOIN LATERAL (SELECT * FROM telemetry t1 WHERE t1.asset_id = c.asset_id
              AND t1.time >= c.bucket AND t1.time < c.bucket + INTERVAL '1 hour') t ON true"""
# 3a. Days whose buckets all hold one reading, from the readings.
_FIRST_DAYS = """
INSERT INTO rollup_daily AS r (asset_id, bucket, samples, stats)
SELECT d.asset_id, d.day, max(d.readings)::integer,
       jsonb_object_agg(d.metric, jsonb_build_array(
           d.total / d.readings, d.minimum, d.maximum,
           (t.metrics ->> d.metric)::double precision, d.readings))
FROM (
    SELECT t.asset_id, date_bin('1 day', t.time, %(origin)s) AS day, m.key AS metric,
           count(*) AS readings, sum(m.value::double precision) AS total,
           min(m.value::double precision) AS minimum, max(m.value::double precision) AS maximum,
           max(t.time) AS last_time
    FROM telemetry t CROSS JOIN LATERAL jsonb_each_text(t.metrics) AS m(key, value)
    WHERE t.asset_id >= %(low)s AND t.asset_id <= %(high)s
      AND NOT EXISTS (SELECT 1 FROM rollup_general_days g
                      WHERE g.asset_id = t.asset_id
                        AND g.day = date_bin('1 day', t.time, %(origin)s))
    GROUP BY 1, 2, 3
) d
JOIN telemetry t ON t.asset_id = d.asset_id AND t.time = d.last_time
GROUP BY d.asset_id, d.day
"""
# Steps 1 and 3a write rows no other step of their batch writes: into empty tables (the usual
# first refresh) they insert plainly, which is cheaper than an upsert.
_CONFLICT = """
ON CONFLICT (asset_id, bucket) DO UPDATE SET samples = EXCLUDED.samples, stats = EXCLUDED.stats
"""
# 3b. The noted days, from the hourly rollup.
_FIRST_GENERAL_DAYS = """(SELECT DISTINCT asset_id, day FROM rollup_general_days
      WHERE asset_id >= %(low)s AND asset_id <= %(high)s) d
JOIN LATERAL (SELECT * FROM rollup_hourly h1 WHERE h1.asset_id = d.asset_id
              AND h1.bucket >= d.day AND h1.bucket < d.day + INTERVAL '1 day') h ON true"""


def _statement(table: str, values: str, source: str) -> sql.Composed:
    """``_UPSERT`` into ``table`` of ``values`` aggregated from ``source`` (constants above)."""
    return sql.SQL(_UPSERT).format(
        table=sql.Identifier(table), values=sql.SQL(values).format(source=sql.SQL(source))
    )


@dataclass(frozen=True)
class RefreshResult:
    buckets: int
    hourly_rows: int
    daily_rows: int
    seconds: float
    complete: bool = True  # False when ``stop`` ended the refresh between two steps
    aggregates: bool = False  # TimescaleDB continuous aggregates: ``buckets`` counts windows

    def summary(self) -> str:
        """One line for a person."""
        if self.aggregates:
            what = f"continuous aggregates refreshed over {self.buckets:,} windows"
        else:
            what = (
                f"{self.buckets:,} hour buckets, {self.hourly_rows:,} hourly and "
                f"{self.daily_rows:,} daily rows"
            )
        return f"{what} in {self.seconds:.1f} s" + ("" if self.complete else " (stopped early)")


Stop = Callable[[], bool]


def _never() -> bool:
    return False


def uses_continuous_aggregates(conn: psycopg.Connection[TupleRow]) -> bool:
    """True when the rollups are TimescaleDB continuous aggregates (migration 007)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'rollup_hourly_metric')"
    ).fetchone()
    return bool(row and row[0])


def refresh_rollups(
    conn: psycopg.Connection[TupleRow],
    workers: int = FIRST_WORKERS,
    stop: Stop = _never,
) -> RefreshResult:
    """Bring the rollups up to date with telemetry written since the last refresh.

    Commits ``conn``'s open transaction first; works in committed steps and calls ``stop``
    between them (True ends the refresh there, ``complete`` False; the next one resumes).
    A first refresh of the tables works on ``workers`` connections at once."""
    started = time.monotonic()
    autocommit = conn.autocommit
    conn.commit()
    conn.autocommit = False
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
    conn.commit()
    try:
        aggregates = uses_continuous_aggregates(conn)
        if aggregates:
            changed, hourly, daily, complete = _refresh_aggregates(conn, stop)
        else:
            changed, hourly, daily, complete = _refresh_tables(conn, workers, stop)
    finally:
        conn.rollback()
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
        conn.commit()
        conn.autocommit = autocommit
    result = RefreshResult(changed, hourly, daily, time.monotonic() - started, complete, aggregates)
    log.info("rollups: %s", result.summary())
    return result


def _refresh_aggregates(
    conn: psycopg.Connection[TupleRow], stop: Stop
) -> tuple[int, int, int, bool]:
    """TimescaleDB: refresh each aggregate after those it is built on, ``TIMESCALE_WINDOW`` at a
    time from the oldest telemetry (a window with nothing invalidated costs next to nothing).
    ``refresh_continuous_aggregate`` cannot run inside a transaction, hence autocommit."""
    row = conn.execute("SELECT min(time), now() FROM telemetry").fetchone()
    conn.commit()
    if row is None or row[0] is None:
        return 0, 0, 0, True
    first, end = row
    origin = first.replace(hour=0, minute=0, second=0, microsecond=0)
    windows = 0
    conn.autocommit = True
    try:
        for view in _AGGREGATES:
            low = origin
            while low < end:
                if stop():
                    return windows, 0, 0, False
                high = min(low + TIMESCALE_WINDOW, end + dt.timedelta(days=1))
                conn.execute(
                    "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
                    (view, low, high),
                )
                windows += 1
                low = high
    finally:
        conn.autocommit = False
    return windows, 0, 0, True


def apply_timescale_policies(conn: psycopg.Connection[TupleRow], compress_after_days: int) -> None:
    """(Re)set the refresh and compression policies of the rollup aggregates (TimescaleDB).

    Each refreshes every 15 minutes over all history (``start_offset`` NULL: only what the
    invalidation log marks is recomputed; telemetry chunks dropped by retention leave no
    invalidation, so their aggregates stay). Compressed after ``compress_after_days``, like
    telemetry. Safe to call on every migrate; does nothing on plain PostgreSQL."""
    if not uses_continuous_aggregates(conn):
        return
    for view in _AGGREGATES:
        conn.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", (view,))
        conn.execute(
            "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL,"
            " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes')",
            (view,),
        )
        conn.execute("SELECT remove_compression_policy(%s, if_exists => true)", (view,))
        conn.execute(
            "SELECT add_compression_policy(%s, compress_after => make_interval(days => %s))",
            (view, compress_after_days),
        )
    log.info("rollups: refreshed every 15 minutes, compressed after %d days", compress_after_days)


def _safe_until(conn: psycopg.Connection[TupleRow]) -> dt.datetime:
    row = conn.execute(_SAFE_UNTIL).fetchone()
    assert row is not None
    now, oldest, hidden = row
    if hidden:  # other roles' transactions are not visible to this one
        return now - OVERLAP  # type: ignore[no-any-return]
    return min(now, oldest) if oldest is not None else now  # type: ignore[no-any-return]


def _refresh_tables(
    conn: psycopg.Connection[TupleRow], workers: int, stop: Stop
) -> tuple[int, int, int, bool]:
    """Plain PostgreSQL (see the module docstring); returns buckets, hourly and daily rows
    written and whether the refresh completed."""
    row = conn.execute(
        "SELECT watermark, target, done_through FROM rollup_state WHERE name = 'telemetry'"
    ).fetchone()
    if row is not None and row[1] is not None:  # a refresh that stopped: resume it
        since, until, after = row[0], row[1], row[2] or ""
    else:
        since = row[0] if row else _EPOCH
        until = _safe_until(conn)
        after = ""
        conn.execute(
            "INSERT INTO rollup_state (name, watermark, target) VALUES ('telemetry', %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET target = EXCLUDED.target, done_through = NULL",
            (since, until),
        )
    conn.commit()
    first = since <= _EPOCH
    params: dict[str, object] = {"since": since, "until": until, "origin": _EPOCH, "after": after}
    if first:
        changed, hourly, daily, complete = _first_refresh(conn, workers, after, stop)
    else:
        changed, hourly, daily, complete = _incremental_refresh(conn, params, stop)
    if complete:
        conn.execute(
            "UPDATE rollup_state SET watermark = target, target = NULL, done_through = NULL,"
            " refreshed_at = now() WHERE name = 'telemetry'"
        )
        conn.commit()
    return changed, hourly, daily, complete


def _mark_done(conn: psycopg.Connection[TupleRow], high: str) -> None:
    """Record (in the caller's transaction) that every asset up to ``high`` is refreshed."""
    conn.execute("UPDATE rollup_state SET done_through = %s WHERE name = 'telemetry'", (high,))


def _incremental_refresh(
    conn: psycopg.Connection[TupleRow], params: dict[str, object], stop: Stop
) -> tuple[int, int, int, bool]:
    conn.execute("DROP TABLE IF EXISTS rollup_changed")
    conn.execute(_CHANGED, params)
    conn.execute("CREATE INDEX ON rollup_changed (asset_id)")
    conn.execute("ANALYZE rollup_changed")
    counts = conn.execute(
        "SELECT asset_id, count(*) FROM rollup_changed GROUP BY asset_id ORDER BY asset_id"
    ).fetchall()
    conn.commit()
    changed = hourly = daily = 0
    hourly_sql = _statement("rollup_hourly", _HOURLY_VALUES, _HOURLY_CHANGED)
    daily_sql = _statement("rollup_daily", _DAILY_VALUES, _DAILY_CHANGED)
    try:
        for low, high, buckets in _ranges(counts, STEP_BUCKETS):
            if stop():
                return changed, hourly, daily, False
            step = {**params, "low": low, "high": high}
            conn.execute(_STEP, step)
            hourly += conn.execute(hourly_sql, step).rowcount
            daily += conn.execute(daily_sql, step).rowcount
            _mark_done(conn, high)
            conn.commit()
            changed += buckets
    finally:
        conn.rollback()
        conn.execute("DROP TABLE IF EXISTS rollup_changed")
        conn.commit()
    return changed, hourly, daily, True


def _ranges(counts: Sequence[tuple[str, int]], size: int) -> list[tuple[str, str, int]]:
    """Consecutive ranges of ids (inclusive, in the database's order) of about ``size`` rows."""
    ranges: list[tuple[str, str, int]] = []
    low: str | None = None
    rows = 0
    for asset_id, count in counts:
        if low is None:
            low = asset_id
        rows += count
        if rows >= size:
            ranges.append((low, asset_id, rows))
            low, rows = None, 0
    if low is not None:
        ranges.append((low, counts[-1][0], rows))
    return ranges


def _first_refresh(
    conn: psycopg.Connection[TupleRow], workers: int, after: str, stop: Stop
) -> tuple[int, int, int, bool]:
    """Every row of telemetry (of the assets after ``after``), batch by batch (see the module
    docstring), on ``conn`` and up to ``workers - 1`` more connections, each batch committed
    on its own; returns the buckets, hourly and daily rows written and whether it completed."""
    counts = conn.execute(
        "SELECT asset_id, count(*) FROM telemetry WHERE asset_id > %s"
        " GROUP BY asset_id ORDER BY asset_id",
        (after,),
    ).fetchall()
    batches = [(low, high) for low, high, _ in _ranges(counts, FIRST_BATCH_ROWS)]
    empty = conn.execute(
        "SELECT NOT EXISTS (SELECT FROM rollup_hourly) AND NOT EXISTS (SELECT FROM rollup_daily)"
    ).fetchone()
    conn.commit()
    statements = _FirstStatements(conflict=sql.SQL("" if empty and empty[0] else _CONFLICT))
    pending = iter(enumerate(batches))
    progress = _Progress([high for _, high in batches])
    failed = threading.Event()
    stopped = threading.Event()

    def work(connection: psycopg.Connection[TupleRow]) -> None:
        while not failed.is_set():
            if stop():
                stopped.set()
            if stopped.is_set():
                return
            with progress.lock:
                item = next(pending, None)
            if item is None:
                return
            index, batch = item
            try:
                with connection.transaction():
                    connection.execute(
                        sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(FIRST_WORK_MEM))
                    )
                    connection.execute(_FIRST_SETUP)
                    hourly, daily = statements.run(connection, *batch)
                progress.done(connection, index, hourly, daily)
            except BaseException:
                failed.set()  # the others stop after their current batch
                raise

    extra = [c for c in (_connect_like(conn) for _ in range(min(workers, len(batches)) - 1)) if c]
    try:
        with ThreadPoolExecutor(max_workers=len(extra) or 1) as pool:
            futures = [pool.submit(work, c) for c in extra]
            work(conn)
            for future in futures:
                future.result()
    finally:
        for c in extra:
            c.close()
    complete = progress.contiguous == len(batches)
    return progress.hourly, progress.hourly, progress.daily, complete


class _Progress:
    """The first refresh's batches committed so far, from any connection: ``done_through`` is
    advanced over the batches committed without a gap before them."""

    def __init__(self, highs: list[str]) -> None:
        self.lock = threading.Lock()
        self.highs = highs
        self.finished: set[int] = set()
        self.contiguous = 0  # batches before this index are all committed
        self.hourly = self.daily = 0

    def done(
        self, connection: psycopg.Connection[TupleRow], index: int, hourly: int, daily: int
    ) -> None:
        with self.lock:
            self.hourly += hourly
            self.daily += daily
            self.finished.add(index)
            before = self.contiguous
            while self.contiguous in self.finished:
                self.contiguous += 1
            if self.contiguous > before:
                with connection.transaction():
                    _mark_done(connection, self.highs[self.contiguous - 1])


def _connect_like(conn: psycopg.Connection[TupleRow]) -> psycopg.Connection[TupleRow] | None:
    """Another connection to the same database as ``conn``, None when the server refuses."""
    password = conn.pgconn.password
    conninfo = conn.info.dsn
    if password:
        conninfo = make_conninfo(conninfo, password=password.decode())
    try:
        return psycopg.connect(conninfo)
    except psycopg.OperationalError as exc:
        log.warning("rollups: one connection fewer for the first refresh: %s", exc)
        return None


class _FirstStatements:
    """The first refresh's statements for one batch (see the module docstring)."""

    def __init__(self, conflict: sql.SQL) -> None:
        self.single = sql.SQL(_FIRST_SINGLE) + conflict
        self.general = sql.SQL(_FIRST_GENERAL).format(
            upsert=_statement("rollup_hourly", _HOURLY_VALUES, _FIRST_GENERAL_SOURCE)
        )
        self.days = sql.SQL(_FIRST_DAYS) + conflict
        self.general_days = _statement("rollup_daily", _DAILY_VALUES, _FIRST_GENERAL_DAYS)

    def run(self, conn: psycopg.Connection[TupleRow], low: str, high: str) -> tuple[int, int]:
        """Hourly and daily rows written for the assets ``low`` to ``high``; ``conn`` is in a
        transaction with the temporary table ``rollup_general_days``."""
        params: dict[str, object] = {"origin": _EPOCH, "low": low, "high": high}
        hourly = daily = 0
        everything = False
        started = time.monotonic()
        try:
            with conn.transaction():
                hourly += conn.execute(self.single, params).rowcount
        except psycopg.errors.DataError as exc:
            log.warning(
                "rollups: assets %s to %s take the general path: %s",
                low,
                high,
                exc.diag.message_primary,
            )
            everything = True
        single_s = time.monotonic()
        row = conn.execute(self.general, {**params, "everything": everything}).fetchone()
        hourly += int(row[0]) if row else 0
        general_s = time.monotonic()
        daily += conn.execute(self.days, params).rowcount
        days_s = time.monotonic()
        daily += conn.execute(self.general_days, params).rowcount
        log.debug(
            "rollups: assets %s to %s: single-reading buckets %.1f s, general buckets %.1f s,"
            " days %.1f s, general days %.1f s",
            low,
            high,
            single_s - started,
            general_s - single_s,
            days_s - general_s,
            time.monotonic() - days_s,
        )
        return hourly, daily
