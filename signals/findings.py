"""What a scoring pass finds: one :class:`Finding` per (account, kind, subject) whose condition
holds now. The alert lifecycle (``signals.alerts``) turns findings into alerts: it opens one when
a condition is entered, updates it while it holds, and expires it once it has cleared for a while.

Kinds and families (DESIGN.md):

=====================  ==========  ===========================================================
kind                   family      condition
=====================  ==========  ===========================================================
component_due          service     a component reaches its limit within the horizon
asset_anomaly          service     an asset behaves unlike its own healthy period
capacity_saturation    expansion   load near 100 % for a large share of production hours
heat_recovery          expansion   high energy use and running hours, no heat-recovery module
efficiency_upgrade     expansion   fixed-speed machine at part load, or leaks in idle hours
usage_growth           expansion   metered volume trending up
usage_decline          risk        usage falling against the account's own baseline
silent_assets          risk        machines that stopped reporting
third_party_parts      risk        a component replaced without a service order
renewal_risk           risk        renewal within N days with risk factors present
=====================  ==========  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

FAMILIES = {
    "component_due": "service",
    "asset_anomaly": "service",
    "capacity_saturation": "expansion",
    "heat_recovery": "expansion",
    "efficiency_upgrade": "expansion",
    "usage_growth": "expansion",
    "usage_decline": "risk",
    "silent_assets": "risk",
    "third_party_parts": "risk",
    "renewal_risk": "risk",
}


@dataclass(frozen=True)
class Finding:
    """A condition that holds for an account now.

    ``subject`` names what it is about within the account (an asset, ``asset/component``, or
    ``""`` for the account as a whole). ``score`` is the probability-like strength in [0, 1];
    ``value`` the money at stake or to be won per month (MRR, reporting currency);
    ``horizon_days`` how soon it matters; ``reasons`` human sentences with the numbers;
    ``figures`` the same numbers by name, kept with the alert. ``overdue``: what the finding
    warns about is already past due (a component beyond its life), which raises the alert's
    priority one level (``signals.alerts``).
    """

    account_id: str
    kind: str
    subject: str
    score: float
    value: Decimal
    horizon_days: int
    reasons: tuple[str, ...]
    figures: dict[str, float] = field(default_factory=dict)
    overdue: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FAMILIES:
            raise ValueError(f"unknown signal kind {self.kind!r}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")

    @property
    def family(self) -> str:
        return FAMILIES[self.kind]

    @property
    def expected_value(self) -> Decimal:
        """Probability × value, rounded to the cent."""
        return (Decimal(str(self.score)) * self.value).quantize(Decimal("0.01"))
