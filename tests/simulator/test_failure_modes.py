"""Failure modes and the service plan (issue 13 item 5): each mode's precursor moves its metric
before the failure and the sudden ones have none, the ground truth says which failures were
foreseeable and how early, and service replaces parts by its plan whatever the indicators say.

Statistical over a seeded fleet twice the demo's (seed 42, 80 accounts, 300 compressors, 24
months: enough failures of the rarest mode), simulated twice: as it is, and with the precursors
switched off (the same random numbers)."""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
from collections import defaultdict

import numpy as np
import pytest

from simulator.fleet import Fleet, make_fleet
from simulator.physics import (
    FAILURE_MODES,
    MIN_LEAD_H,
    PLAN_H,
    POWER,
    SERVICE_INTERVAL_H,
    AccountHistory,
    AssetHistory,
    FailureMode,
    SimEvent,
    simulate_account,
)

END = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MODES = {mode.name: mode for mode in FAILURE_MODES}
PRECURSOR_METRICS = ("vibration_mm_s", "oil_temp_c", "discharge_temp_c", "separator_dp_bar", POWER)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return make_fleet(seed=42, accounts=80, assets=300, months=24, end=END)


@pytest.fixture(scope="module")
def histories(fleet: Fleet) -> list[AccountHistory]:
    return [simulate_account(fleet, a) for a in fleet.accounts]


@pytest.fixture(scope="module")
def without(fleet: Fleet) -> list[AccountHistory]:
    return [simulate_account(fleet, a, precursors=False) for a in fleet.accounts]


def _assets(histories: list[AccountHistory]) -> list[AssetHistory]:
    return [asset for history in histories for asset in history.assets]


def _hour(asset: AssetHistory, event: SimEvent) -> int:
    return int(np.searchsorted(asset.epoch_s, int(event.time.timestamp())))


def _failures(asset: AssetHistory) -> list[tuple[int, SimEvent]]:
    return [(_hour(asset, e), e) for e in asset.truth if e.kind == "failure"]


def _residual(asset: AssetHistory, metric: str) -> np.ndarray:
    """The metric with what load and weather explain taken out (as the physics makes it)."""
    m = asset.metrics
    load = m["load_pct"] / 100.0
    if metric == POWER:
        spec = asset.asset
        base = 0.12 if spec.variable_speed else 0.25
        expected = spec.rated_power_kw * (base + (1 - base) * load)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(m[POWER] / expected - 1.0)
    if metric in ("oil_temp_c", "discharge_temp_c"):
        return np.asarray(m[metric] - m["ambient_temp_c"] - 18.0 * load)
    if metric == "vibration_mm_s":
        return np.asarray(m[metric] - 0.8 * load)
    return np.asarray(m[metric])


def _moves(
    assets: list[AssetHistory],
    mode: FailureMode,
    metric: str,
    foreseeable_only: bool,
    readings: list[AssetHistory] | None = None,
) -> list[float]:
    """Per failure of ``mode``: the metric's residual over the last 24 running hours before it
    minus its residual over the 300 running hours before the mode's longest onset (1,000 for a
    sudden mode; read from ``readings``, the same assets simulated otherwise, when given)."""
    moves = []
    for asset, read in zip(assets, readings or assets, strict=True):
        failures = [
            (at, event)
            for at, event in _failures(asset)
            if event.mode == mode.name and (event.foreseeable or not foreseeable_only)
        ]
        if not failures:
            continue
        running = asset.metrics["load_pct"] > 0
        rh = asset.metrics["running_hours"]
        residual = _residual(read, metric)
        for at, _ in failures:
            longest = mode.onset_h[2] if not mode.sudden else 1000.0
            last = running[:at] & (rh[:at] >= rh[at] - 24)
            before = (
                running[:at] & (rh[:at] >= rh[at] - longest - 300) & (rh[:at] < rh[at] - longest)
            )
            if last.sum() >= 5 and before.sum() >= 50:
                moves.append(
                    float(np.median(residual[:at][last]) - np.median(residual[:at][before]))
                )
    return moves


