"""A seeded compressed-air installed base: CSMs, accounts with a story, sites and compressors.

Stories (DESIGN.md, issue #3), drawn from a configurable mix:

- ``steady``: demand flat apart from shifts, weekends and season;
- ``growing``: demand rises about 2 % a month until the machines saturate (load near 100 %,
  pressure sagging); the customer then adds a compressor (an expansion);
- ``declining``: production moves away: demand falls, machines go silent one by one, and the
  account churns (its contracts end);
- ``leaky``: compressed-air leaks draw flow in idle hours (an efficiency upgrade to offer);
- ``third_party``: filters are replaced with parts bought elsewhere, without a service order;
- ``heat_recovery``: three shifts on large machines without heat recovery (energy worth
  recovering); some buy the heat-recovery module during the window (an expansion).
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from dataclasses import dataclass

STORIES = ("steady", "growing", "declining", "leaky", "third_party", "heat_recovery")
DEFAULT_MIX = {
    "steady": 0.35,
    "growing": 0.15,
    "declining": 0.15,
    "leaky": 0.12,
    "third_party": 0.11,
    "heat_recovery": 0.12,
}
INDUSTRIES = ("food", "automotive", "chemicals", "textiles", "pharma", "metalworking", "plastics")
REGIONS = ("north", "south", "east", "west")
CURRENCIES = (("EUR", 0.8), ("GBP", 0.1), ("USD", 0.1))
# model → (rated power kW, rated flow m³/min at 7.5 bar, variable speed drive)
MODELS = {
    "GA30": (30.0, 5.2, False),
    "GA37VSD": (37.0, 6.6, True),
    "GA55": (55.0, 9.8, False),
    "GA75VSD": (75.0, 13.2, True),
    "GA90": (90.0, 16.0, False),
    "GA110VSD": (110.0, 19.5, True),
    "GA160": (160.0, 28.0, False),
}
# component → rated life in running hours
COMPONENT_LIVES_H = {
    "air_filter": 4000,
    "oil_filter": 4000,
    "separator": 8000,
    "oil": 8000,
    "airend_bearings": 40000,
    "motor_bearings": 30000,
    "inlet_valve": 24000,
}


@dataclass(frozen=True)
class AccountSpec:
    """A customer. Months are counted from the simulation start (0-based)."""

    account_id: str
    name: str
    industry: str
    region: str
    csm_id: str
    story: str
    currency: str
    shifts: int  # 1: 06-14, 2: 06-22, 3: around the clock (weekdays)
    base_load: float  # share of installed flow used during a shift at the start
    start_month: int  # first month as a customer (0 = before the window)
    event_month: int  # when the story turns: saturation + new machine, decline starts, ...
    churn_month: int | None  # declining accounts: the month their contracts end
    buys_heat_recovery: bool


@dataclass(frozen=True)
class AssetSpec:
    """A compressor. ``start_month`` > 0 for a machine added during the window."""

    asset_id: str
    account_id: str
    model: str
    rated_power_kw: float
    rated_flow_m3_min: float
    variable_speed: bool
    site: str
    installed_on: dt.date
    start_month: int
    silent_month: int | None  # stops reporting from this month on (declining accounts)
    age_hours: float  # running hours at the simulation start


@dataclass(frozen=True)
class Fleet:
    seed: int
    start: dt.datetime
    months: int
    csms: list[dict[str, str]]
    accounts: list[AccountSpec]
    assets: list[AssetSpec]

    def account(self, account_id: str) -> AccountSpec:
        return next(a for a in self.accounts if a.account_id == account_id)

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
                    "installed_at_running_hours": installed_at_hours(s, kind),
                    "installed_on": s.installed_on,
                }
                for s in self.assets
                for kind, life in COMPONENT_LIVES_H.items()
            ],
        }


def initial_wear_share(asset_id: str, component: str) -> float:
    """How far into its rated life a component of a used machine is when the simulation
    starts, in [0, 0.85): fixed per asset and component (the registry records it)."""
    return (zlib.crc32(f"{asset_id}/{component}".encode()) % 10_000) / 10_000 * 0.85


def installed_at_hours(asset: AssetSpec, component: str) -> float:
    """The machine's running hours when ``component`` was last replaced before the start."""
    if asset.age_hours == 0:
        return 0.0
    age = initial_wear_share(asset.asset_id, component) * COMPONENT_LIVES_H[component]
    return round(max(0.0, asset.age_hours - 1.0 - age), 1)


def month_start(start: dt.datetime, month: int) -> dt.datetime:
    """The first instant of month ``month`` counted from ``start`` (a month start)."""
    year, index = divmod(start.month - 1 + month, 12)
    return start.replace(year=start.year + year, month=index + 1, day=1)


