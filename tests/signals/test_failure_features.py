"""The failure features are computed by one function for training and scoring: on a small
simulated fleet (with alarms, replacements and an asset whose first reading is at 13:00), the
features of every asset at a snapshot time are the same, bit for bit, whether they come from
the training path (every row of a 120-day window) or the scoring path (only what a snapshot
at that time reads)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg
import pytest

from signals import failure_model
from signals.failure_data import build_spec, scoring_snapshots, training_snapshots
from signals.failure_features import (
    RIDGE,
    AssetHistory,
    FeatureSpec,
    fit_normal,
    snapshot_features,
)
from simulator.fleet import make_fleet
from tests.signals.fix_fleet import load_fleet
from tests.signals.test_anomaly import register, write_rollups

END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
YOUNG_FIRST = END - dt.timedelta(days=6, hours=11)  # 13:00, six days before the end
# snapshot times: whole hours, off midnight, on the 6-hour grid the training uses
TIMES = [END - dt.timedelta(days=d, hours=h) for d, h in ((40, 6), (9, 18), (3, 12), (0, 6))]


@pytest.fixture(scope="module")
def fleet(db_url: str) -> str:
    mix = {"declining": 1.0, "leaky": 1.0, "growing": 1.0, "steady": 1.0}
    fleet = make_fleet(seed=11, accounts=3, assets=6, months=4, end=END, mix=mix)
    load_fleet(db_url, fleet)
    assets = [a.asset_id for a in fleet.assets]
    rng = np.random.default_rng(3)
    with psycopg.connect(db_url) as conn:
        register(conn, fleet.accounts[0].account_id, ["young"])
        hours = int((END - YOUNG_FIRST) / HOUR)
        write_rollups(
            conn,
            "young",
            YOUNG_FIRST,
            {
                "oil_temp_c": 70 + rng.standard_normal(hours),
                "vibration_mm_s": 2 + 0.1 * rng.standard_normal(hours),
            },
        )
        # alarms with codes (one code more frequent), a replacement, a service without one
        for i, asset in enumerate([*assets, "young"]):
            for k in range(12 + 3 * i):
                when = END - dt.timedelta(hours=int(rng.integers(1, 24 * 50)), minutes=17)
                conn.execute(
                    "INSERT INTO asset_events (asset_id, time, kind, code, received_at)"
                    " VALUES (%s, %s, 'alarm', %s, now()) ON CONFLICT DO NOTHING",
                    (asset, when, f"E{k % 3 + (k % 2)}"),
                )
        conn.execute(
            "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
            " VALUES (%s, %s, 'component_replaced', 'air_filter', now()),"
            " ('young', %s, 'service', '', now())",
            (
                assets[0],
                END - dt.timedelta(days=9, hours=20, minutes=30),
                END - dt.timedelta(days=2),
            ),
        )
        conn.commit()
    return db_url


def _spec(conn: psycopg.Connection) -> FeatureSpec:
    assets = [str(a) for (a,) in conn.execute("SELECT asset_id FROM assets ORDER BY 1")]
    since = END - dt.timedelta(days=failure_model.TRAIN_DAYS)
    return build_spec(conn, assets, since, END)


def test_training_and_scoring_features_are_equal(fleet: str) -> None:
    with psycopg.connect(fleet) as conn:
        spec = _spec(conn)
        assets = [str(a) for (a,) in conn.execute("SELECT asset_id FROM assets ORDER BY 1")]
        training = training_snapshots(
            conn,
            assets,
            END - dt.timedelta(days=failure_model.TRAIN_DAYS),
            END,
            failure_model.SNAPSHOT_H,
            lambda outcome: True,
            spec,
        )
        scored = {t: scoring_snapshots(conn, t, spec) for t in TIMES}
    assert spec.codes, spec
    assert spec.components, spec
    assert spec.models, spec
    by_key = {
        (a, t): training.x[i]
        for i, (a, t) in enumerate(zip(training.assets, training.times, strict=True))
    }
    compared = 0
    for t, rows in scored.items():
        assert rows, f"nothing scored at {t}"
        for s in rows:
            np.testing.assert_array_equal(by_key[(s.asset_id, t)], s.x, err_msg=s.asset_id)
            compared += 1
    assert {s.asset_id for s in scored[TIMES[-1]]} >= {"young"}
    assert compared >= 15
    # the features use what they are meant to: alarms, a replacement, the asset model
    names = spec.names
    x = np.vstack([s.x for rows in scored.values() for s in rows])
    for feature in ("alarms_7d", "asset_model", f"hours_since_replaced:{spec.components[0]}"):
        assert np.isfinite(x[:, names.index(feature)]).any(), feature


def test_hours_since_maintenance_count_from_the_first_reading(fleet: str) -> None:
    # "young" reports from 13:00; its service event is 2 days before the end: at a snapshot
    # before that, the hours since maintenance are the hours since 13:00, not since midnight
    t = END - dt.timedelta(days=3)
    with psycopg.connect(fleet) as conn:
        spec = _spec(conn)
        young = next(s for s in scoring_snapshots(conn, t, spec) if s.asset_id == "young")
    share = min(1.0, young.running_hours_per_day / 24)
    hours = young.x[spec.names.index("hours_since_maintenance")]
    assert hours == pytest.approx((t - YOUNG_FIRST) / HOUR * share)
    assert share == 1.0


def test_a_history_that_starts_too_late_is_refused() -> None:
    first = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    start = first + dt.timedelta(days=40)
    history = AssetHistory(
        "a",
        first,
        start,
        ("x",),
        np.zeros((24 * 20, 1)),
        np.zeros((24 * 20, 1)),
        np.ones(24 * 20, dtype=bool),
    )
    with pytest.raises(ValueError, match="need them from"):
        snapshot_features(history, start + dt.timedelta(days=5), FeatureSpec(("x",)))


# ---------------------------------------------------------------- the asset's own normal
# Hand-worked: load 0, 1, 2, 3 (mean 1.5, sample sd s = sqrt(5/3)), temperature 10 + 2 * load.
LOAD = np.array([0.0, 1.0, 2.0, 3.0])
S = np.sqrt(5 / 3)


def test_a_normal_without_conditions_is_the_mean_and_the_sample_sd() -> None:
    reference = (1.0 + LOAD)[:, None]  # 1, 2, 3, 4
    normal = fit_normal(reference, np.array([True]), [], min_n=2)
    assert normal.coef.tolist() == [[2.5]]
    assert normal.sd[0] == pytest.approx(S)
    assert normal.residuals(np.array([[5.0]]), np.array([True]))[0, 0] == pytest.approx(2.5)


def test_a_metric_is_judged_against_its_normal_at_the_load_it_runs() -> None:
    reference = np.column_stack([LOAD, 10 + 2 * LOAD])  # (load_pct, temp_c)
    columns = np.array([True, True])
    normal = fit_normal(reference, columns, [0], min_n=2)
    # load's own normal is its mean; temperature's slope on standardised load is the least
    # squares one (2 s per sd) shrunk by the ridge: sum z^2 = 3 over 3 + RIDGE * 4 rows
    shrunk = 2 * S * 3 / (3 + RIDGE * 4)
    np.testing.assert_allclose(normal.coef, [[1.5, 0.0], [13.0, shrunk]])
    assert normal.sd[0] == pytest.approx(S)
    # its reference residuals are (2 s - shrunk) z, on 4 - 2 degrees of freedom
    assert normal.sd[1] == pytest.approx((2 * S - shrunk) * np.sqrt(3 / 2))
    # at load 5 the temperature of 20 is normal (a z-score against the mean, 13, says +5 sd)
    residual = normal.residuals(np.array([[5.0, 20.0]]), columns)[0]
    assert residual[0] == pytest.approx(3.5)
    assert residual[1] == pytest.approx(7 - 3.5 / S * shrunk)
    assert abs(residual[1]) < 0.1


def test_a_condition_that_does_not_vary_is_left_out() -> None:
    reference = np.column_stack([np.full(4, 50.0), 10 + 2 * LOAD])
    normal = fit_normal(reference, np.array([False, True]), [0], min_n=2)
    assert normal.conditions == []
    assert normal.coef.tolist() == [[13.0]]
    assert normal.sd[0] == pytest.approx(2 * S)


def test_a_metric_with_too_few_rows_has_no_normal() -> None:
    reference = np.column_stack([LOAD, [10.0, np.nan, np.nan, 16.0]])
    normal = fit_normal(reference, np.array([True, True]), [0], min_n=3)
    assert np.isfinite(normal.coef[0]).all()
    assert np.isnan(normal.coef[1]).all()
    assert np.isnan(normal.sd[1])
