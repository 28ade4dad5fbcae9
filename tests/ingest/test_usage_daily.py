"""``usage_daily_between``: nrr's window on delivered air, equal to the ``usage_daily`` view on
the days asked for, and reading only those days of telemetry."""

from __future__ import annotations

import datetime as dt
import json

import psycopg

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def _load(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM telemetry WHERE asset_id LIKE 'u-%'")
    rows = []
    for asset, step_min, days in (("u-1", 60, 20), ("u-2", 15, 12), ("u-3", 200, 20)):
        for i in range(days * 24 * 60 // step_min):
            at = T0 + dt.timedelta(minutes=step_min * i)
            if asset == "u-1" and 5 * 24 <= i < 6 * 24:
                continue  # a silent day: the reading before it holds 120 minutes
            metrics = {"flow_m3_min": 10 + i % 7, "load_pct": 50}
            if asset == "u-2" and i % 5 == 0:
                metrics = {"load_pct": 40}  # a reading without flow does not end a duration
            rows.append((asset, at, json.dumps(metrics)))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
            " VALUES (%s, %s, now(), %s::jsonb)",
            rows,
        )
    conn.commit()


def test_the_function_equals_the_view_on_every_range(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        _load(conn)
        view = {
            (a, d): (round(v, 6), n)
            for a, d, v, n in conn.execute(
                "SELECT asset_id, day, volume_m3, readings FROM usage_daily"
            )
        }
        assert len(view) > 40
        for first, last in ((0, 19), (3, 5), (4, 6), (11, 12), (19, 25), (0, 0)):
            start = (T0 + dt.timedelta(days=first)).date()
            end = (T0 + dt.timedelta(days=last)).date()
            got = {
                (a, d): (round(v, 6), n)
                for a, d, v, n in conn.execute(
                    "SELECT asset_id, day, volume_m3, readings FROM usage_daily_between(%s, %s)",
                    (start, end),
                )
            }
            expected = {k: v for k, v in view.items() if start <= k[1] <= end}
            assert got == expected, (start, end)
        only = conn.execute(
            "SELECT DISTINCT asset_id FROM usage_daily_between(%s, %s, %s)",
            (T0.date(), (T0 + dt.timedelta(days=30)).date(), ["u-2"]),
        ).fetchall()
        assert only == [("u-2",)]


def test_the_function_reads_only_the_days_asked_for(db_url: str) -> None:
    """The time condition reaches telemetry: the plan reads it by time (on TimescaleDB, only
    the chunks of those days), where the view's plan reads every row."""
    with psycopg.connect(db_url) as conn:
        _load(conn)
        conn.execute("ANALYZE telemetry")
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM usage_daily_between(%s, %s)",
            (dt.date(2025, 3, 4), dt.date(2025, 3, 4)),
        ).fetchone()
        assert plan is not None
        text = json.dumps(plan[0])
        assert "'2025-03-04" in text or "2025-03-04" in text
        scanned = _rows_read(plan[0][0]["Plan"])
        total = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        assert total is not None
        assert scanned < total[0] / 5, (scanned, total[0])


def _rows_read(node: dict[str, object]) -> int:
    """Rows the scans of telemetry (or its chunks) returned, over the whole plan."""
    rows = 0
    if (
        "Scan" in str(node.get("Node Type", ""))
        and "chunk" in str(node.get("Relation Name", "")) + str(node.get("Alias", ""))
    ) or node.get("Relation Name") == "telemetry":
        rows += int(str(node.get("Actual Rows", 0))) * int(str(node.get("Actual Loops", 1)))
    for child in node.get("Plans", []) or []:  # type: ignore[attr-defined]
        rows += _rows_read(child)
    return rows
