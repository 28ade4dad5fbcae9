"""The signal kinds: one enum of every kind of finding, and one catalogue of each kind's family,
what it says and what it promises.

=====================  ==========  ===========================================================
kind                   family      condition
=====================  ==========  ===========================================================
failure_risk           service     the fleet failure model expects the asset to fail soon
service_due            service     a component reaches its rated limit within the horizon
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

**One promise per kind.** Each kind makes one promise, :attr:`KindInfo.promise`: which event
happens (or happened, for a detection) to the alert's subject, and by when. The backtest
(``signals.backtest``) scores each kind against that event and that horizon only, with the
chance level beside it; the asset detectors state the promise with its figures in each
finding's first reason. A kind that made two promises is split so that each stays single:
``component_due`` (any replacement or failure within the horizon confirmed it, which flattered
it) became ``failure_risk`` (the fleet model: the asset *fails* within 72 running hours; only a
failure confirms it) and ``service_due`` (the rated-life rule: the component reaches its limit
and is *replaced*, by us or by someone else, within its horizon).

Decisions:
- ``StrEnum``: a member is the string it names, so the values stored in ``alerts.kind`` and
  ``alerts.family``, written in JSON and CSV, printed and passed as query parameters stay the
  strings they were (psycopg adapts a ``StrEnum`` as its text). Text read back from the
  database or the command line becomes a member with ``SignalKind(text)``.
- The family of a kind is fixed here, nowhere else; the alerts table's CHECK on ``family``
  lists the :class:`Family` values (a test compares them). ``alerts.kind`` has no CHECK: an
  alert of a kind since retired stays readable.
- Retired kinds (:data:`RETIRED`: ``component_due``) are no members: no detector reports them
  and no code needs them as members - their stored alerts are read as text (the API, the
  digest) with the family stored beside them. A scoring pass still lists them among the kinds
  it evaluated (``signals.scoring.KINDS_SCORED``), so an alert of a retired kind left open
  expires like any other whose condition cleared; the backtest leaves stored alerts of a
  retired kind out (``signals.backtest.stored_alerts``): they made a promise no kind makes now.
- The table above and :data:`CATALOGUE` say the same; a test keeps them together.
- Names that equal a kind but are something else keep their strings: the account-health
  features ``usage_decline`` and ``third_party_parts`` (``signals.health``), the simulator's
  ``heat_recovery`` story and product line, the components table's ``heat_recovery`` module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Family(StrEnum):
    """What an alert asks of its owner: keep the customer, sell, or service a machine."""

    RISK = "risk"
    EXPANSION = "expansion"
    SERVICE = "service"


class SignalKind(StrEnum):
    """Every kind of finding a scoring pass can report."""

    FAILURE_RISK = "failure_risk"
    SERVICE_DUE = "service_due"
    ASSET_ANOMALY = "asset_anomaly"
    CAPACITY_SATURATION = "capacity_saturation"
    HEAT_RECOVERY = "heat_recovery"
    EFFICIENCY_UPGRADE = "efficiency_upgrade"
    USAGE_GROWTH = "usage_growth"
    USAGE_DECLINE = "usage_decline"
    SILENT_ASSETS = "silent_assets"
    THIRD_PARTY_PARTS = "third_party_parts"
    RENEWAL_RISK = "renewal_risk"


# Kinds no detector reports any more; their stored alerts stay readable as text (see above).
RETIRED: frozenset[str] = frozenset({"component_due"})


@dataclass(frozen=True)
class KindInfo:
    """A kind's family, its condition in one line, and its promise in one sentence: the event
    that confirms an alert of the kind and the horizon it must happen within (the backtest's
    truth and window for the kind)."""

    family: Family
    description: str
    promise: str


CATALOGUE: dict[SignalKind, KindInfo] = {
    SignalKind.FAILURE_RISK: KindInfo(
        Family.SERVICE,
        "the fleet failure model expects the asset to fail soon",
        "the asset fails within 72 running hours of the alert (≈ the alert's horizon in days "
        "at its usage, at least 1 day); only a failure of the asset confirms it",
    ),
    SignalKind.SERVICE_DUE: KindInfo(
        Family.SERVICE,
        "a component reaches its rated limit within the horizon",
        "the component is replaced, by us or by a third party, within the alert's horizon: "
        "the running hours within which the fleet replaced 80 % of such parts still in "
        "service at its age, in days at its usage (at least 1 day)",
    ),
    SignalKind.ASSET_ANOMALY: KindInfo(
        Family.SERVICE,
        "an asset behaves unlike its own healthy period",
        "the asset fails or raises an alarm within the alert's horizon of 7 days",
    ),
    SignalKind.CAPACITY_SATURATION: KindInfo(
        Family.EXPANSION,
        "load near 100 % for a large share of production hours",
        "the account buys an expansion within 180 days of the alert",
    ),
    SignalKind.HEAT_RECOVERY: KindInfo(
        Family.EXPANSION,
        "high energy use and running hours, no heat-recovery module",
        "the account buys an expansion within 180 days of the alert",
    ),
    SignalKind.EFFICIENCY_UPGRADE: KindInfo(
        Family.EXPANSION,
        "fixed-speed machine at part load, or leaks in idle hours",
        "the account wastes energy (leaks or part load) now, a state rather than an event: "
        "no horizon, checked against the account's labelled story",
    ),
    SignalKind.USAGE_GROWTH: KindInfo(
        Family.EXPANSION,
        "metered volume trending up",
        "the account buys an expansion within 180 days of the alert",
    ),
    SignalKind.USAGE_DECLINE: KindInfo(
        Family.RISK,
        "usage falling against the account's own baseline",
        "the account churns within 180 days of the alert",
    ),
    SignalKind.SILENT_ASSETS: KindInfo(
        Family.RISK,
        "machines that stopped reporting",
        "the account churns within 180 days of the alert",
    ),
    SignalKind.THIRD_PARTY_PARTS: KindInfo(
        Family.RISK,
        "a component replaced without a service order",
        "a detection, not a forecast: the component was replaced elsewhere in the 60 days "
        "before the alert",
    ),
    SignalKind.RENEWAL_RISK: KindInfo(
        Family.RISK,
        "renewal within N days with risk factors present",
        "the account churns within 180 days of the alert",
    ),
}

# kind -> family, the lookup most callers need
FAMILIES: dict[SignalKind, Family] = {kind: info.family for kind, info in CATALOGUE.items()}


def family_of(kind: str) -> Family:
    """The family of ``kind`` (a member or its text); ValueError when it names no kind."""
    return CATALOGUE[SignalKind(kind)].family


def promise_of(kind: str) -> str:
    """The promise of ``kind`` (a member or its text); ValueError when it names no kind."""
    return CATALOGUE[SignalKind(kind)].promise