@pytest.mark.parametrize("mode", [m for m in FAILURE_MODES if not m.sudden], ids=lambda m: m.name)
def test_each_precursor_moves_its_metrics_before_the_failure(
    mode: FailureMode, histories: list[AccountHistory], without: list[AccountHistory]
) -> None:
    assets = _assets(histories)
    for metric, per in mode.shifts.items():
        moves = _moves(assets, mode, metric, foreseeable_only=True)
        assert len(moves) >= 8, (mode.name, metric, len(moves))
        # the typical foreseeable failure's metric moved by more than the visible shift
        assert statistics.median(moves) > mode.visible * per, (mode.name, metric, moves)
        # and that is the precursor, not ageing, load or weather: without it, the same
        # failures' metrics hardly move
        still = _moves(assets, mode, metric, True, readings=_assets(without))
        assert abs(statistics.median(still)) < 0.3 * statistics.median(moves), (mode, metric)


@pytest.mark.parametrize("mode", [m for m in FAILURE_MODES if m.sudden], ids=lambda m: m.name)
def test_sudden_failures_have_no_precursor(
    mode: FailureMode, histories: list[AccountHistory], without: list[AccountHistory]
) -> None:
    assets, quiet = _assets(histories), _assets(without)
    seen = 0
    for asset, same in zip(assets, quiet, strict=True):
        for at, event in _failures(asset):
            if event.mode != mode.name:
                continue
            seen += 1
            assert event.foreseeable is False
            assert event.lead_hours is None
            assert event.lead_running_hours is None
            # the readings before a sudden failure are those of a world without precursors
            # (unless another mode's precursor on the same machine overlaps it)
            others = [
                e for _, e in _failures(asset) if e.mode != mode.name and not MODES[e.mode].sudden
            ]
            if not any(abs((e.time - event.time).total_seconds()) < 2000 * 3600 for e in others):
                for metric in PRECURSOR_METRICS:
                    window = slice(max(0, at - 1000), at)
                    assert np.array_equal(
                        asset.metrics[metric][window], same.metrics[metric][window]
                    )
    assert seen >= 8
    # statistically too: the residuals before sudden failures do not move
    for metric, tolerance in (("vibration_mm_s", 0.25), ("oil_temp_c", 1.5), (POWER, 0.01)):
        moves = _moves(assets, mode, metric, foreseeable_only=False)
        assert abs(statistics.median(moves)) < tolerance, (mode.name, metric)


def test_precursors_overlap_normal_variation(histories: list[AccountHistory]) -> None:
    """Detection is a real problem: across the fleet's normal running hours, the residual of
    each precursor metric (load and weather taken out) spreads wider than a visible shift, so
    no fixed threshold at the visible shift separates failing machines from healthy ones."""
    for metric, visible in (
        ("vibration_mm_s", MODES["airend_bearing_wear"].visible),
        ("oil_temp_c", MODES["oil_degradation"].visible),
        ("discharge_temp_c", MODES["cooler_fouling"].visible),
        (POWER, MODES["motor_insulation"].visible),
    ):
        values = []
        for asset in _assets(histories)[::5]:
            running = asset.metrics["load_pct"] > 0
            values.append(_residual(asset, metric)[running][::7])
        low, high = np.percentile(np.concatenate(values), [5, 95])
        assert high - low > visible, (metric, high - low)


