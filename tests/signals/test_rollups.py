"""Rollups from real telemetry rows: values, incremental refresh, idempotence."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import signals.rollups
from basewatch.wiring import PACKAGES
from core.db import database_name, drop_database, ensure_database, with_database
from core.migrate import migrate, timescale_available
from ingest.decode import Limits
from ingest.messages import decode_message
from ingest.store import BatchWriter
from signals.rollups import refresh_rollups
from tests.fix_db import TEST_SERVER_URL, clone, needs_rollup_tables

T0 = dt.datetime(2025, 6, 2, 10, 0, tzinfo=dt.UTC)


def _insert(conn: psycopg.Connection, asset: str, minutes: int, metrics: dict[str, float]) -> None:
    conn.execute(
        "INSERT INTO telemetry (asset_id, time, received_at, metrics) VALUES (%s, %s, %s, %s)",
        (asset, T0 + dt.timedelta(minutes=minutes), T0, Jsonb(metrics)),
    )


def test_hourly_and_daily_stats_and_incremental_refresh(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        _insert(conn, "r-1", 0, {"load_pct": 10, "energy_kwh": 100})
        _insert(conn, "r-1", 20, {"load_pct": 30, "energy_kwh": 105})
        _insert(conn, "r-1", 70, {"load_pct": 50})
        conn.commit()
        first = refresh_rollups(conn)
        aggregates = first.aggregates
        hourly = conn.execute(
            "SELECT bucket, samples, stats FROM rollup_hourly WHERE asset_id = 'r-1'"
            " ORDER BY bucket"
        ).fetchall()
        daily = conn.execute(
            "SELECT samples, stats FROM rollup_daily WHERE asset_id = 'r-1'"
        ).fetchall()
        assert aggregates or first.buckets == 2
        assert hourly == [
            (T0, 2, {"load_pct": [20, 10, 30, 30, 2], "energy_kwh": [102.5, 100, 105, 105, 2]}),
            (T0 + dt.timedelta(hours=1), 1, {"load_pct": [50, 50, 50, 50, 1]}),
        ]
        assert daily == [
            (3, {"load_pct": [30, 10, 50, 50, 3], "energy_kwh": [102.5, 100, 105, 105, 2]})
        ]
        # a refresh recomputes the recent buckets again (an overlap for transactions still
        # open at the last refresh): the result does not change
        refresh_rollups(conn)
        assert (
            conn.execute(
                "SELECT bucket, samples, stats FROM rollup_hourly WHERE asset_id = 'r-1'"
                " ORDER BY bucket"
            ).fetchall()
            == hourly
        )
        _insert(conn, "r-1", 80, {"load_pct": 70})
        conn.commit()
        again = refresh_rollups(conn)
        assert aggregates or again.buckets == 1
        row = conn.execute(
            "SELECT samples, stats -> 'load_pct' FROM rollup_hourly WHERE asset_id = 'r-1'"
            " AND bucket = %s",
            (T0 + dt.timedelta(hours=1),),
        ).fetchone()
        assert row == (2, [60, 50, 70, 70, 2])
        day = conn.execute(
            "SELECT samples, stats -> 'load_pct' FROM rollup_daily WHERE asset_id = 'r-1'"
        ).fetchone()
        assert day is not None
        assert day[0] == 4
        assert day[1] == pytest.approx([40, 10, 70, 70, 4])


# Values whose text is not what double precision prints (trailing zeros, negative zero, long
# decimals), numbers at the edges of the float range, integers, a JSON null, and metric names
# that need escaping in JSON.
_AWKWARD = (
    "55.30",
    "0.00",
    "-0.0",
    "-0.50",
    "0.0000001",
    "123456789.123456789",
    "0.30000000000000004",
    "1e20",
    "7",
    "-12",
    "1000000000000000.0",
    "99.999",
    "null",
)


def _readings(asset: str, hours: int, per_hour: dict[int, int], seed: int) -> list[tuple[Any, ...]]:
    """Hourly readings (several in the hours of ``per_hour``) with awkward values and a metric
    that only some readings carry."""
    rows = []
    for hour in range(hours):
        for k in range(per_hour.get(hour, 1)):
            i = seed + hour * 7 + k * 3
            pairs = [
                f'"load_pct": {_AWKWARD[i % len(_AWKWARD)]}',
                f'"energy_kwh": {1000 + hour * 12.5 + k}',
                f'"pressure_bar": {(i % 90) / 10:.2f}',
                '"odd \\"name\\" \\\\ here": ' + _AWKWARD[(i + 5) % len(_AWKWARD)],
            ]
            if hour % 5 == 0:
                pairs.append(f'"starts": {hour}')
            when = T0 + dt.timedelta(hours=hour, minutes=10 + 20 * k)
            rows.append((asset, when, "{" + ", ".join(pairs) + "}"))
    return rows


_State = dict[str, list[tuple[Any, ...]]]


def _state(conn: psycopg.Connection) -> _State:
    return {
        table: conn.execute(
            f"SELECT asset_id, bucket, samples, stats FROM {table} ORDER BY asset_id, bucket"
        ).fetchall()
        for table in ("rollup_hourly", "rollup_daily")
    }


def _assert_same(first: _State, second: _State) -> None:
    """Identical rollups, but for the daily mean's last bits (a sum of floats in another order)."""
    assert first["rollup_hourly"] == second["rollup_hourly"]
    assert len(first["rollup_daily"]) == len(second["rollup_daily"])
    for a, b in zip(first["rollup_daily"], second["rollup_daily"], strict=True):
        assert a[:3] == b[:3]
        assert a[3].keys() == b[3].keys()
        for metric, stats in a[3].items():
            other = b[3][metric]
            assert stats[1:] == other[1:], (a[:2], metric)
            assert stats[0] == pytest.approx(other[0], rel=1e-12), (a[:2], metric)


