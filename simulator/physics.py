"""Hourly physics of an account's screw compressors (numpy, one account at a time).

Per hour: the account's demand (m³/min) follows its shifts, weekends, season and story; its
active machines share it in proportion to their rated flow. A machine runs when its share is
above 5 % of its rated flow. Above the installed capacity every machine is at 100 % and pressure
sags in proportion to the excess - pressure sags only then.

Power: a variable-speed machine draws 12 % + 88 % × load of its rated power; a fixed-speed
machine at part load cycles between loaded and unloaded and draws 25 % + 75 % × load (so at part
load it wastes energy: the efficiency-upgrade case). Counters are integrals: ``energy_kwh`` of
power, ``running_hours`` of running, ``loaded_hours`` of load; ``starts`` counts stops → runs.

Components age with running hours. Each has an actual life (its rated life × a random factor);
its indicator (filter/separator differential pressure, oil temperature, bearing vibration) rises
towards its limit as the life is used up and resets when the component is replaced. The service
organisation replaces at about the rated life; when the actual life is shorter the component
fails first (a ``failure`` event, the machine stands still until replaced 1-3 days later). A
third-party buyer replaces filters itself: the indicator resets with no service order.
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


@dataclass(frozen=True)
class SimEvent:
    """An event a machine reports (or, for ``third_party_replacement``, only ground truth)."""

    time: dt.datetime
    asset_id: str
    kind: str
    component: str = ""
    code: str = ""
    service_order: str = ""


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


def simulate_account(fleet: Fleet, account: AccountSpec) -> AccountHistory:
    """Every machine of ``account`` over the whole simulation window."""
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
        _machine(rng, account, machine, epoch_s, month_index, active[i] * load, excess, ambient)
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


def _machine(
    rng: np.random.Generator,
    account: AccountSpec,
    machine: AssetSpec,
    epoch_s: npt.NDArray[np.int64],
    month_index: npt.NDArray[np.int64],
    load: Array,
    excess: Array,
    ambient: Array,
) -> AssetHistory:
    running = load > RUN_THRESHOLD
    load = np.where(running, load, 0.0)
    provisional_rh = machine.age_hours + np.cumsum(running.astype(np.float64))
    history = AssetHistory(machine, epoch_s, {}, np.ones(epoch_s.shape, dtype=bool))
    since, downtime = _components(rng, history, account, provisional_rh, epoch_s)
    running &= ~downtime
    load = np.where(running, load, 0.0)
    m = history.metrics
    m["load_pct"] = np.round(load * 100, 2)
    m["flow_m3_min"] = np.round(load * machine.rated_flow_m3_min, 3)
    base = 0.12 if machine.variable_speed else 0.25
    power: Array = np.where(running, machine.rated_power_kw * (base + (1 - base) * load), 0.0)
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
        np.where(running, SETPOINT_BAR - sag, 7.3) + rng.normal(0, 0.03, epoch_s.shape), 3
    )
    oil_wear = since["oil"] / COMPONENT_LIVES_H["oil"]
    oil = np.where(running, ambient + 52 + 18 * load + 10 * oil_wear**3, ambient + 8)
    m["oil_temp_c"] = np.round(oil + rng.normal(0, 0.5, epoch_s.shape), 2)
    m["discharge_temp_c"] = np.round(
        oil + np.where(running, 7.0, 0.0) + rng.normal(0, 0.5, epoch_s.shape), 2
    )
    bearing = 4.5 * (
        (since["airend_bearings"] / COMPONENT_LIVES_H["airend_bearings"]) ** 4
        + (since["motor_bearings"] / COMPONENT_LIVES_H["motor_bearings"]) ** 4
    )
    vibration = np.where(running, 1.4 + 0.8 * load + bearing, 0.08)
    m["vibration_mm_s"] = np.round(vibration + np.abs(rng.normal(0, 0.08, epoch_s.shape)), 3)
    for component, (metric, new, limit, exponent) in INDICATORS.items():
        used = since[component] / COMPONENT_LIVES_H[component]
        m[metric] = np.round(
            new
            + (limit - new) * used**exponent
            + rng.normal(0, (limit - new) * 0.01, epoch_s.shape),
            3,
        )
    m["ambient_temp_c"] = np.round(ambient, 2)
    history.reporting = _reporting(rng, machine, account, month_index)
    return history


def _components(
    rng: np.random.Generator,
    history: AssetHistory,
    account: AccountSpec,
    rh: Array,
    epoch_s: npt.NDArray[np.int64],
) -> tuple[dict[str, Array], npt.NDArray[np.bool_]]:
    """Hours since installation per component, replacement and failure events, downtime."""
    machine = history.asset
    since: dict[str, Array] = {}
    downtime = np.zeros(rh.shape, dtype=bool)
    order = 0
    for component, rated in COMPONENT_LIVES_H.items():
        age = 0.0 if machine.age_hours == 0 else initial_wear_share(machine.asset_id, component)
        installed_rh = float(rh[0]) - 1.0 - age * rated  # running hours at the last replacement
        hours = np.empty_like(rh)
        position = 0
        while position < len(rh):
            # most components outlive planned service; about one in six fails before it
            life = rated * max(0.5, float(rng.normal(1.15, 0.15)))
            third_party = account.story == "third_party" and component in THIRD_PARTY_COMPONENTS
            planned = rated * float(
                rng.uniform(0.8, 0.95) if third_party else rng.uniform(0.92, 1.08)
            )
            fails = life < planned
            due_rh = installed_rh + (life if fails else planned)
            end = int(np.searchsorted(rh, due_rh, side="left"))
            hours[position:end] = rh[position:end] - installed_rh
            if end >= len(rh):
                break
            when = _time(epoch_s[end])
            order += 1
            if fails:
                repair = min(len(rh), end + int(rng.integers(24, 72)))
                downtime[end:repair] = True
                hours[end:repair] = rh[end:repair] - installed_rh
                history.events.append(
                    SimEvent(when, machine.asset_id, "failure", component, code=f"F-{component}")
                )
                history.truth.append(history.events[-1])
                end = repair
                if end >= len(rh):
                    break
                when = _time(epoch_s[end])
            if third_party and not fails:
                history.truth.append(
                    SimEvent(when, machine.asset_id, "third_party_replacement", component)
                )
            else:
                order_id = f"SO-{machine.asset_id}-{order:03d}"
                history.events.append(
                    SimEvent(
                        when,
                        machine.asset_id,
                        "component_replaced",
                        component,
                        service_order=order_id,
                    )
                )
            installed_rh = float(rh[end]) - 0.5
            position = end
        since[component] = np.maximum(hours, 0.0)
    return since, downtime


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