def test_the_ground_truth_says_foreseeable_and_how_early(
    histories: list[AccountHistory], without: list[AccountHistory]
) -> None:
    leads: dict[str, list[float]] = defaultdict(list)
    unforeseen_with_precursor = 0
    before_window = 0
    for asset, same in zip(_assets(histories), _assets(without), strict=True):
        failures = _failures(asset)
        for at, event in failures:
            mode = MODES[event.mode]
            assert event.component == mode.component
            if mode.sudden:
                continue
            if event.lead_running_hours is None:
                assert event.foreseeable is False
                unforeseen_with_precursor += 1
                continue
            assert event.lead_hours is not None
            assert event.foreseeable == (event.lead_running_hours >= MIN_LEAD_H)
            assert event.lead_running_hours <= mode.onset_h[2] + 1
            assert event.lead_hours >= event.lead_running_hours  # calendar ≥ running hours
            if event.foreseeable:
                leads[mode.name].append(event.lead_running_hours)
            # from the lead on, the precursor's first metric is shifted by the visible amount
            # (checked where no other failure's precursor on the machine overlaps)
            if any(0 < abs(at - other) < 2000 for other, _ in failures):
                continue
            metric, per = next(iter(mode.shifts.items()))
            visible = at - round(event.lead_hours)
            diff = asset.metrics[metric] - same.metrics[metric]
            if metric == POWER:  # a share of the power
                with np.errstate(divide="ignore", invalid="ignore"):
                    diff = np.nan_to_num(asset.metrics[metric] / same.metrics[metric] - 1.0)
            running = asset.metrics["load_pct"] > 0
            rounding = 0.005 if metric == POWER else 0.02
            if visible < 1:  # visible before the window: already shifted when it starts
                first = int(np.argmax(running))
                assert diff[first] >= mode.visible * per - rounding, (event, diff[first])
                before_window += 1
                continue
            if running[visible]:
                assert diff[visible] >= mode.visible * per - rounding, (event, diff[visible])
            earlier = running[: visible - 1] & (np.arange(visible - 1) >= visible - 400)
            if earlier.any():
                assert np.all(diff[: visible - 1][earlier] < mode.visible * per + rounding)
    # every precursor mode has foreseeable failures; some have a precursor too faint to see
    assert set(leads) == {m.name for m in FAILURE_MODES if not m.sudden}
    assert unforeseen_with_precursor > 0
    assert before_window > 0  # the fleet has precursors under way when the window opens
    # lead times differ by mode: bearing wear shows days before, fouling weeks before
    median = {name: statistics.median(values) for name, values in leads.items()}
    assert median["cooler_fouling"] > 2 * median["airend_bearing_wear"]
    assert 48 < median["airend_bearing_wear"] < 500


def _reported(asset: AssetHistory) -> list[tuple[object, ...]]:
    """The asset's events as the machine reports them (no ground truth)."""
    return [(e.time, e.kind, e.component, e.code, e.service_order) for e in asset.events]


def _service(histories: list[AccountHistory]) -> list[list[SimEvent]]:
    return [
        [e for e in asset.events if e.kind in ("service", "component_replaced")]
        for asset in _assets(histories)
    ]


def test_service_follows_its_plan_whatever_the_indicators_say(
    histories: list[AccountHistory], without: list[AccountHistory]
) -> None:
    # the precursors change the readings, not one visit or replacement
    assert _service(histories) == _service(without)
    # nor a failure (only whether it was foreseeable: without precursors none is)
    assert [_reported(a) for a in _assets(histories)] == [_reported(a) for a in _assets(without)]
    changed = sum(
        not np.array_equal(a.metrics[m], b.metrics[m])
        for a, b in zip(_assets(histories), _assets(without), strict=True)
        for m in PRECURSOR_METRICS
    )
    assert changed > 20

    gaps: list[float] = []
    intervals: dict[str, list[float]] = defaultdict(list)
    for asset in _assets(histories):
        rh = asset.metrics["running_hours"]
        visits = [_hour(asset, e) for e in asset.events if e.kind == "service"]
        gaps += [float(rh[b] - rh[a]) for a, b in itertools.pairwise(visits)]
        days = [(b - a) / 24 for a, b in itertools.pairwise(visits)]
        assert all(d <= 365 + 63 + 365 for d in days)  # at least yearly, late or one missed
        replaced: dict[str, int] = {}
        for event in asset.events:
            if event.kind != "component_replaced":
                continue
            at = _hour(asset, event)
            by_visit = "-R" not in event.service_order
            if event.component in replaced and by_visit:
                intervals[event.component].append(float(rh[at] - rh[replaced[event.component]]))
            replaced[event.component] = at
    # visits every SERVICE_INTERVAL_H running hours, a few late or missed
    assert abs(statistics.median(gaps) - SERVICE_INTERVAL_H) < 300
    assert any(g > 1.6 * SERVICE_INTERVAL_H for g in gaps)  # a missed or late visit
    # a part is replaced by a visit at its plan interval: not before it is due (the plan counts
    # the hours a failure of another part stopped the machine too: up to a week of them)
    for component in ("air_filter", "oil_filter", "separator", "oil"):
        hours = intervals[component]
        assert len(hours) >= 10, component
        assert min(hours) >= PLAN_H[component] - SERVICE_INTERVAL_H / 2 - 170
        assert abs(statistics.median(hours) - PLAN_H[component]) < 0.25 * PLAN_H[component]