def _recompute_by_the_general_path(conn: psycopg.Connection) -> None:
    """An incremental refresh whose window starts at the epoch: every bucket is 'changed'."""
    conn.execute("UPDATE rollup_state SET watermark = '1970-01-01 00:05:00+00'")
    conn.commit()
    refresh_rollups(conn)


def test_first_refresh_fast_path_equals_general_path(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import signals.rollups

    monkeypatch.setattr(signals.rollups, "FIRST_BATCH_ROWS", 40)  # several batches
    connections: list[object] = []
    connect_like = signals.rollups._connect_like

    def counted(conn: psycopg.Connection) -> psycopg.Connection | None:
        connections.append(extra := connect_like(conn))
        return extra

    monkeypatch.setattr(signals.rollups, "_connect_like", counted)
    with psycopg.connect(db_url) as conn:
        needs_rollup_tables(conn)  # the first refresh's own path exists on plain tables only
        conn.execute("TRUNCATE telemetry, rollup_hourly, rollup_daily, rollup_state")
        rows = (
            _readings("f-1", 60, {}, 0)  # one reading an hour
            + _readings("f-2", 60, {3: 2, 4: 3, 30: 2}, 1)  # some hours hold several
            + _readings("f-3", 30, {}, 2)
        )
        rows.append(("f-3", T0 + dt.timedelta(hours=40), "{}"))  # a reading with no metrics
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
                " VALUES (%s, %s, now(), %s::jsonb)",
                rows,
            )
        conn.commit()
        with caplog.at_level(logging.WARNING, logger="signals.rollups"):
            first = refresh_rollups(conn)
        assert not caplog.records  # every batch took the fast path for its single readings
        assert connections  # batches ran on a second connection too
        assert all(connections)
        fast = _state(conn)
        assert first.hourly_rows == len(fast["rollup_hourly"]) == 60 + 60 + 30
        assert len(fast["rollup_daily"]) == 3 + 3 + 2
        by_bucket = {(a, b): (s, stats) for a, b, s, stats in fast["rollup_hourly"]}
        assert by_bucket[("f-1", T0)] == (
            1,
            {
                "load_pct": [55.3, 55.3, 55.3, 55.3, 1],
                "energy_kwh": [1000, 1000, 1000, 1000, 1],
                "pressure_bar": [0, 0, 0, 0, 1],
                'odd "name" \\ here': [123456789.12345679] * 4 + [1],
                "starts": [0, 0, 0, 0, 1],
            },
        )
        _recompute_by_the_general_path(conn)
        _assert_same(fast, _state(conn))

        # late data: a second reading into a bucket that held one, and a new bucket
        conn.execute(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics) VALUES"
            " ('f-1', %s, now(), '{\"load_pct\": 80.10, \"starts\": 3}'),"
            " ('f-3', %s, now(), '{\"load_pct\": 1.50}')",
            (T0 + dt.timedelta(hours=2, minutes=50), T0 + dt.timedelta(hours=50)),
        )
        conn.commit()
        refresh_rollups(conn)
        incremental = _state(conn)
        late = ("f-1", T0 + dt.timedelta(hours=2))
        assert [r[2] for r in incremental["rollup_hourly"] if r[:2] == late] == [2]
        conn.execute("TRUNCATE rollup_hourly, rollup_daily, rollup_state")
        conn.commit()
        refresh_rollups(conn)  # a first refresh again, over the late data too
        _assert_same(incremental, _state(conn))


