"""Hourly physics of an account's screw compressors (numpy, one account at a time).

Per hour: the account's demand (m³/min) follows its shifts, weekends, season and story; its
active machines share it in proportion to their rated flow. A machine runs when its share is
above 5 % of its rated flow. Above the installed capacity every machine is at 100 % and pressure
sags in proportion to the excess - pressure sags only then.

Power: a variable-speed machine draws 12 % + 88 % × load of its rated power; a fixed-speed
machine at part load cycles between loaded and unloaded and draws 25 % + 75 % × load (so at part
load it wastes energy: the efficiency-upgrade case), times the machine's own efficiency (±1.5 %)
and 1 % hourly noise. Counters are integrals: ``energy_kwh`` of power, ``running_hours`` of
running, ``loaded_hours`` of load; ``starts`` counts stops → runs.

**Normal variation** (what a precursor has to stand out from): oil and discharge temperatures
follow ambient (season ±9 °C, day ±4 °C) and load (+18 °C at full load), with a per-machine
offset (σ 2 °C), a day-to-day wander (σ 0.8 °C) and hourly noise; vibration follows load with
a per-machine baseline (-0.2 to +0.6 mm/s), a day-to-day wander and rises slowly with bearing
age; oil temperature rises slowly with oil age; filter and separator differential pressures
rise along their ageing curves (:data:`INDICATORS`) and reset when the part is replaced.

**Service on its own schedule** (:func:`service_visits`): each machine has a service plan - a
visit every :data:`SERVICE_INTERVAL_H` running hours (at least once a year), booked 0-3 weeks
after it falls due, 10 % of visits 2-6 weeks late on top, 5 % missed (the next one catches up).
A visit replaces every part whose plan interval (its rated life, :data:`PLAN_H`) would run out
before the next visit; it looks at running hours only, never at an indicator or a failure
mode's precursor (``simulate_account(..., precursors=False)`` gives the same visits). A visit
is a ``service`` event; each part it replaces a ``component_replaced`` event with the visit's
service order. A ``third_party`` account buys its filters elsewhere: the plan leaves them out
and the customer replaces them at 80-95 % of their rated life (a ``third_party_replacement``
in the ground truth, no event, the indicator resets).

**Failures** come from failure modes (:data:`FAILURE_MODES`), each with its own hazard over its
component's age (running hours since the part was last replaced: a Weibull of shape β; β = 1 is
a constant rate) and, unless sudden, its own physical precursor: from the onset (running hours
before the failure, lognormal, clipped to a range) the precursor's metrics drift by
``amplitude × x^p`` (x from 0 at the onset to 1 at the failure; the amplitude lognormal with
σ 0.8 around its median, capped at 2.5 times it - the machine trips or breaks by then - so
about one in ten is too small to see). A failure stops the machine
for the mode's repair time; the repair replaces the part (``component_replaced`` with a repair
order; a ``service`` event for the cooler and the motor, which have no rated life; nothing for
an electrical trip, which is reset). The ground truth says per failure its mode, whether it was
*foreseeable* (its precursor's first metric moved by at least the mode's *visible* shift at
least :data:`MIN_LEAD_H` running hours before the failure) and how early (``lead_hours``
wall-clock and ``lead_running_hours``, from the first hour of a visible shift to the failure; a
precursor that started before the simulation window is partly under way at its start, and the
running hours before the window count as one calendar hour each).

| mode                 | component       | precursor metric(s)                  | rate | β   |
| -------------------- | --------------- | ------------------------------------ | ----- | --- |
| airend_bearing_wear  | airend_bearings | vibration_mm_s; discharge_temp_c,    | 0.01  | 2.5 |
|                      |                 | oil_temp_c                           |       |     |
| motor_bearing_wear   | motor_bearings  | vibration_mm_s                       | 0.008 | 2.5 |
| cooler_fouling       | cooler          | discharge_temp_c, oil_temp_c         | 0.01  | 1   |
| oil_degradation      | oil             | oil_temp_c; discharge_temp_c         | 0.012 | 2   |
| separator_clogging   | separator       | separator_dp_bar                     | 0.012 | 2   |
| motor_insulation     | motor           | power_kw at equal load               | 0.005 | 1   |
| inlet_valve_sticking | inlet_valve     | none (sudden)                        | 0.01  | 1   |
| electrical_trip      | electrical      | none (sudden)                        | 0.012 | 1   |

(rate: base rate per 1,000 running hours; β: Weibull shape over the component's age.) The
precursors' onset before the failure (running hours, lognormal: median, clipped range) and the
first metric's shift at the failure (median) and from which it counts as visible:

| mode                 | onset, h      | shift at failure (others per unit)  | visible  |
| -------------------- | ------------- | ----------------------------------- | -------- |
| airend_bearing_wear  | 250 (100-500) | +2.5 mm/s (+1.5, +1.0 °C per mm/s)  | 0.5 mm/s |
| motor_bearing_wear   | 400 (150-900) | +1.8 mm/s                           | 0.5 mm/s |
| cooler_fouling       | 700 (300-1500)| +12 °C discharge (oil +10 °C)       | 3 °C     |
| oil_degradation      | 350 (150-800) | +7 °C oil (discharge +4.2 °C)       | 2.5 °C   |
| separator_clogging   | 400 (150-900) | +0.5 bar                            | 0.12 bar |
| motor_insulation     | 600 (200-1500)| +6 % power at equal load            | 2 %      |
| sudden modes         | -             | -                                   | -        |

The base rate of a mode with β > 1 is its mean rate over its component's rated life (the
cumulative hazard at the rated life is ``rate × rated life / 1000``). Every figure here is an
assumption (judgement; no reliability handbook was consulted): all modes together give about
0.08 unplanned failures per 1,000 running hours - one every ~12,500 running hours, so a machine
on two shifts fails about once in two years and three or four times over a 40,000-hour air-end
life; about three in four failures have a precursor. Onsets follow the physics' pace: bearing
wear trends over days to weeks (vibration steps of ~2 mm/s, about an ISO 10816 zone), fouling
over weeks, oil and separator over one to a few weeks, insulation faults show as a few per cent
more power at equal load. There is no motor-current metric in the telemetry contract (DESIGN.md
"Compressed-air telemetry"), so the electrical precursor is ``power_kw``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from simulator.fleet import (
    COMPONENT_LIVES_H,
    AccountSpec,
    AssetSpec,
    Fleet,
    initial_wear_share,
    month_start,
)

Array = npt.NDArray[np.float64]
HOUR_S = 3600
SETPOINT_BAR = 7.5
RUN_THRESHOLD = 0.05
# component → (metric, value when new, value at end of life, curve exponent)
INDICATORS = {
    "air_filter": ("air_filter_dp_mbar", 18.0, 68.0, 1.6),
    "oil_filter": ("oil_filter_dp_bar", 0.25, 1.25, 1.8),
    "separator": ("separator_dp_bar", 0.15, 0.9, 2.0),
}
THIRD_PARTY_COMPONENTS = ("air_filter", "oil_filter")
METRICS = (
    "load_pct",
    "pressure_bar",
    "flow_m3_min",
    "power_kw",
    "energy_kwh",
    "running_hours",
    "loaded_hours",
    "oil_temp_c",
    "discharge_temp_c",
    "vibration_mm_s",
    "oil_filter_dp_bar",
    "air_filter_dp_mbar",
    "separator_dp_bar",
    "ambient_temp_c",
    "starts",
)
# The service plan: a visit every SERVICE_INTERVAL_H running hours, at least every
# SERVICE_MAX_GAP_H hours of the calendar; each part replaced at its plan interval.
SERVICE_INTERVAL_H = 2000.0
SERVICE_MAX_GAP_H = 365 * 24
PLAN_H = dict(COMPONENT_LIVES_H)
SERVICE_BOOKING_H = (0, 21 * 24)  # a visit is booked this long after it falls due
SERVICE_LATE = (0.10, 14 * 24, 42 * 24)  # share of visits late, and by how long on top
SERVICE_MISSED = 0.05  # share of visits that do not happen (the next one catches up)
AMPLITUDE_CAP = 2.5  # a precursor's shift at the failure is at most this times its median
MIN_LEAD_H = 24.0  # a failure is foreseeable when its precursor is visible this early
POWER = "power_kw"  # the one precursor metric that moves relatively (a share of the power)


@dataclass(frozen=True)
class FailureMode:
    """A way a compressor fails: which part, how often, and what shows before it does.

    ``shifts`` maps each precursor metric to its shift at the failure per unit of the mode's
    amplitude (the first metric's shift is the amplitude itself, 1.0); empty for a sudden mode.
    """

    name: str
    component: str
    rate_per_1000h: float
    shape: float  # Weibull shape over the component's age; 1 = constant hazard
    repair_h: tuple[int, int]
    shifts: dict[str, float] = field(default_factory=dict)
    onset_h: tuple[float, float, float] = (0.0, 0.0, 0.0)  # lognormal median, low, high
    amplitude: float = 0.0  # median shift of the first metric at the failure
    visible: float = 0.0  # the first metric's shift from which the precursor counts as visible
    curve: float = 1.0  # the shift grows as x ** curve over the onset

    @property
    def sudden(self) -> bool:
        return not self.shifts


FAILURE_MODES = (
    FailureMode(
        "airend_bearing_wear",
        "airend_bearings",
        0.01,
        2.5,
        (48, 120),
        {"vibration_mm_s": 1.0, "discharge_temp_c": 1.5, "oil_temp_c": 1.0},
        (250.0, 100.0, 500.0),
        2.5,
        0.5,
        2.0,
    ),
    FailureMode(
        "motor_bearing_wear",
        "motor_bearings",
        0.008,
        2.5,
        (24, 72),
        {"vibration_mm_s": 1.0},
        (400.0, 150.0, 900.0),
        1.8,
        0.5,
        2.0,
    ),
    FailureMode(
        "cooler_fouling",
        "cooler",
        0.01,
        1.0,
        (8, 24),
        {"discharge_temp_c": 1.0, "oil_temp_c": 10.0 / 12.0},
        (700.0, 300.0, 1500.0),
        12.0,
        3.0,
        1.0,
    ),
    FailureMode(
        "oil_degradation",
        "oil",
        0.012,
        2.0,
        (8, 24),
        {"oil_temp_c": 1.0, "discharge_temp_c": 0.6},
        (350.0, 150.0, 800.0),
        7.0,
        2.5,
        1.5,
    ),
    FailureMode(
        "separator_clogging",
        "separator",
        0.012,
        2.0,
        (8, 24),
        {"separator_dp_bar": 1.0},
        (400.0, 150.0, 900.0),
        0.5,
        0.12,
        2.0,
    ),
    FailureMode(
        "motor_insulation",
        "motor",
        0.005,
        1.0,
        (72, 168),
        {POWER: 1.0},
        (600.0, 200.0, 1500.0),
        0.06,
        0.02,
        1.5,
    ),
    FailureMode("inlet_valve_sticking", "inlet_valve", 0.01, 1.0, (24, 72)),
    FailureMode("electrical_trip", "electrical", 0.012, 1.0, (2, 8)),
)
# parts a failure mode names that have no rated life (a repair, not a planned replacement)
UNRATED_COMPONENTS = ("cooler", "motor", "electrical")


@dataclass(frozen=True)
class SimEvent:
    """An event a machine reports (or, for ``third_party_replacement``, only ground truth).

    A failure also carries its ground truth: the failure mode, whether it was foreseeable and
    how early its precursor was visible (wall-clock and running hours; ``None`` when not)."""

    time: dt.datetime
    asset_id: str
    kind: str
    component: str = ""
    code: str = ""
    service_order: str = ""
    mode: str = ""
    foreseeable: bool | None = None
    lead_hours: float | None = None
    lead_running_hours: float | None = None


@dataclass
class AssetHistory:
    """An asset's hourly readings (``reporting`` marks the hours it actually sent)."""

    asset: AssetSpec
    epoch_s: npt.NDArray[np.int64]
    metrics: dict[str, Array]
    reporting: npt.NDArray[np.bool_]
    events: list[SimEvent] = field(default_factory=list)
    truth: list[SimEvent] = field(default_factory=list)


@dataclass
class AccountHistory:
    account: AccountSpec
    assets: list[AssetHistory]
    monthly_volume_m3: list[float]  # delivered air per simulation month


def simulate_account(
    fleet: Fleet, account: AccountSpec, *, precursors: bool = True
) -> AccountHistory:
    """Every machine of ``account`` over the whole simulation window. ``precursors=False``
    draws exactly the same random numbers but leaves the failure modes' precursors out of the
    readings, so no failure is foreseeable (tests: what does not depend on the indicators
    stays the same)."""
    rng = np.random.default_rng([fleet.seed, int(account.account_id.split("-")[-1])])
    start_s = int(fleet.start.timestamp())
    end_s = int(month_start(fleet.start, fleet.months).timestamp())
    epoch_s = np.arange(start_s, end_s, HOUR_S, dtype=np.int64)
    month_index = _month_index(fleet, epoch_s)
    machines = [a for a in fleet.assets if a.account_id == account.account_id]
    active = np.array([_active(m, account, month_index) for m in machines])
    flows = np.array([m.rated_flow_m3_min for m in machines])
    initial = flows[[m.start_month <= account.start_month for m in machines]].sum()
    demand = _demand(rng, account, epoch_s, month_index, initial)
    capacity = (active * flows[:, None]).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        load = np.where(capacity > 0, np.minimum(1.0, demand / capacity), 0.0)
        excess = np.where(capacity > 0, np.maximum(0.0, demand / capacity - 1.0), 0.0)
    ambient = _ambient(rng, epoch_s)
    histories = [
        _machine(
            rng,
            account,
            machine,
            epoch_s,
            month_index,
            (active[i] * load, excess, ambient),
            active[i],
            precursors,
        )
        for i, machine in enumerate(machines)
    ]
    delivered = np.zeros(fleet.months)
    for history in histories:
        np.add.at(delivered, month_index, history.metrics["flow_m3_min"] * 60.0)
    return AccountHistory(account, histories, [float(v) for v in delivered])


def _active(
    machine: AssetSpec, account: AccountSpec, month_index: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Months a machine runs: installed, the account a customer, not shut down, not churned."""
    active = (month_index >= machine.start_month) & (month_index >= account.start_month)
    if machine.silent_month is not None:
        active &= month_index < machine.silent_month
    if account.churn_month is not None:
        active &= month_index < account.churn_month
    return active


def _month_index(fleet: Fleet, epoch_s: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    bounds = np.array([month_start(fleet.start, m).timestamp() for m in range(fleet.months + 1)])
    return np.searchsorted(bounds, epoch_s, side="right").astype(np.int64) - 1


def _demand(
    rng: np.random.Generator,
    account: AccountSpec,
    epoch_s: npt.NDArray[np.int64],
    month_index: npt.NDArray[np.int64],
    initial_flow: float,
) -> Array:
    """Demand in m³/min per hour (leaks included)."""
    hours = (epoch_s // HOUR_S) % 24
    weekday = ((epoch_s // 86400) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    working_day = weekday < 5
    if account.shifts == 1:
        shift = (hours >= 6) & (hours < 14)
    elif account.shifts == 2:
        shift = (hours >= 6) & (hours < 22)
    else:
        shift = np.ones_like(hours, dtype=bool)
    on_shift = shift & (working_day | (account.shifts == 3))
    weekend_3 = (~working_day) & (account.shifts == 3)
    factor = np.where(on_shift, np.where(weekend_3, 0.6, 1.0), 0.06)
    day_of_year = (epoch_s // 86400) % 365
    season = 1.0 + 0.06 * np.cos(2 * np.pi * (day_of_year - 200) / 365)
    months = month_index.astype(np.float64)
    story = np.ones_like(months)
    if account.story == "growing":
        saturate_at = max(1.0, account.event_month - 3.0)
        rate = (1.0 / account.base_load - 0.97) / saturate_at
        story = 1.0 + rate * months
    elif account.story == "declining":
        after = np.maximum(0.0, months - account.event_month)
        story = 0.25 + 0.75 * np.exp(-after / 3.0)
    noise = rng.lognormal(0.0, 0.08, size=epoch_s.shape)
    demand = account.base_load * initial_flow * factor * season * story * noise
    leak = np.zeros_like(demand)
    if account.story == "leaky":
        leak = np.where(on_shift, 0.0, 0.13 * initial_flow) * rng.lognormal(0, 0.05, epoch_s.shape)
    return demand + leak


def _ambient(rng: np.random.Generator, epoch_s: npt.NDArray[np.int64]) -> Array:
    day_of_year = (epoch_s // 86400) % 365
    hours = (epoch_s // HOUR_S) % 24
    return (
        12.0
        + 9.0 * np.cos(2 * np.pi * (day_of_year - 200) / 365)
        + 4.0 * np.sin(2 * np.pi * (hours - 9) / 24)
        + rng.normal(0, 0.7, epoch_s.shape)
    )


@dataclass(frozen=True)
class _Failure:
    index: int  # the hour the machine fails
    mode: FailureMode
    onset_rh: float  # running hours when its precursor starts
    amplitude: float  # its first precursor metric's shift at the failure


def _machine(
    rng: np.random.Generator,
    account: AccountSpec,
    machine: AssetSpec,
    epoch_s: npt.NDArray[np.int64],
    month_index: npt.NDArray[np.int64],
    conditions: tuple[Array, Array, Array],
    active: npt.NDArray[np.bool_],
    precursors: bool,
) -> AssetHistory:
    load, excess, ambient = conditions
    n = len(epoch_s)
    running = load > RUN_THRESHOLD
    load = np.where(running, load, 0.0)
    provisional_rh = machine.age_hours + np.cumsum(running.astype(np.float64))
    history = AssetHistory(machine, epoch_s, {}, np.ones(n, dtype=bool))
    visits = service_visits(rng, provisional_rh, active)
    since, downtime, failures = _components(rng, history, account, provisional_rh, epoch_s, visits)
    shift = _failures(history, failures, provisional_rh, precursors)
    running &= ~downtime
    load = np.where(running, load, 0.0)
    # the machine's own normal variation
    temp_offset = float(rng.normal(0.0, 2.0))
    vibration_offset = float(rng.uniform(-0.2, 0.6))
    efficiency = float(rng.normal(1.0, 0.015))
    days = n // 24 + 1
    temp_wander = np.repeat(rng.normal(0.0, 0.8, days), 24)[:n]
    vibration_wander = np.repeat(rng.normal(0.0, 0.08, days), 24)[:n]
    m = history.metrics
    m["load_pct"] = np.round(load * 100, 2)
    m["flow_m3_min"] = np.round(load * machine.rated_flow_m3_min, 3)
    base = 0.12 if machine.variable_speed else 0.25
    electrical = efficiency * (1.0 + rng.normal(0, 0.01, n)) * (1.0 + shift[POWER])
    power: Array = np.where(
        running, machine.rated_power_kw * (base + (1 - base) * load) * electrical, 0.0
    )
    m["power_kw"] = np.round(power, 2)
    m["energy_kwh"] = np.round(
        machine.age_hours * machine.rated_power_kw * 0.6 + np.cumsum(power), 3
    )  # 1-hour steps: kWh = kW × 1 h
    m["running_hours"] = np.round(machine.age_hours + np.cumsum(running.astype(np.float64)), 3)
    m["loaded_hours"] = np.round(machine.age_hours * 0.7 + np.cumsum(load), 3)
    starts = np.cumsum(running[1:] & ~running[:-1])
    m["starts"] = np.concatenate(([0], starts)).astype(np.float64) + machine.age_hours // 8
    sag = np.minimum(2.0, 2.5 * excess)
    m["pressure_bar"] = np.round(
        np.where(running, SETPOINT_BAR - sag, 7.3) + rng.normal(0, 0.03, n), 3
    )
    oil_wear = since["oil"] / COMPONENT_LIVES_H["oil"]
    hot = ambient + 52 + temp_offset + 18 * load + 4 * oil_wear**2 + temp_wander
    m["oil_temp_c"] = np.round(
        np.where(running, hot + shift["oil_temp_c"], ambient + 8) + rng.normal(0, 0.5, n), 2
    )
    m["discharge_temp_c"] = np.round(
        np.where(running, hot + 7.0 + shift["discharge_temp_c"], ambient + 8)
        + rng.normal(0, 0.5, n),
        2,
    )
    bearing = 0.5 * (
        (since["airend_bearings"] / COMPONENT_LIVES_H["airend_bearings"]) ** 2
        + (since["motor_bearings"] / COMPONENT_LIVES_H["motor_bearings"]) ** 2
    )
    vibration = np.where(
        running,
        np.maximum(
            0.3,
            1.4 + vibration_offset + 0.8 * load + bearing + vibration_wander,
        )
        + shift["vibration_mm_s"],
        0.08,
    )
    m["vibration_mm_s"] = np.round(vibration + np.abs(rng.normal(0, 0.08, n)), 3)
    for component, (metric, new, limit, exponent) in INDICATORS.items():
        used = since[component] / COMPONENT_LIVES_H[component]
        m[metric] = np.round(
            new
            + (limit - new) * used**exponent
            + shift.get(metric, 0.0)
            + rng.normal(0, (limit - new) * 0.01, n),
            3,
        )
    m["ambient_temp_c"] = np.round(ambient, 2)
    history.reporting = _reporting(rng, machine, account, month_index)
    history.events.sort(key=lambda e: e.time)
    history.truth.sort(key=lambda e: e.time)
    return history


def service_visits(rng: np.random.Generator, rh: Array, active: npt.NDArray[np.bool_]) -> list[int]:
    """The hours of a machine's service visits: its plan by running hours (and the calendar),
    booking delays, late and missed visits; ``rh`` running hours per hour, visits only while
    the machine is ``active`` (a customer's, installed, not shut down)."""
    n = len(rh)
    visits: list[int] = []
    due_rh = float(rh[0]) + float(rng.uniform(0.0, SERVICE_INTERVAL_H))  # the plan's phase
    due_at = int(rng.integers(0, SERVICE_MAX_GAP_H))
    share_late, late_low, late_high = SERVICE_LATE
    while True:
        at = min(int(np.searchsorted(rh, due_rh, side="left")), due_at)
        if at >= n:
            break
        delay = int(rng.integers(*SERVICE_BOOKING_H))
        late = int(rng.integers(late_low, late_high))
        chance = float(rng.random())
        if chance < SERVICE_MISSED:  # nobody came: the next visit falls due an interval on
            due_rh, due_at = float(rh[at]) + SERVICE_INTERVAL_H, at + SERVICE_MAX_GAP_H
            continue
        visit = at + delay + (late if chance < SERVICE_MISSED + share_late else 0)
        if visit >= n:
            break
        if active[visit]:
            visits.append(visit)
        due_rh, due_at = float(rh[visit]) + SERVICE_INTERVAL_H, visit + SERVICE_MAX_GAP_H
    return visits


def _failure_age(
    rng: np.random.Generator, mode: FailureMode, rated: float, age_now: float
) -> float:
    """The component's age (running hours) at a failure of ``mode``, given that it has not
    failed by ``age_now``: the inverse of the Weibull cumulative hazard
    ``H(a) = rate/1000 × L × (a/L)^β`` (``L`` the rated life) at ``H(age_now) + Exp(1)``."""
    scale = mode.rate_per_1000h / 1000.0 * rated
    reached = scale * (max(age_now, 0.0) / rated) ** mode.shape
    return float(rated * ((reached + float(rng.exponential())) / scale) ** (1.0 / mode.shape))


def _components(  # noqa: PLR0915 - one loop: a part's replacements and failures
    rng: np.random.Generator,
    history: AssetHistory,
    account: AccountSpec,
    rh: Array,
    epoch_s: npt.NDArray[np.int64],
    visits: list[int],
) -> tuple[dict[str, Array], npt.NDArray[np.bool_], list[_Failure]]:
    """Hours since installation per rated component, the service visits' and repairs' events,
    the failures (their events come from :func:`_failures`) and the hours the machine is down.

    A part's story is a race between its next planned replacement (the first visit after its
    plan interval comes within half a visit interval) and its failure modes; whichever comes
    first replaces it. The random numbers drawn per part are the same whatever the outcome."""
    machine = history.asset
    n = len(rh)
    since: dict[str, Array] = {}
    downtime = np.zeros(n, dtype=bool)
    failures: list[_Failure] = []
    visit_at = np.array(visits, dtype=np.int64)
    visit_rh = rh[visit_at]
    orders = [f"SO-{machine.asset_id}-{k + 1:03d}" for k in range(len(visits))]
    for at, order in zip(visits, orders, strict=True):
        history.events.append(
            SimEvent(_time(epoch_s[at]), machine.asset_id, "service", service_order=order)
        )
    repairs = 0
    for component in (*COMPONENT_LIVES_H, *UNRATED_COMPONENTS):
        modes = [mode for mode in FAILURE_MODES if mode.component == component]
        rated = COMPONENT_LIVES_H.get(component)
        life = float(rated) if rated is not None else 10_000.0  # unrated: constant hazards
        installed_rh = float(rh[0])
        if rated is not None and machine.age_hours > 0:
            installed_rh -= 1.0 + initial_wear_share(machine.asset_id, component) * rated
        third_party = account.story == "third_party" and component in THIRD_PARTY_COMPONENTS
        hours = np.empty_like(rh)
        position = 0
        while position < n:
            age_now = float(rh[position]) - installed_rh
            ages = [_failure_age(rng, mode, life, age_now) for mode in modes]
            own_schedule = float(rng.uniform(0.8, 0.95))
            onset_draw = float(rng.standard_normal())
            amplitude_draw = float(rng.standard_normal())
            repair_draw = float(rng.random())
            replace = n
            if rated is not None and third_party:
                replace = int(np.searchsorted(rh, installed_rh + rated * own_schedule))
            elif rated is not None:
                due = installed_rh + PLAN_H[component] - SERVICE_INTERVAL_H / 2
                after = (visit_at > position) & (visit_rh >= due)
                replace = int(visit_at[after][0]) if after.any() else n
            fail = n
            if ages:
                first = int(np.argmin(ages))
                fail = int(np.searchsorted(rh, installed_rh + ages[first], side="left"))
            end = min(fail, replace)
            hours[position:end] = rh[position:end] - installed_rh
            if end >= n:
                break
            if fail <= replace:
                mode = modes[first]
                low, high = mode.repair_h
                repair = min(n, fail + low + int(repair_draw * (high - low)))
                median, shortest, longest = mode.onset_h
                onset = float(np.clip(median * np.exp(0.5 * onset_draw), shortest, longest))
                failures.append(
                    _Failure(
                        fail,
                        mode,
                        max(float(rh[fail]) - onset, installed_rh),
                        mode.amplitude * min(AMPLITUDE_CAP, float(np.exp(0.8 * amplitude_draw))),
                    )
                )
                downtime[fail:repair] = True
                hours[fail:repair] = rh[fail:repair] - installed_rh
                if repair >= n:
                    break
                repairs += 1
                order = f"SO-{machine.asset_id}-R{repairs:03d}"
                if rated is not None or component != "electrical":
                    kind = "component_replaced" if rated is not None else "service"
                    history.events.append(
                        SimEvent(
                            _time(epoch_s[repair]),
                            machine.asset_id,
                            kind,
                            component,
                            service_order=order,
                        )
                    )
                end = repair
            elif third_party:
                history.truth.append(
                    SimEvent(
                        _time(epoch_s[end]), machine.asset_id, "third_party_replacement", component
                    )
                )
            else:
                history.events.append(
                    SimEvent(
                        _time(epoch_s[end]),
                        machine.asset_id,
                        "component_replaced",
                        component,
                        service_order=orders[visits.index(end)],
                    )
                )
            installed_rh = float(rh[end]) - 0.5
            position = end
        if rated is not None:
            since[component] = np.maximum(hours, 0.0)
    return since, downtime, failures


def _failures(
    history: AssetHistory, failures: list[_Failure], rh: Array, precursors: bool
) -> dict[str, Array]:
    """Each failure's event with its ground truth, and the precursors' shifts per metric."""
    epoch_s = history.epoch_s
    shift = {
        metric: np.zeros(len(rh))
        for metric in (POWER, "oil_temp_c", "discharge_temp_c", "vibration_mm_s")
    }
    for failure in failures:
        mode, at = failure.mode, failure.index
        lead_h: float | None = None
        lead_rh: float | None = None
        span = float(rh[at]) - failure.onset_rh
        if precursors and not mode.sudden and span > 0:
            onset = int(np.searchsorted(rh, failure.onset_rh, side="left"))
            x = np.clip((rh[onset:at] - failure.onset_rh) / span, 0.0, 1.0) ** mode.curve
            for metric, per in mode.shifts.items():
                if metric not in shift:
                    shift[metric] = np.zeros(len(rh))
                shift[metric][onset:at] += failure.amplitude * per * x
            if failure.amplitude > mode.visible:
                seen = (mode.visible / failure.amplitude) ** (1.0 / mode.curve)
                seen_rh = failure.onset_rh + seen * span
                visible = min(int(np.searchsorted(rh, seen_rh, side="left")), at)
                lead_rh = round(float(rh[at] - rh[visible]), 1)
                lead_h = round(float(epoch_s[at] - epoch_s[visible]) / HOUR_S, 1)
                if seen_rh < rh[0]:  # visible before the window: its running hours then count
                    lead_rh = round(float(rh[at]) - seen_rh, 1)  # as one calendar hour each
                    lead_h = round(lead_h + float(rh[0]) - seen_rh, 1)
        event = SimEvent(
            _time(epoch_s[at]),
            history.asset.asset_id,
            "failure",
            mode.component,
            code=f"F-{mode.component}",
            mode=mode.name,
            foreseeable=lead_rh is not None and lead_rh >= MIN_LEAD_H,
            lead_hours=lead_h,
            lead_running_hours=lead_rh,
        )
        history.events.append(event)
        history.truth.append(event)
    return shift


def _reporting(
    rng: np.random.Generator,
    machine: AssetSpec,
    account: AccountSpec,
    month_index: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """Hours the machine sends: installed, not silent, not churned, minus short gaps."""
    reporting = _active(machine, account, month_index)
    for _ in range(int(rng.poisson(2))):  # gateway outages of a few hours
        at = int(rng.integers(0, len(reporting)))
        reporting[at : at + int(rng.integers(2, 12))] = False
    return reporting


def _time(epoch_s: np.int64) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(epoch_s), dt.UTC)
