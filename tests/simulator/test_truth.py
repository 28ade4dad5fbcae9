"""The ground truth through the database: what the simulator stores is what the backtest is
given (every event, each account's story), and storing replaces the previous run's."""

from __future__ import annotations

import datetime as dt

import psycopg

from signals.truth import LABELLED_KINDS, TruthEvent
from simulator.fleet import STORIES, make_fleet
from simulator.simulate import run
from simulator.truth import load_truth, store_ground_truth

END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _event(row: dict[str, object]) -> TruthEvent:
    time = row["time"]
    assert isinstance(time, dt.datetime)
    kind, account, asset, component = (
        str(row[k]) for k in ("kind", "account_id", "asset_id", "component")
    )
    return TruthEvent(kind, account, asset, component, time)


def test_stored_truth_loads_as_the_backtests_labelled_truth(db_url: str) -> None:
    fleet = make_fleet(
        seed=5, accounts=8, assets=20, months=14, end=END, mix=dict.fromkeys(STORIES, 1.0)
    )
    truth = run(fleet, None).truth
    with psycopg.connect(db_url) as conn:
        store_ground_truth(conn, truth)
        labelled = load_truth(conn)
    expected = {_event(r) for r in truth if r["kind"] != "story"}
    assert set(labelled.events) == expected
    assert len(labelled.events) == len(expected)
    assert {e.kind for e in labelled.events} >= {"failure", "churn", "expansion"}
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
