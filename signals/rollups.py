"""Incremental refresh of the hourly and daily rollups (set-based, in the database).

A refresh finds the (asset, hour) buckets touched by telemetry written since the last refresh
(``ingested_at`` above the watermark, minus a safety overlap for transactions that were still
open), recomputes those buckets whole from telemetry, then the days that contain them from the
hourly rollup. Recomputing whole buckets makes a refresh idempotent: running it twice, or over
an overlap, changes nothing.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

OVERLAP = dt.timedelta(minutes=5)  # longer than any write transaction of the ingesters
FIRST_BATCH_ROWS = 200_000  # readings per batch of the first refresh
FIRST_WORK_MEM = "64MB"  # per sort / hash of the first refresh (a batch's window partition)
FIRST_WORKERS = 2  # connections the first refresh works on (batches in parallel)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_CHANGED = """
CREATE TEMP TABLE rollup_changed ON COMMIT DROP AS
SELECT DISTINCT asset_id, date_bin('1 hour', time, %(origin)s) AS bucket
FROM telemetry WHERE ingested_at > %(since)s AND ingested_at <= %(until)s
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
_HOURLY_CHANGED = """rollup_changed c
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
      FROM rollup_changed) d
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


def _upsert(table: str, values: str, source: str) -> str:
    return _UPSERT.format(table=table, values=values.format(source=source))


def _statement(table: str, values: str, source: str) -> bytes:
    return _upsert(table, values, source).encode()


@dataclass(frozen=True)
class RefreshResult:
    buckets: int
    hourly_rows: int
    daily_rows: int
    seconds: float


def refresh_rollups(
    conn: psycopg.Connection[TupleRow], workers: int = FIRST_WORKERS
) -> RefreshResult:
    """Bring the rollups up to date with telemetry written since the last refresh.

    A first refresh works on ``workers`` connections at once (``conn`` and more to the same
    database); their batches commit as they finish, so a first refresh that fails leaves part
    of the rollups written and no watermark: the next refresh is a first one again."""
    started = time.monotonic()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7420240002)")  # one refresher at a time
        row = conn.execute("SELECT watermark FROM rollup_state WHERE name = 'telemetry'").fetchone()
        since = (row[0] - OVERLAP) if row else _EPOCH
        until_row = conn.execute("SELECT now()").fetchone()
        assert until_row is not None
        until = until_row[0]
        params = {"since": since, "until": until, "origin": _EPOCH}
        if row is None:
            changed, hourly, daily = _first_refresh(conn, workers)
        else:
            changed, hourly, daily = _incremental_refresh(conn, params)
        conn.execute(
            "INSERT INTO rollup_state (name, watermark) VALUES ('telemetry', %s)"
            " ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark,"
            " refreshed_at = now()",
            (until,),
        )
    result = RefreshResult(changed, hourly, daily, time.monotonic() - started)
    log.info(
        "rollups refreshed: %d hour buckets, %d hourly and %d daily rows in %.1f s",
        changed,
        hourly,
        daily,
        result.seconds,
    )
    return result


def _incremental_refresh(
    conn: psycopg.Connection[TupleRow], params: dict[str, object]
) -> tuple[int, int, int]:
    conn.execute(_CHANGED, params)
    conn.execute("ANALYZE rollup_changed")
    changed_row = conn.execute("SELECT count(*) FROM rollup_changed").fetchone()
    changed = int(changed_row[0]) if changed_row else 0
    if not changed:
        return 0, 0, 0
    hourly = conn.execute(
        _statement("rollup_hourly", _HOURLY_VALUES, _HOURLY_CHANGED), params
    ).rowcount
    daily = conn.execute(_statement("rollup_daily", _DAILY_VALUES, _DAILY_CHANGED), params).rowcount
    return changed, hourly, daily


def _batches(conn: psycopg.Connection[TupleRow]) -> list[tuple[str, str]]:
    """Ranges of asset ids (inclusive, in the database's order) of about FIRST_BATCH_ROWS
    readings each."""
    batches: list[tuple[str, str]] = []
    low: str | None = None
    rows = 0
    for asset_id, count in conn.execute(_FIRST_ASSETS):
        if low is None:
            low = asset_id
        rows += count
        if rows >= FIRST_BATCH_ROWS:
            batches.append((low, asset_id))
            low, rows = None, 0
    if low is not None:
        batches.append((low, asset_id))
    return batches


def _first_refresh(conn: psycopg.Connection[TupleRow], workers: int) -> tuple[int, int, int]:
    """Every row of telemetry, batch by batch (see the module docstring), on ``conn`` and up
    to ``workers - 1`` more connections; returns the buckets, hourly and daily rows written."""
    batches = _batches(conn)
    empty = conn.execute(
        "SELECT NOT EXISTS (SELECT FROM rollup_hourly) AND NOT EXISTS (SELECT FROM rollup_daily)"
    ).fetchone()
    statements = _FirstStatements(conflict="" if empty and empty[0] else _CONFLICT)
    conn.execute(f"SET LOCAL work_mem = '{FIRST_WORK_MEM}'")
    conn.execute(_FIRST_SETUP)
    pending = iter(batches)
    lock = threading.Lock()
    totals = [0, 0]

    failed = threading.Event()

    def work(connection: psycopg.Connection[TupleRow], own_transactions: bool) -> None:
        while not failed.is_set():
            with lock:
                batch = next(pending, None)
            if batch is None:
                return
            try:
                hourly, daily = _batch(connection, batch, own_transactions)
            except BaseException:
                failed.set()  # the others stop after their current batch
                raise
            with lock:
                totals[0] += hourly
                totals[1] += daily

    def _batch(
        connection: psycopg.Connection[TupleRow], batch: tuple[str, str], own_transactions: bool
    ) -> tuple[int, int]:
        if not own_transactions:
            return statements.run(connection, *batch)
        with connection.transaction():
            connection.execute(f"SET LOCAL work_mem = '{FIRST_WORK_MEM}'")
            connection.execute(_FIRST_SETUP)
            return statements.run(connection, *batch)

    extra = [c for c in (_connect_like(conn) for _ in range(min(workers, len(batches)) - 1)) if c]
    try:
        with ThreadPoolExecutor(max_workers=len(extra) or 1) as pool:
            futures = [pool.submit(work, c, True) for c in extra]
            work(conn, False)
            for future in futures:
                future.result()
    finally:
        for c in extra:
            c.close()
    return totals[0], totals[0], totals[1]


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

    def __init__(self, conflict: str) -> None:
        self.single = (_FIRST_SINGLE + conflict).encode()
        self.general = _FIRST_GENERAL.format(
            upsert=_upsert("rollup_hourly", _HOURLY_VALUES, _FIRST_GENERAL_SOURCE)
        ).encode()
        self.days = (_FIRST_DAYS + conflict).encode()
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
