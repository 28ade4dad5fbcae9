"""component_failure on a small simulated fleet: assets whose indicator drifts for about 100
running hours before they fail, and steady ones. The model trains reproducibly, fires before a
failure it has not seen, stays quiet on steady assets, says nothing with too few failures, and
is not changed by rows or events after its cut-off."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from signals import failure_data, failure_model, remaining_life
from signals.catalogue import PriceBook
from signals.rollups import refresh_rollups, uses_continuous_aggregates
from tests.fix_db import clone, needs_rollup_tables
from tests.signals.test_anomaly import register, write_rollups

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
HOURS = 24 * 60
HOUR = dt.timedelta(hours=1)
CUT = START + dt.timedelta(days=50)
DRIFT_H = 100


def machine(
    rng: np.random.Generator, failures: list[int], hours: int = HOURS
) -> dict[str, np.ndarray]:
    """Hourly means of a machine running around the clock whose bearing temperature drifts
    up for ``DRIFT_H`` hours before each failure hour and resets after it."""
    temp = 60.0 + 0.8 * rng.standard_normal(hours)
    for f in failures:
        start = max(0, f - DRIFT_H)
        temp[start:f] += np.linspace(0.0, 12.0, f - start)
    return {
        "bearing_temp_c": temp,
        "current_a": 40.0 + 1.5 * rng.standard_normal(hours),
    }


def build(db_url: str, failing: int, steady: int, late_failure: bool) -> None:
    rng = np.random.default_rng(5)
    with psycopg.connect(db_url) as conn:
        names = [f"f{i}" for i in range(failing)] + [f"s{i}" for i in range(steady)]
        register(conn, "plant", [*names, "late"])
        for i in range(failing):
            hour = int(rng.integers(24 * 12, 24 * 45))
            failures = [hour]
            write_rollups(conn, f"f{i}", START, machine(rng, failures))
            conn.execute(
                "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
                " VALUES (%s, %s, 'failure', 'bearing', now())",
                (f"f{i}", START + hour * HOUR),
            )
        for i in range(steady):
            write_rollups(conn, f"s{i}", START, machine(rng, []))
        if late_failure:
            # fails 3 days after the cut-off: its drift starts before it, its failure after
            hour = int((CUT - START) / HOUR) + 72
            write_rollups(conn, "late", START, machine(rng, [hour]))
            conn.execute(
                "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
                " VALUES ('late', %s, 'failure', 'bearing', now())",
                (START + hour * HOUR,),
            )
        conn.commit()


@pytest.fixture(scope="module")
def fleet(db_url: str) -> str:
    build(db_url, failing=12, steady=8, late_failure=True)
    return db_url


@pytest.fixture
def sparse(template_url: str) -> Iterator[str]:
    from core.db import database_name, drop_database

    url = clone(database_name(template_url), f"bw_test_{uuid.uuid4().hex[:8]}")
    build(url, failing=2, steady=6, late_failure=False)
    yield url
    drop_database(url)


def _probabilities(model: failure_model.FailureModel, rows: np.ndarray) -> np.ndarray:
    return np.asarray(model.classifier.predict_proba(rows)[:, 1])


def test_fires_before_an_unseen_failure_and_not_on_steady_assets(fleet: str) -> None:
    with psycopg.connect(fleet) as conn:
        model = failure_model.train(conn, CUT)
        assert model is not None
        assert model.summary["failures"] >= 10
        found = failure_model.findings(conn, CUT, PriceBook(), model)
    subjects = {f.subject for f in found}
    assert "late" in subjects
    assert not {s for s in subjects if s.startswith("s")}, subjects
    late = next(f for f in found if f.subject == "late")
    assert late.kind == "failure_risk"
    assert late.score >= failure_model.P_ALERT
    assert late.figures["probability"] == late.score
    assert late.horizon_days >= 1
    assert "fails within 72 running hours" in late.reasons[0]
    # the promise first, with the horizon in running hours and in days at the asset's usage
    days = late.horizon_days
    assert late.reasons[0].startswith(
        f"promise: late fails within 72 running hours, ≈ {days} day{'s' if days != 1 else ''} "
    ), late.reasons[0]
    assert "only a failure confirms it" in late.reasons[0]
    assert any("bearing_temp_c" in r for r in late.reasons), late.reasons


def test_the_alert_gives_remaining_life_as_an_interval(fleet: str) -> None:
    # "late" fails 72 running hours after the cut-off (its drift started 28 hours before it)
    with psycopg.connect(fleet) as conn:
        model = failure_model.train(conn, CUT)
        assert model is not None
        found = failure_model.findings(conn, CUT, PriceBook(), model)
    life = model.remaining_life
    assert life is not None
    assert model.summary["remaining_life"]["calibration_assets"] >= 1
    assert model.summary["remaining_life"]["failures"] >= 5
    late = next(f for f in found if f.subject == "late")
    figures = late.figures
    assert figures["interval_level"] == 0.8
    assert 0 <= figures["rul_low_hours"] <= figures["rul_hours"] <= figures["rul_high_hours"]
    assert figures["rul_high_hours"] <= remaining_life.CAP_RH
    # one asset: an 80 % interval misses its truth one time in five by design (coverage is
    # measured over held-out engines, bench/rul.py), so the central estimate is checked here
    assert abs(figures["rul_hours"] - 72) <= 0.1 * remaining_life.CAP_RH, figures
    assert figures["rul_high_hours"] - figures["rul_low_hours"] < remaining_life.CAP_RH
    assert figures["probability"] == late.score  # the existing keys stay
    text = remaining_life.phrase(figures["rul_low_hours"], figures["rul_high_hours"], 0.8)
    assert f"remaining life: {text}" in late.reasons[0], late.reasons[0]
    assert re.search(r"fails (in \d+–|within )\d+\+? running hours \(80 %\)", late.reasons[0])


def test_training_is_reproducible(fleet: str) -> None:
    with psycopg.connect(fleet) as conn:
        first = failure_model.train(conn, CUT)
        second = failure_model.train(conn, CUT)
    assert first is not None
    assert second is not None
    rows = np.random.default_rng(1).normal(size=(50, len(first.feature_names)))
    np.testing.assert_array_equal(_probabilities(first, rows), _probabilities(second, rows))


def test_rows_and_events_after_the_cut_off_change_nothing(fleet: str) -> None:
    cut = START + dt.timedelta(days=40)
    with psycopg.connect(fleet) as conn:
        before = failure_model.train(conn, cut)
        assert before is not None
        # a failure and wild readings after the cut-off
        conn.execute(
            "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
            " VALUES ('s0', %s, 'failure', 'bearing', now())",
            (cut + dt.timedelta(days=2),),
        )
        needs_rollup_tables(conn)
        conn.execute(
            "UPDATE rollup_hourly SET stats = jsonb_set(stats, '{bearing_temp_c}',"
            " '[200, 200, 200, 200, 1]') WHERE bucket >= %s",
            (cut,),
        )
        after = failure_model.train(conn, cut)
        conn.rollback()
    assert after is not None
    assert before.summary == after.summary
    rows = np.random.default_rng(2).normal(size=(50, len(before.feature_names)))
    np.testing.assert_array_equal(_probabilities(before, rows), _probabilities(after, rows))


def test_labels_need_a_fully_observed_window(fleet: str) -> None:
    # "late" fails 72 h after the cut-off: none of its snapshots may be labelled at the cut
    since = CUT - dt.timedelta(days=failure_model.TRAIN_DAYS)
    with psycopg.connect(fleet) as conn:
        snapshots = failure_data.training_snapshots(
            conn,
            ["late"],
            since,
            CUT,
            failure_model.SNAPSHOT_H,
            lambda o: failure_model.label(o) is not None,
        )
    labels = [failure_model.label(o) for o in snapshots.outcomes]
    assert labels
    assert set(labels) == {0}
    assert max(snapshots.times) <= CUT - failure_model.HORIZON_RH * HOUR


def test_too_few_failures_train_nothing_and_find_nothing(sparse: str) -> None:
    with psycopg.connect(sparse) as conn:
        assert failure_model.train(conn, CUT) is None
        assert failure_model.findings(conn, CUT, PriceBook(), None) == []


def test_a_metric_no_labelled_snapshot_has_does_not_break_training(template_url: str) -> None:
    from core.db import database_name, drop_database

    url = clone(database_name(template_url), f"bw_test_{uuid.uuid4().hex[:8]}")
    try:
        build(url, failing=12, steady=8, late_failure=False)
        with psycopg.connect(url) as conn:
            # a sensor added to every machine a day before the cut-off: in the metric list,
            # in no snapshot whose label window is observed (their features are all missing)
            if uses_continuous_aggregates(conn):  # where the aggregates' rows come from
                conn.execute(
                    "UPDATE telemetry SET metrics = metrics || '{\"new_sensor\": 1}'"
                    " WHERE time >= %s",
                    (CUT - dt.timedelta(days=1),),
                )
                refresh_rollups(conn)
            else:
                for table in ("rollup_hourly", "rollup_daily"):  # as a refresh writes them
                    conn.execute(
                        f"UPDATE {table} SET stats = stats || '{{\"new_sensor\": [1, 1, 1, 1, 1]}}'"
                        " WHERE bucket >= %s",
                        (CUT - dt.timedelta(days=1),),
                    )
            conn.commit()
            model = failure_model.train(conn, CUT)
        assert model is not None
        assert "new_sensor" in model.metrics
    finally:
        drop_database(url)