def parse_mix(text: str) -> dict[str, float]:
    """``steady=0.4,growing=0.2,...`` → weights (need not sum to 1)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in STORIES:
            raise ValueError(f"unknown story {name!r}; stories: {', '.join(STORIES)}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(f"story weight for {name!r} is not a number: {weight!r}") from None
        if mix[name] < 0:
            raise ValueError(f"story weight for {name!r} must be >= 0")
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("the story mix needs at least one positive weight")
    return mix


def _stories(rng: random.Random, accounts: int, mix: dict[str, float]) -> list[str]:
    """Deal stories in proportion to the mix (largest remainder), then shuffle."""
    total = sum(mix.values())
    quotas = {s: accounts * w / total for s, w in mix.items()}
    dealt = {s: int(q) for s, q in quotas.items()}
    for story in sorted(quotas, key=lambda s: quotas[s] - dealt[s], reverse=True):
        if sum(dealt.values()) >= accounts:
            break
        dealt[story] += 1
    stories = [s for s, n in dealt.items() for _ in range(n)]
    rng.shuffle(stories)
    return stories


def make_fleet(
    seed: int = 1,
    accounts: int = 40,
    assets: int = 150,
    months: int = 24,
    end: dt.datetime | None = None,
    mix: dict[str, float] | None = None,
) -> Fleet:
    """A fleet of ``accounts`` customers with about ``assets`` compressors over ``months``
    months ending at the start of ``end``'s month (default: this month)."""
    if accounts < 1 or assets < accounts:
        raise ValueError("need at least one account and one compressor per account")
    if months < 2:
        raise ValueError("need at least two months")
    rng = random.Random(seed)
    end = (end or dt.datetime.now(dt.UTC)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = month_start(end, -months)
    csm_count = max(1, round(accounts / 8))
    csms = [
        {
            "csm_id": f"csm-{i + 1:02d}",
            "name": _CSM_NAMES[i % len(_CSM_NAMES)],
            "email": f"csm{i + 1}@example.com",
            "webhook_url": "",
        }
        for i in range(csm_count)
    ]
    stories = _stories(rng, accounts, mix or DEFAULT_MIX)
    counts = _machine_counts(rng, accounts, assets, stories)
    account_specs: list[AccountSpec] = []
    asset_specs: list[AssetSpec] = []
    for i, story in enumerate(stories):
        account = _account(rng, i, story, csms[i % csm_count]["csm_id"], months)
        account_specs.append(account)
        asset_specs += _machines(rng, account, counts[i], start, months)
    return Fleet(seed, start, months, csms, account_specs, asset_specs)


_CSM_NAMES = (
    "Ana Ribeiro",
    "Ben Okafor",
    "Carla Jensen",
    "Dev Patel",
    "Eva Novak",
    "Femi Adeyemi",
    "Gus Lindqvist",
    "Hana Sato",
)


def _machine_counts(
    rng: random.Random, accounts: int, assets: int, stories: list[str]
) -> list[int]:
    counts = [1] * accounts
    for _ in range(assets - accounts):
        weights = [20 - min(c, 19) for c in counts]  # 1-20 machines each
        counts[rng.choices(range(accounts), weights)[0]] += 1
    # a growing account adds one machine during the window; keep the total as asked
    for i, story in enumerate(stories):
        if story == "growing" and counts[i] > 1:
            counts[i] -= 1
    return counts


def _account(rng: random.Random, index: int, story: str, csm_id: str, months: int) -> AccountSpec:
    currency = rng.choices([c for c, _ in CURRENCIES], [w for _, w in CURRENCIES])[0]
    late_start = rng.random() < 0.12 and story in ("steady", "leaky", "growing")
    start_month = rng.randint(1, months // 2) if late_start else 0
    # the story turns a few months after the account starts, and before the window ends
    earliest = min(months - 2, max(start_month + 3, months // 4))
    event_month = rng.randint(earliest, max(earliest, (3 * months) // 4))
    churn_month = min(months - 1, event_month + rng.randint(5, 9)) if story == "declining" else None
    return AccountSpec(
        account_id=f"acct-{index + 1:03d}",
        name=f"{_NAMES[index % len(_NAMES)]} {_SUFFIX[(index // len(_NAMES)) % len(_SUFFIX)]}",
        industry=rng.choice(INDUSTRIES),
        region=rng.choice(REGIONS),
        csm_id=csm_id,
        story=story,
        currency=currency,
        shifts=3 if story == "heat_recovery" else rng.choice((1, 2, 2, 3)),
        base_load=rng.uniform(0.55, 0.7) if story == "growing" else rng.uniform(0.45, 0.8),
        start_month=start_month,
        event_month=event_month,
        churn_month=churn_month,
        buys_heat_recovery=story == "heat_recovery" and rng.random() < 0.6,
    )


_NAMES = (
    "Alder",
    "Birch",
    "Cedar",
    "Dune",
    "Elm",
    "Fjord",
    "Granite",
    "Harbor",
    "Iris",
    "Juniper",
    "Kestrel",
    "Linden",
    "Maple",
    "Nordic",
    "Oak",
    "Pine",
    "Quarry",
    "Ridge",
    "Spruce",
    "Tundra",
)
_SUFFIX = ("Foods", "Metals", "Plastics", "Textiles", "Pharma", "Motors")


def _machines(
    rng: random.Random, account: AccountSpec, count: int, start: dt.datetime, months: int
) -> list[AssetSpec]:
    big = account.story == "heat_recovery"
    machines: list[AssetSpec] = []
    total = count + (1 if account.story == "growing" else 0)
    for j in range(total):
        added = account.story == "growing" and j == count
        model = rng.choice(("GA90", "GA110VSD", "GA160") if big else sorted(MODELS))
        power, flow, vsd = MODELS[model]
        start_month = account.event_month if added else account.start_month
        silent = None
        if account.story == "declining" and account.churn_month is not None:
            # machines fall silent between the decline's start and the churn (in the churn
            # month itself when a short window caps the churn at the decline's month)
            silent = rng.randint(
                min(account.event_month + 1, account.churn_month), account.churn_month
            )
        installed = (
            (start + dt.timedelta(days=31 * start_month)).date()
            if start_month
            else (start - dt.timedelta(days=rng.randint(200, 2500))).date()
        )
        machines.append(
            AssetSpec(
                asset_id=f"{account.account_id}-c{j + 1:02d}",
                account_id=account.account_id,
                model=model,
                rated_power_kw=power,
                rated_flow_m3_min=flow,
                variable_speed=vsd,
                site=f"{account.account_id}-site{1 + j // 5}",
                installed_on=installed,
                start_month=start_month,
                silent_month=silent,
                age_hours=0.0 if start_month else rng.uniform(1500, 30000),
            )
        )
    return machines
