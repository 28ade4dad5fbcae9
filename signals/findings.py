"""What a scoring pass finds: one :class:`Finding` per (account, kind, subject) whose condition
holds now. The alert lifecycle (``signals.alerts``) turns findings into alerts: it opens one when
a condition is entered, updates it while it holds, and expires it once it has cleared for a while.

The kinds, their families and conditions: ``signals.kinds`` (DESIGN.md). A finding's kind is
a :class:`~signals.kinds.SignalKind`; text given for it (from the database, a caller) becomes
the member, and text that names no kind is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from signals.kinds import Family, SignalKind, family_of


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
        try:
            object.__setattr__(self, "kind", SignalKind(self.kind))
        except ValueError:
            raise ValueError(f"unknown signal kind {self.kind!r}") from None
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")

    @property
    def family(self) -> Family:
        return family_of(self.kind)

    @property
    def expected_value(self) -> Decimal:
        """Probability × value, rounded to the cent."""
        return (Decimal(str(self.score)) * self.value).quantize(Decimal("0.01"))
