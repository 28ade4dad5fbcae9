"""A seeded, deterministic compressed-air fleet: accounts, screw compressors and their telemetry.

Physics of the reference machine (DESIGN.md), per time step of ``interval_s`` seconds:

- demand (m³/min) follows the account's shifts: weekdays 06-22 at the account's base level,
  nights and weekends at a fraction of it, with noise; the account's machines share it;
- ``load_pct`` = demand / rated flow (capped at 100); ``flow_m3_min`` = rated flow × load;
- ``pressure_bar`` holds the set point and sags only when demand exceeds capacity;
- ``power_kw``: a variable-speed machine draws power in proportion to load (plus 10 % base), a
  fixed-speed machine runs loaded at rated power and idles at 30 % of it;
- counters ``energy_kwh`` (the integral of power), ``running_hours``, ``loaded_hours`` and
  ``starts`` only increase;
- temperatures follow ambient and load; filter and separator differential pressures and vibration
  rise with the hours since the component was installed.

Issue #3 grows this into the full fleet with stories, wear, failures and contracts.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

UTC = dt.UTC
INDUSTRIES = ("food", "automotive", "chemicals", "textiles", "pharma", "metalworking")
REGIONS = ("north", "south", "east", "west")
# model name → (rated power kW, rated flow m³/min, variable speed)
MODELS = {
    "GA30": (30.0, 5.2, False),
    "GA37VSD": (37.0, 6.6, True),
    "GA55": (55.0, 9.8, False),
    "GA75VSD": (75.0, 13.2, True),
    "GA90": (90.0, 16.0, False),
    "GA110VSD": (110.0, 19.5, True),
}
COMPONENT_LIVES_H = {
    "air_filter": 2000,
    "oil_filter": 2000,
    "separator": 4000,
    "oil": 4000,
    "airend_bearings": 24000,
    "motor_bearings": 20000,
    "inlet_valve": 16000,
}
SETPOINT_BAR = 7.5


@dataclass(frozen=True)
class AssetSpec:
    asset_id: str
    account_id: str
    model: str
    rated_power_kw: float
    rated_flow_m3_min: float
    variable_speed: bool
    site: str
    installed_on: dt.date


@dataclass(frozen=True)
class AccountSpec:
    account_id: str
    name: str
    industry: str
    region: str
    csm_id: str
    base_demand_share: float  # share of the installed capacity used on a production shift


@dataclass(frozen=True)
class Fleet:
    csms: list[dict[str, str]]
    accounts: list[AccountSpec]
    assets: list[AssetSpec]

    def registry_records(self) -> dict[str, list[dict[str, object]]]:
        """The fleet as registry records (``core.registry`` column names)."""
        return {
            "csm": [dict(c) for c in self.csms],
            "account": [
                {
                    "account_id": a.account_id,
                    "name": a.name,
                    "industry": a.industry,
                    "region": a.region,
                    "csm_id": a.csm_id,
                }
                for a in self.accounts
            ],
            "asset": [
                {
                    "asset_id": s.asset_id,
                    "account_id": s.account_id,
                    "serial": f"SN-{s.asset_id}",
                    "model": s.model,
                    "rated_power_kw": s.rated_power_kw,
                    "rated_flow_m3_min": s.rated_flow_m3_min,
                    "installed_on": s.installed_on,
                    "site": s.site,
                }
                for s in self.assets
            ],
            "component": [
                {
                    "asset_id": s.asset_id,
                    "kind": kind,
                    "rated_life_hours": life,
                    "installed_at_running_hours": 0,
                    "installed_on": s.installed_on,
                }
                for s in self.assets
                for kind, life in COMPONENT_LIVES_H.items()
            ],
        }


def make_fleet(seed: int = 1, accounts: int = 4, assets: int = 36) -> Fleet:
    """A fleet of ``accounts`` customers sharing ``assets`` compressors (at least one each)."""
    if accounts < 1 or assets < accounts:
        raise ValueError("need at least one account and one asset per account")
    rng = random.Random(seed)
    csm_count = max(1, accounts // 5)
    csms = [
        {
            "csm_id": f"csm-{i + 1:02d}",
            "name": f"CSM {i + 1}",
            "email": f"csm{i + 1}@example.com",
            "webhook_url": "",
        }
        for i in range(csm_count)
    ]
    account_specs = [
        AccountSpec(
            account_id=f"acct-{i + 1:03d}",
            name=f"Customer {i + 1}",
            industry=rng.choice(INDUSTRIES),
            region=rng.choice(REGIONS),
            csm_id=csms[i % csm_count]["csm_id"],
            base_demand_share=rng.uniform(0.45, 0.85),
        )
        for i in range(accounts)
    ]
    counts = [1] * accounts
    for _ in range(assets - accounts):
        counts[rng.randrange(accounts)] += 1
    asset_specs: list[AssetSpec] = []
    for account, count in zip(account_specs, counts, strict=True):
        for j in range(count):
            model = rng.choice(sorted(MODELS))
            power, flow, vsd = MODELS[model]
            asset_specs.append(
                AssetSpec(
                    asset_id=f"{account.account_id}-c{j + 1:02d}",
                    account_id=account.account_id,
                    model=model,
                    rated_power_kw=power,
                    rated_flow_m3_min=flow,
                    variable_speed=vsd,
                    site=f"{account.account_id}-site{1 + j // 4}",
                    installed_on=dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(1500)),
                )
            )
    return Fleet(csms, account_specs, asset_specs)


@dataclass
class _AssetState:
    spec: AssetSpec
    rng: random.Random
    running_hours: float
    loaded_hours: float
    energy_kwh: float
    starts: int
    hours_since: dict[str, float] = field(default_factory=dict)
    running: bool = False


def _shift_factor(time: dt.datetime) -> float:
    weekday = time.weekday() < 5
    hour = time.hour + time.minute / 60
    if weekday and 6 <= hour < 22:
        return 1.0
    return 0.25 if weekday else 0.12


def telemetry(
    fleet: Fleet, start: dt.datetime, end: dt.datetime, interval_s: int = 300, seed: int = 1
) -> Iterator[tuple[AssetSpec, dt.datetime, dict[str, float]]]:
    """Readings of every asset from ``start`` to ``end`` (exclusive), time-ordered."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    accounts = {a.account_id: a for a in fleet.accounts}
    states = []
    for spec in fleet.assets:
        rng = random.Random(f"{seed}:{spec.asset_id}")
        age_h = rng.uniform(2000, 30000)
        states.append(
            _AssetState(
                spec,
                rng,
                running_hours=age_h,
                loaded_hours=age_h * 0.7,
                energy_kwh=age_h * spec.rated_power_kw * 0.7,
                starts=int(age_h / 10),
                hours_since={
                    k: rng.uniform(0, life * 0.8) for k, life in COMPONENT_LIVES_H.items()
                },
            )
        )
    step_h = interval_s / 3600
    time = start
    while time < end:
        season = math.cos(2 * math.pi * (time.timetuple().tm_yday - 200) / 365)
        ambient = 14 + 8 * season + 5 * math.sin(2 * math.pi * (time.hour - 9) / 24)
        for state in states:
            account = accounts[state.spec.account_id]
            yield state.spec, time, _step(state, account, time, ambient, step_h)
        time += dt.timedelta(seconds=interval_s)


