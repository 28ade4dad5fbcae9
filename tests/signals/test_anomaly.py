"""asset_anomaly on synthetic rollups: fires on a shifted metric, silent on steady assets and
short spikes, skips counters, and never reads rows at or after the cut-off."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from signals import anomaly
from signals.catalogue import PriceBook
from signals.rollups import refresh_rollups, uses_continuous_aggregates

START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def register(conn: psycopg.Connection, account_id: str, assets: list[str]) -> None:
    conn.execute(
        "INSERT INTO accounts (account_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (account_id, account_id),
    )
    for asset_id in assets:
        conn.execute(
            "INSERT INTO assets (asset_id, account_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (asset_id, account_id),
        )


def write_rollups(
    conn: psycopg.Connection,
    asset_id: str,
    start: dt.datetime,
    series: Mapping[str, np.ndarray],
    hours: np.ndarray | None = None,
) -> None:
    """Hourly rows (one reading an hour: mean = min = max = last) and the daily rows
    ``signals.rollups`` would compute from them, for the hours where ``hours`` is true.
    On TimescaleDB (continuous aggregates) those readings are written to telemetry and the
    aggregates refreshed, which computes the same rows (and commits)."""
    length = len(next(iter(series.values())))
    present = np.ones(length, dtype=bool) if hours is None else hours
    if uses_continuous_aggregates(conn):
        with (
            conn.cursor() as cur,
            cur.copy("COPY telemetry (asset_id, time, received_at, metrics) FROM STDIN") as copy,
        ):
            for i in np.nonzero(present)[0]:
                bucket = start + int(i) * HOUR
                reading = {m: float(v[i]) for m, v in series.items()}
                copy.write_row((asset_id, bucket, bucket, Jsonb(reading)))
        refresh_rollups(conn)
        return
    days: dict[dt.datetime, dict[str, list[float]]] = {}
    with conn.cursor() as cur:
        with cur.copy("COPY rollup_hourly (asset_id, bucket, samples, stats) FROM STDIN") as copy:
            for i in np.nonzero(present)[0]:
                bucket = start + int(i) * HOUR
                hour_stats = {m: [float(v[i])] * 4 + [1] for m, v in series.items()}
                copy.write_row((asset_id, bucket, 1, Jsonb(hour_stats)))
                day = bucket.replace(hour=0)
                for m, v in series.items():
                    days.setdefault(day, {}).setdefault(m, []).append(float(v[i]))
        with cur.copy("COPY rollup_daily (asset_id, bucket, samples, stats) FROM STDIN") as copy:
            for day, metrics in days.items():
                day_stats = {
                    m: [float(np.mean(v)), min(v), max(v), v[-1], len(v)]
                    for m, v in metrics.items()
                }
                samples = max(len(v) for v in metrics.values())
                copy.write_row((asset_id, day, samples, Jsonb(day_stats)))


def compressor(
    rng: np.random.Generator, hours: int, shift_from: int | None = None
) -> dict[str, np.ndarray]:
    """A machine on two shifts: vibration, oil temperature, a running-hours counter."""
    t = np.arange(hours)
    running = ((t % 24) >= 6) & ((t % 24) < 22)
    vibration = 3.1 + 0.4 * rng.standard_normal(hours)
    oil = np.where(running, 78.0, 40.0) + 1.5 * rng.standard_normal(hours)
    if shift_from is not None:
        vibration[shift_from:] += 4.8
    return {
        "vibration_mm_s": vibration,
        "oil_temp_c": oil,
        "running_hours": np.cumsum(running.astype(float)) + 1000.0,
    }


@pytest.fixture(scope="module")
def fleet(db_url: str) -> str:
    rng = np.random.default_rng(11)
    hours = 24 * 20
    with psycopg.connect(db_url) as conn:
        register(conn, "acme", ["steady-1", "steady-2", "shifted", "spiky"])
        write_rollups(conn, "steady-1", START, compressor(rng, hours))
        write_rollups(conn, "steady-2", START, compressor(rng, hours))
        write_rollups(conn, "shifted", START, compressor(rng, hours, shift_from=24 * 17))
        spiky = compressor(rng, hours)
        spiky["vibration_mm_s"][24 * 17 : 24 * 17 + 8] += 6.0  # one 8-hour spike
        write_rollups(conn, "spiky", START, spiky)
        conn.commit()
    return db_url


def test_fires_on_a_shifted_metric_and_stays_silent_on_steady_assets(fleet: str) -> None:
    as_of = START + dt.timedelta(days=19)
    with psycopg.connect(fleet) as conn:
        model = anomaly.train(conn, as_of)
        assert model is not None
        found = anomaly.findings(conn, as_of, PriceBook(), model)
    assert [f.subject for f in found] == ["shifted"]
    finding = found[0]
    assert finding.kind == "asset_anomaly"
    assert finding.account_id == "acme"
    assert 0.5 <= finding.score <= 1.0
    assert finding.reasons[0].startswith("vibration_mm_s ")
    assert "vs its normal 3.1" in finding.reasons[0]
    assert finding.figures["vibration_mm_s_recent"] == pytest.approx(7.9, abs=0.3)
    assert finding.value == PriceBook().component_service
    # the promise, with its horizon, last
    assert finding.horizon_days == anomaly.HORIZON_DAYS == 7
    assert finding.reasons[-1] == (
        "promise: shifted fails or raises an alarm within 7 days (behaviour unlike its own normal)"
    )


def test_counters_are_skipped_and_baselines_come_from_the_assets_own_history(fleet: str) -> None:
    with psycopg.connect(fleet) as conn:
        model = anomaly.train(conn, START + dt.timedelta(days=19))
    assert model is not None
    baseline = model.assets["shifted"]
    assert baseline.counters == ("running_hours",)
    assert set(baseline.metrics) == {"vibration_mm_s", "oil_temp_c"}
    mean, sd, _r = baseline.metrics["vibration_mm_s"]
    assert mean == pytest.approx(3.1, abs=0.1)
    assert sd == pytest.approx(0.4, abs=0.08)
    # oil temperature follows the shifts: strongly autocorrelated, wide window error
    assert baseline.metrics["oil_temp_c"][2] > 0.5
    assert baseline.reference_start >= START


def test_a_short_spike_is_not_persistent(fleet: str) -> None:
    # 24 h after the spike's start, the spike covers only one of the three windows
    as_of = START + dt.timedelta(days=18)
    with psycopg.connect(fleet) as conn:
        model = anomaly.train(conn, as_of)
        found = anomaly.findings(conn, as_of, PriceBook(), model)
    assert "spiky" not in {f.subject for f in found}
    assert "shifted" in {f.subject for f in found}


def test_no_data_at_or_after_the_cut_off_is_read(fleet: str) -> None:
    # the shift starts at day 17: as of day 17 nothing has happened yet
    as_of = START + dt.timedelta(days=17)
    with psycopg.connect(fleet) as conn:
        model = anomaly.train(conn, as_of)
        assert anomaly.findings(conn, as_of, PriceBook(), model) == []
        later = anomaly.train(conn, START + dt.timedelta(days=19))
    assert model is not None
    assert later is not None
    assert model.assets["shifted"] == later.assets["shifted"]  # same reference period


def test_too_young_assets_and_no_model_give_nothing(fleet: str) -> None:
    with psycopg.connect(fleet) as conn:
        assert anomaly.train(conn, START + dt.timedelta(hours=30)) is None
        assert anomaly.findings(conn, START + dt.timedelta(days=19), PriceBook(), None) == []


def test_wear_indicators_and_constant_metrics_are_left_to_the_rules(db_url: str) -> None:
    rng = np.random.default_rng(5)
    hours = 24 * 20
    series = compressor(rng, hours)
    # a filter clogging towards its limit (service_due's business) and a setting that
    # never moved in the reference period, then changed
    series["oil_filter_dp_bar"] = np.linspace(0.3, 1.2, hours) + 0.01 * rng.standard_normal(hours)
    series["pressure_setpoint_bar"] = np.where(np.arange(hours) < 24 * 17, 7.0, 7.5)
    with psycopg.connect(db_url) as conn:
        register(conn, "wear", ["clogging"])
        write_rollups(conn, "clogging", START, series)
        conn.commit()
        as_of = START + dt.timedelta(days=19)
        model = anomaly.train(conn, as_of)
        assert model is not None
        assert "pressure_setpoint_bar" in model.assets["clogging"].counters
        found = anomaly.findings(conn, as_of, PriceBook(), model)
        assert [f for f in found if f.subject == "clogging"] == []
        # the same drift under a name no rule knows is an anomaly
        if uses_continuous_aggregates(conn):  # the same change, made where the rows come from
            conn.execute(
                "UPDATE telemetry SET metrics = metrics - 'oil_filter_dp_bar'"
                " || jsonb_build_object('mystery_signal', metrics -> 'oil_filter_dp_bar')"
                " WHERE asset_id = 'clogging'"
            )
            refresh_rollups(conn)
        else:
            conn.execute(
                "UPDATE rollup_hourly SET stats = stats - 'oil_filter_dp_bar'"
                " || jsonb_build_object('mystery_signal', stats -> 'oil_filter_dp_bar')"
                " WHERE asset_id = 'clogging'"
            )
        model = anomaly.train(conn, as_of)
        assert model is not None
        found = [
            f for f in anomaly.findings(conn, as_of, PriceBook(), model) if f.subject == "clogging"
        ]
    assert len(found) == 1
    assert found[0].reasons[0].startswith("mystery_signal ")
