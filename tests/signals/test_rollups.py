"""Rollups from real telemetry rows: values, incremental refresh, idempotence."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg.types.json import Jsonb

from signals.rollups import refresh_rollups

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
        hourly = conn.execute(
            "SELECT bucket, samples, stats FROM rollup_hourly WHERE asset_id = 'r-1'"
            " ORDER BY bucket"
        ).fetchall()
        daily = conn.execute(
            "SELECT samples, stats FROM rollup_daily WHERE asset_id = 'r-1'"
        ).fetchall()
        assert first.buckets == 2
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
        assert again.buckets >= 1
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
