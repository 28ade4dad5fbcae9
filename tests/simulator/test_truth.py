"""The ground truth through the database: what the simulator stores is what the backtest is
given (every event, each account's story, whether a failure was foreseeable), storing replaces
the previous run's, ``ground_truth.csv`` of this version and of before issue 13 loads, and
migration 002 adds the failure columns to a database migrated before it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow

from basewatch.wiring import PACKAGES
from core.db import drop_database, ensure_database, with_database
from core.migrate import discover, migrate, timescale_available
from signals.truth import LABELLED_KINDS, TruthEvent
from simulator.fleet import STORIES, make_fleet
from simulator.simulate import FAILURE_TRUTH_COLUMNS, GROUND_TRUTH_COLUMNS, run, write_csv
from simulator.truth import load_truth, read_ground_truth_csv, store_ground_truth
from tests.fix_db import TEST_SERVER_URL

END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _event(row: dict[str, object]) -> TruthEvent:
    time = row["time"]
    assert isinstance(time, dt.datetime)
    kind, account, asset, component = (
        str(row[k]) for k in ("kind", "account_id", "asset_id", "component")
    )
    return TruthEvent(kind, account, asset, component, time, row.get("foreseeable") is not False)


def test_stored_truth_loads_as_the_backtests_labelled_truth(db_url: str) -> None:
    fleet = make_fleet(
        seed=5, accounts=12, assets=40, months=14, end=END, mix=dict.fromkeys(STORIES, 1.0)
    )
    truth = run(fleet, None).truth
    with psycopg.connect(db_url) as conn:
        store_ground_truth(conn, truth)
        labelled = load_truth(conn)
    expected = {_event(r) for r in truth if r["kind"] != "story"}
    assert set(labelled.events) == expected
    assert len(labelled.events) == len(expected)
    assert {e.kind for e in labelled.events} >= {"failure", "churn", "expansion"}
    failures = [e for e in labelled.events if e.kind == "failure"]
    assert {e.foreseeable for e in failures} == {True, False}
    assert all(e.foreseeable for e in labelled.events if e.kind != "failure")
    assert dict(labelled.stories) == {a.account_id: a.story for a in fleet.accounts}
    since, until = fleet.start + dt.timedelta(days=90), END
    assert labelled.between(since, until) == {
        e for e in expected if e.kind in LABELLED_KINDS and since <= e.time < until
    }


def test_storing_replaces_the_previous_truth(db_url: str) -> None:
    first = make_fleet(seed=1, accounts=3, assets=6, months=4, end=END, mix={"declining": 1.0})
    second = make_fleet(seed=2, accounts=2, assets=4, months=4, end=END, mix={"leaky": 1.0})
    with psycopg.connect(db_url) as conn:
        store_ground_truth(conn, run(first, None).truth)
        store_ground_truth(conn, run(second, None).truth)
        labelled = load_truth(conn)
    assert dict(labelled.stories) == {a.account_id: "leaky" for a in second.accounts}


def _failure_columns(conn: psycopg.Connection[TupleRow]) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'ground_truth' AND column_name = ANY(%s) ORDER BY column_name",
        (list(FAILURE_TRUTH_COLUMNS),),
    ).fetchall()


def test_the_csv_of_this_version_and_of_before_issue_13_load(db_url: str, tmp_path: Path) -> None:
    fleet = make_fleet(seed=3, accounts=6, assets=20, months=12, end=END)
    truth = run(fleet, None).truth
    write_csv(tmp_path / "ground_truth.csv", GROUND_TRUTH_COLUMNS, truth)
    read = read_ground_truth_csv(tmp_path / "ground_truth.csv")
    assert len(read) == len(truth)
    for got, written in zip(read, truth, strict=True):
        for column in GROUND_TRUTH_COLUMNS:
            if column in ("value", "lead_hours", "lead_running_hours"):
                expected = written[column]
                assert (got[column] is None) == (expected is None), column
                if expected is not None:
                    assert float(str(got[column])) == pytest.approx(float(str(expected)))
            else:
                assert got[column] == written[column], column
    assert any(r["foreseeable"] is False for r in read if r["kind"] == "failure")
    # a file of before issue 13: the first seven columns only
    old = tmp_path / "old_ground_truth.csv"
    write_csv(
        old,
        GROUND_TRUTH_COLUMNS[:7],
        [{k: v for k, v in r.items() if k in GROUND_TRUTH_COLUMNS[:7]} for r in truth],
    )
    assert old.read_text().splitlines()[0] == "kind,account_id,asset_id,component,time,value,detail"
    rows = read_ground_truth_csv(old)
    assert all(r["mode"] == "" and r["foreseeable"] is None for r in rows)
    with psycopg.connect(db_url) as conn:
        store_ground_truth(conn, rows)
        labelled = load_truth(conn)
    assert {e.kind for e in labelled.events} >= {"failure"}
    assert all(e.foreseeable for e in labelled.events)  # unknown: every failure counts


@pytest.fixture
def empty_url() -> Iterator[str]:
    url = with_database(TEST_SERVER_URL, f"bw_truth_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    yield url
    drop_database(url)


@pytest.mark.parametrize("timescale", ["off", "on"])
def test_migration_002_adds_the_failure_columns_to_a_database_migrated_before(
    empty_url: str, timescale: str
) -> None:
    with psycopg.connect(empty_url, autocommit=True) as conn:
        if timescale == "on" and not timescale_available(conn):
            pytest.skip("TimescaleDB extension not available on this server")
        order = discover(PACKAGES)
        before = [(m.package, m.version) for m in order].index(("simulator", 2))
        migrate(conn, PACKAGES, timescale, limit=before)
        assert _failure_columns(conn) == []
        conn.execute(
            "INSERT INTO ground_truth (kind, account_id, asset_id, component, time)"
            " VALUES ('failure', 'a-1', 'm-1', 'separator', '2025-03-01T10:00Z')"
        )
        report = migrate(conn, PACKAGES, timescale)
        # it, and those of the packages after the simulator's (basewatch's own)
        assert report.applied[0] == "simulator/002_failure_truth"
        assert report.applied == [f"{m.package}/{m.version:03d}_{m.name}" for m in order[before:]]
        assert _failure_columns(conn) == [
            ("foreseeable", "boolean"),
            ("lead_hours", "numeric"),
            ("lead_running_hours", "numeric"),
            ("mode", "text"),
        ]
        row = conn.execute(
            "SELECT mode, foreseeable, lead_hours, lead_running_hours FROM ground_truth"
        ).fetchone()
        assert row == ("", None, None, None)
        (event,) = load_truth(conn).events
        assert event.foreseeable  # stored before: unknown, counted
        store_ground_truth(
            conn,
            [
                {
                    "kind": "failure",
                    "account_id": "a-1",
                    "asset_id": "m-1",
                    "component": "separator",
                    "time": dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC),
                    "value": None,
                    "detail": "",
                    "mode": "electrical_trip",
                    "foreseeable": False,
                    "lead_hours": None,
                    "lead_running_hours": None,
                }
            ],
        )
        (event,) = load_truth(conn).events
        assert event.foreseeable is False
        assert migrate(conn, PACKAGES, timescale).applied == []