def test_first_refresh_takes_the_general_path_for_names_json_text_cannot_carry(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(db_url) as conn:
        needs_rollup_tables(conn)
        conn.execute("TRUNCATE telemetry, rollup_hourly, rollup_daily, rollup_state")
        conn.execute(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics) VALUES"
            " ('g-1', %s, now(), %s), ('g-1', %s, now(), %s)",
            (T0, Jsonb({"tab\there": 1.5, "x": 2}), T0 + dt.timedelta(hours=1), Jsonb({"x": 3})),
        )
        conn.commit()
        with caplog.at_level(logging.WARNING, logger="signals.rollups"):
            refresh_rollups(conn)
        assert "take the general path" in caplog.text
        assert conn.execute(
            "SELECT samples, stats FROM rollup_hourly ORDER BY bucket"
        ).fetchall() == [
            (1, {"tab\there": [1.5, 1.5, 1.5, 1.5, 1], "x": [2, 2, 2, 2, 1]}),
            (1, {"x": [3, 3, 3, 3, 1]}),
        ]
        assert conn.execute("SELECT samples, stats FROM rollup_daily").fetchall() == [
            (2, {"tab\there": [1.5, 1.5, 1.5, 1.5, 1], "x": [2.5, 2, 3, 3, 2]})
        ]


def _fresh(template_url: str) -> str:
    import uuid

    return clone(database_name(template_url), f"bw_test_{uuid.uuid4().hex[:8]}")


def _rows(conn: psycopg.Connection, hours: int, assets: int = 3) -> None:
    conn.execute(
        "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
        " SELECT 'b-' || a, %s + h * INTERVAL '1 hour', now(),"
        " jsonb_build_object('load_pct', h %% 100, 'flow_m3_min', 10)"
        " FROM generate_series(1, %s) a, generate_series(0, %s - 1) h",
        (T0, assets, hours),
    )
    conn.commit()


def test_a_refresh_after_a_bulk_load_does_not_read_it_again(template_url: str) -> None:
    """The watermark is exact (no fixed look-back): a refresh right after one that read a bulk
    load recomputes nothing, and one more reading costs one bucket."""
    url = _fresh(template_url)
    try:
        with psycopg.connect(url) as conn:
            needs_rollup_tables(conn)
            _rows(conn, 24 * 20)
            assert refresh_rollups(conn).buckets == 3 * 24 * 20
            assert refresh_rollups(conn).buckets == 0
            _insert(conn, "b-1", 30, {"load_pct": 99})
            conn.commit()
            assert refresh_rollups(conn).buckets == 1
    finally:
        drop_database(url)


def test_a_transaction_open_during_a_refresh_is_read_by_the_next(template_url: str) -> None:
    """A row written by a transaction that started before a refresh and commits after it has
    an ingested_at below that refresh's bound: the bound stops at the open transaction."""
    url = _fresh(template_url)
    try:
        with psycopg.connect(url) as conn, psycopg.connect(url) as writer:
            needs_rollup_tables(conn)
            _rows(conn, 5)
            refresh_rollups(conn)
            writer.execute(  # open, uncommitted: its ingested_at is its start
                "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
                " VALUES ('b-9', %s, now(), '{\"load_pct\": 5}')",
                (T0,),
            )
            _insert(conn, "b-1", 200, {"load_pct": 7})
            conn.commit()
            # b-1's row waits too: written after the open transaction started
            assert refresh_rollups(conn).buckets == 0
            writer.commit()
            assert refresh_rollups(conn).buckets == 2  # b-9's and b-1's
            assert refresh_rollups(conn).buckets == 0
            row = conn.execute(
                "SELECT samples FROM rollup_hourly WHERE asset_id = 'b-9'"
            ).fetchone()
            assert row == (1,)
    finally:
        drop_database(url)