def _step(
    state: _AssetState, account: AccountSpec, time: dt.datetime, ambient: float, step_h: float
) -> dict[str, float]:
    spec, rng = state.spec, state.rng
    demand_share = account.base_demand_share * _shift_factor(time) * rng.gauss(1.0, 0.08)
    load = max(0.0, min(1.0, demand_share))
    running = load > 0.08
    if running and not state.running:
        state.starts += 1
    state.running = running
    if not running:
        load = 0.0
    if spec.variable_speed:
        power = spec.rated_power_kw * (0.10 + 0.90 * load) if running else 0.0
    else:
        power = spec.rated_power_kw * (0.30 + 0.70 * load) if running else 0.0
    sag = max(0.0, demand_share - 1.0) * 3.0
    pressure = (SETPOINT_BAR - sag + rng.gauss(0, 0.03)) if running else SETPOINT_BAR - 0.4
    if running:
        state.running_hours += step_h
        state.loaded_hours += step_h * load
        for kind in state.hours_since:
            state.hours_since[kind] += step_h
    state.energy_kwh += power * step_h
    wear = state.hours_since
    oil_temp = ambient + (55 + 15 * load if running else 10) + rng.gauss(0, 0.5)
    return {
        "load_pct": round(load * 100, 2),
        "pressure_bar": round(pressure, 3),
        "flow_m3_min": round(spec.rated_flow_m3_min * load, 3),
        "power_kw": round(power + (rng.gauss(0, 0.3) if running else 0.0), 2),
        "energy_kwh": round(state.energy_kwh, 3),
        "running_hours": round(state.running_hours, 4),
        "loaded_hours": round(state.loaded_hours, 4),
        "oil_temp_c": round(oil_temp, 2),
        "discharge_temp_c": round(oil_temp + (8 if running else 0) + rng.gauss(0, 0.5), 2),
        "vibration_mm_s": round(
            (1.2 + 1.0 * load + wear["airend_bearings"] / 24000) * (1 if running else 0.05)
            + abs(rng.gauss(0, 0.05)),
            3,
        ),
        "oil_filter_dp_bar": round(
            0.3 + 0.9 * (wear["oil_filter"] / 2000) ** 1.5 + rng.gauss(0, 0.01), 3
        ),
        "air_filter_dp_mbar": round(20 + 40 * wear["air_filter"] / 2000 + rng.gauss(0, 0.5), 2),
        "separator_dp_bar": round(0.2 + 0.6 * wear["separator"] / 4000 + rng.gauss(0, 0.005), 3),
        "ambient_temp_c": round(ambient + rng.gauss(0, 0.3), 2),
        "starts": float(state.starts),
    }
