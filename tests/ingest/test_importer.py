"""History import from CSV into the real database: round trips, bad rows, idempotence."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import psycopg
import pytest

from core.errors import ConfigError, InputError
from ingest.decode import Limits
from ingest.importer import CsvLayout, import_events, import_telemetry
from tests.fix_ingest import register

T0 = dt.datetime(2025, 3, 1, 0, 0, tzinfo=dt.UTC)


def _rows(db_url: str, asset_prefix: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT asset_id, time, metrics FROM telemetry WHERE asset_id LIKE %s"
            " ORDER BY asset_id, time",
            (f"{asset_prefix}%",),
        ).fetchall()


def _dead(db_url: str, path: Path) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT line, reason FROM dead_letters WHERE topic = %s ORDER BY line",
            (f"file:{path}",),
        ).fetchall()


def test_wide_csv_round_trip_and_reimport_adds_nothing(db_url: str, tmp_path: Path) -> None:
    register(db_url, [("w", "w-1"), ("w", "w-2")])
    path = tmp_path / "wide.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("timestamp,asset,load_pct,pressure_bar\n")
        handle.write("2025-03-01T00:00:00Z,w-1,50.5,7.1\n")
        handle.write("2025-03-01T01:00:00+01:00,w-2,60,\n")  # empty cell: not measured
        handle.write("2025-03-01 02:00:00,w-1,70,7.3\n")  # naive: read as UTC
    layout = CsvLayout(asset_column="asset")
    first = import_telemetry(db_url, path, layout, Limits())
    second = import_telemetry(db_url, path, layout, Limits())
    assert (first.rows, first.readings, first.values, first.dead_letters) == (3, 3, 5, 0)
    assert second.readings == 3  # merged, not added
    assert _rows(db_url, "w-") == [
        ("w-1", T0, {"load_pct": 50.5, "pressure_bar": 7.1}),
        ("w-1", T0 + dt.timedelta(hours=2), {"load_pct": 70, "pressure_bar": 7.3}),
        ("w-2", T0, {"load_pct": 60}),
    ]


def test_long_csv_groups_rows_into_readings(db_url: str, tmp_path: Path) -> None:
    register(db_url, [("l", "l-1")])
    path = tmp_path / "long.csv"
    path.write_text(
        "time;asset_id;name;reading\n"
        "1740787200000;l-1;load_pct;10\n"
        "1740787200000;l-1;flow_m3_min;1.5\n"
        "1740790800000;l-1;load_pct;20\n"
    )
    layout = CsvLayout(
        format="long", asset_column="asset_id", metric_column="name", value_column="reading"
    )
    result = import_telemetry(db_url, path, layout, Limits())
    assert (result.rows, result.readings, result.values) == (3, 2, 3)
    assert _rows(db_url, "l-") == [
        ("l-1", T0, {"load_pct": 10, "flow_m3_min": 1.5}),
        ("l-1", T0 + dt.timedelta(hours=1), {"load_pct": 20}),
    ]


def test_bad_rows_become_dead_letters_with_line_numbers(db_url: str, tmp_path: Path) -> None:
    register(db_url, [("b", "b-1")])
    path = tmp_path / "bad.csv"
    path.write_text(
        "time,asset,load_pct\n"
        "2025-03-01T00:00:00Z,b-1,1\n"
        "not a time,b-1,2\n"
        "2025-03-01T01:00:00Z,b-1,abc\n"
        "2025-03-01T02:00:00Z,b-1,nan\n"
        "2025-03-01T03:00:00Z,ghost,4\n"
        "2025-03-01T04:00:00Z,b-1\n"
        "2999-01-01T00:00:00Z,b-1,6\n"
        "2025-03-01T05:00:00Z,b-1,7\n"
    )
    result = import_telemetry(db_url, path, CsvLayout(asset_column="asset"), Limits())
    assert (result.rows, result.readings) == (8, 2)
    dead = _dead(db_url, path)
    assert [line for line, _ in dead] == [3, 4, 5, 6, 7, 8]
    reasons = {row[0]: row[1] for row in dead}
    assert "not an ISO 8601 time" in str(reasons[3])
    assert "load_pct" in str(reasons[4])
    assert "finite" in str(reasons[5])
    assert "unknown asset 'ghost'" in str(reasons[6])
    assert "2 fields" in str(reasons[7])
    assert "future" in str(reasons[8])
    again = import_telemetry(db_url, path, CsvLayout(asset_column="asset"), Limits())
    assert again.dead_letters == 6
    assert len(_dead(db_url, path)) == 6  # a re-import does not double dead letters


def test_headerless_whitespace_file_with_counted_time_and_series_end(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "engines.txt"
    path.write_text("1 1 0.5 641.8\n1 2 0.6 642.1  \n2 1 0.4 640.9\n")
    layout = CsvLayout(
        delimiter="whitespace",
        header=False,
        columns=("unit", "cycle", "op1", "s2"),
        asset_column="unit",
        asset_prefix="engine-",
        time_column="cycle",
        time_format="cycles",
        time_origin=T0,
        account="nasa",
        series_end_event="failure",
    )
    result = import_telemetry(db_url, path, layout, Limits())
    assert (result.readings, result.events) == (3, 2)
    rows = _rows(db_url, "engine-")
    assert rows[0] == ("engine-1", T0 + dt.timedelta(hours=1), {"op1": 0.5, "s2": 641.8})
    with psycopg.connect(db_url) as conn:
        ends = conn.execute(
            "SELECT asset_id, time FROM asset_events WHERE kind = 'failure'"
            " AND asset_id LIKE 'engine-%' ORDER BY 1"
        ).fetchall()
        owner = conn.execute("SELECT account_id FROM assets WHERE asset_id = 'engine-2'").fetchone()
    assert ends == [
        ("engine-1", T0 + dt.timedelta(hours=2)),
        ("engine-2", T0 + dt.timedelta(hours=1)),
    ]
    assert owner == ("nasa",)


def test_events_csv_with_fixed_kind_and_extra_columns(db_url: str, tmp_path: Path) -> None:
    register(db_url, [("e", "e-7")])
    path = tmp_path / "failures.csv"
    path.write_text("datetime,machineID,failure,note\n2015-01-05 06:00:00,7,comp4,bearing\n")
    layout = CsvLayout(
        asset_column="machineID", asset_prefix="e-", kind="failure", component_column="failure"
    )
    result = import_events(db_url, path, layout, Limits())
    assert (result.events, result.dead_letters) == (1, 0)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT time, kind, component, detail FROM asset_events WHERE asset_id = 'e-7'"
        ).fetchone()
    assert row == (
        dt.datetime(2015, 1, 5, 6, tzinfo=dt.UTC),
        "failure",
        "comp4",
        {"note": "bearing"},
    )


def test_layout_problems_are_reported_before_anything_is_written(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("Unnamed: 0,time,value x\n0,2025-03-01T00:00:00Z,1\n")
    with pytest.raises(InputError, match="not metric names"):
        import_telemetry(db_url, path, CsvLayout(asset="a"), Limits())
    with pytest.raises(ConfigError, match="--asset"):
        import_telemetry(db_url, path, CsvLayout(), Limits())
    with pytest.raises(InputError, match="cannot open"):
        import_telemetry(db_url, tmp_path / "missing.csv", CsvLayout(asset="a"), Limits())