def test_a_merged_redelivery_reaches_its_rollup(db_url: str) -> None:
    """A reading sent again with a metric more is merged into the stored row by the writer;
    the merge sets ingested_at, so the next refresh puts the new metric into the hour."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO accounts (account_id, name) VALUES ('acc-m', 'M')")
        conn.execute("INSERT INTO assets (asset_id, account_id) VALUES ('m-1', 'acc-m')")
        conn.commit()
        topic = "basewatch/v1/acc-m/m-1/telemetry"
        at = int(T0.timestamp() * 1000)
        writer = BatchWriter(db_url)
        try:
            for payload in (
                b'{"ts": %d, "metrics": {"load_pct": 40}}' % at,
                b'{"ts": %d, "metrics": {"load_pct": 40, "late_probe": 3.5}}' % at,
            ):
                message = decode_message(
                    topic, payload, prefix="basewatch/v1", limits=Limits(), received_at=T0
                )
                writer.write([message])
                refresh_rollups(conn)
        finally:
            writer.close()
        row = conn.execute(
            "SELECT stats FROM rollup_hourly WHERE asset_id = 'm-1' AND bucket = %s", (T0,)
        ).fetchone()
        assert row is not None
        assert row[0] == {"load_pct": [40, 40, 40, 40, 1], "late_probe": [3.5, 3.5, 3.5, 3.5, 1]}
        day = conn.execute("SELECT stats FROM rollup_daily WHERE asset_id = 'm-1'").fetchone()
        assert day is not None
        assert "late_probe" in day[0]


def test_a_stopped_refresh_resumes_where_it_stopped(
    template_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both kinds of refresh commit step by step; a stop between steps leaves the steps done
    committed and the next refresh does only the rest, ending where an unbroken one does."""
    monkeypatch.setattr(signals.rollups, "FIRST_BATCH_ROWS", 40)  # an asset a batch
    monkeypatch.setattr(signals.rollups, "STEP_BUCKETS", 40)
    url = _fresh(template_url)
    try:
        with psycopg.connect(url) as conn:
            needs_rollup_tables(conn)
            _rows(conn, 48, assets=6)  # 6 batches/steps of 48 readings each
            calls = [0]

            def stop_after_two() -> bool:
                calls[0] += 1
                return calls[0] > 2

            first = refresh_rollups(conn, workers=1, stop=stop_after_two)
            assert not first.complete
            assert first.hourly_rows == 2 * 48
            state = conn.execute(
                "SELECT target IS NOT NULL, done_through FROM rollup_state"
            ).fetchone()
            assert state == (True, "b-2")
            rest = refresh_rollups(conn)
            assert rest.complete
            assert rest.hourly_rows == 4 * 48
            resumed = _state(conn)
            # an incremental refresh over everything, stopped, then resumed
            _recompute = "UPDATE rollup_state SET watermark = '1970-01-01 00:05:00+00'"
            conn.execute(_recompute)
            conn.commit()
            calls[0] = 0
            part = refresh_rollups(conn, stop=stop_after_two)
            assert (part.complete, part.buckets) == (False, 2 * 48)
            rest = refresh_rollups(conn)
            assert (rest.complete, rest.buckets) == (True, 4 * 48)
            assert refresh_rollups(conn).buckets == 0
            _assert_same(resumed, _state(conn))
    finally:
        drop_database(url)


def test_both_engines_compute_the_same_rollups(db_url: str) -> None:
    """TimescaleDB's continuous aggregates and the plain path's tables: the same figures for
    the same telemetry, late and merged data included (runs where the server has both)."""
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as admin:
        if not timescale_available(admin):
            pytest.skip("needs a server with TimescaleDB (BASEWATCH_TEST_TIMESCALE_URL)")
    import uuid

    plain_url, timescale_url = (
        with_database(TEST_SERVER_URL, f"bw_test_{uuid.uuid4().hex[:8]}") for _ in range(2)
    )
    ensure_database(plain_url)
    ensure_database(timescale_url)
    try:
        with psycopg.connect(plain_url, autocommit=True) as conn:
            assert migrate(conn, PACKAGES, "off").timescale is False
        with psycopg.connect(timescale_url, autocommit=True) as conn:
            assert migrate(conn, PACKAGES, "on").timescale is True
        states = []
        for url in (plain_url, timescale_url):
            with psycopg.connect(url) as conn:
                rows = _readings("e-1", 50, {3: 2, 4: 3}, 0) + _readings("e-2", 30, {}, 1)
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
                        " VALUES (%s, %s, now(), %s::jsonb)",
                        rows,
                    )
                conn.commit()
                refresh_rollups(conn)
                conn.execute(  # late data, and a merge into a stored reading
                    "INSERT INTO telemetry (asset_id, time, received_at, metrics) VALUES"
                    " ('e-1', %s, now(), '{\"load_pct\": 80.1}')",
                    (T0 + dt.timedelta(hours=2, minutes=55),),
                )
                conn.execute(
                    "UPDATE telemetry SET metrics = metrics || '{\"late\": 2}',"
                    " ingested_at = now() WHERE asset_id = 'e-2' AND time < %s",
                    (T0 + dt.timedelta(hours=1),),
                )
                conn.commit()
                refresh_rollups(conn)
                states.append(_state(conn))
        _assert_same(states[0], states[1])
    finally:
        drop_database(plain_url)
        drop_database(timescale_url)
