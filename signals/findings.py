"""What a scoring pass finds: one :class:`Finding` per (account, kind, subject) whose condition
holds now. The alert lifecycle (``signals.alerts``) turns findings into alerts: it opens one when
a condition is entered, updates it while it holds, and expires it once it has cleared for a while.

The kinds, their families and conditions: ``signals.kinds`` (DESIGN.md). A finding's kind is
a :class:`~signals.kinds.SignalKind`; text given for it (from the database, a caller) becomes
the member, and text that names no kind is refused.

**One alert per asset and promise** (:func:`merge_components`, applied by the scoring pass
``signals.scoring.score``, so the live alerts and the backtest's replay both get it): the
findings of one kind about components of one asset (subject ``asset/component``) become one
finding whose subject is the asset, listing each component with its figures. It is generic: any
kind whose findings carry a component subject is merged, whatever its name. A finding of the
same kind about the asset as a whole (subject ``asset``) joins the group as one more entry. The
merged finding:

- ``score`` = the largest score of its entries (the chance that the asset needs the visit);
- ``value`` = the sum of their values (everything the visit would sell or save), so its
  expected value is max score × total value: the money of the visit if it is needed;
- ``horizon_days`` = the shortest horizon, so its due date is the earliest of its entries';
- ``overdue`` when any entry is;
- ``reasons``: a first line naming the components (soonest first), then every entry's reasons
  in that order; ``figures``: each entry's figures as ``<component>.<name>`` (an asset-level
  entry keeps its names) and ``components``, the count.

A component subject always becomes its asset, even when only one component is found, so an
alert keeps its key when a second component of the asset joins it. Alerts stored before this
rule with an ``asset/component`` subject get no finding any more: they expire once their
``clear_after`` has passed (``signals.alerts``), while the asset's alert opens beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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


def asset_of(subject: str) -> str:
    """The asset an ``asset/component`` subject is about (the subject itself otherwise)."""
    return subject.split("/", 1)[0]


def merge_components(findings: Iterable[Finding]) -> list[Finding]:
    """Pure: one finding per (account, kind, asset) where findings of a kind name components
    of the asset (see the module docstring); every other finding unchanged, in input order
    (a merged finding takes the place of its group's first entry)."""
    items = list(findings)
    grouped = {(f.account_id, f.kind, asset_of(f.subject)) for f in items if "/" in f.subject}
    groups: dict[tuple[str, str, str], dict[str, Finding]] = {}
    order: list[Finding | tuple[str, str, str]] = []
    for f in items:
        key = (f.account_id, f.kind, asset_of(f.subject))
        if key not in grouped:
            order.append(f)
            continue
        if key not in groups:
            groups[key] = {}
            order.append(key)
        entries = groups[key]
        # the same subject twice in one pass: the larger expected value (as ``strongest``)
        if f.subject not in entries or f.expected_value > entries[f.subject].expected_value:
            entries[f.subject] = f
    return [
        item if isinstance(item, Finding) else _merged(item, list(groups[item].values()))
        for item in order
    ]


def _merged(key: tuple[str, str, str], entries: list[Finding]) -> Finding:
    asset = key[2]
    entries.sort(key=lambda f: (f.horizon_days, -f.score, f.subject))
    names = [
        f.subject.split("/", 1)[1] if "/" in f.subject else "the asset as a whole" for f in entries
    ]
    count = sum("/" in f.subject for f in entries)
    head = (
        f"{count} component{'s' if count != 1 else ''} of {asset}: "
        + ", ".join(names)
        + " (soonest first)" * (len(entries) > 1)
    )
    figures: dict[str, float] = {"components": float(count)}
    for name, f in zip(names, entries, strict=True):
        prefix = "" if "/" not in f.subject else name + "."
        figures.update({prefix + k: v for k, v in f.figures.items()})
    # a copy of an entry (its account and kind), so every kind stays one its detector names
    return replace(
        entries[0],
        subject=asset,
        score=max(f.score for f in entries),
        value=sum((f.value for f in entries), Decimal(0)),
        horizon_days=min(f.horizon_days for f in entries),
        reasons=(head, *(r for f in entries for r in f.reasons)),
        figures=figures,
        overdue=any(f.overdue for f in entries),
    )
