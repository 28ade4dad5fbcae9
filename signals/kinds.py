"""The signal kinds: one enum of every kind of finding, and one catalogue of each kind's family
and what it says.

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

Decisions:
- ``StrEnum``: a member is the string it names, so the values stored in ``alerts.kind`` and
  ``alerts.family``, written in JSON and CSV, printed and passed as query parameters stay the
  strings they were (psycopg adapts a ``StrEnum`` as its text). Text read back from the
  database or the command line becomes a member with ``SignalKind(text)``.
- The family of a kind is fixed here, nowhere else; the alerts table's CHECK on ``family``
  lists the :class:`Family` values (a test compares them). ``alerts.kind`` has no CHECK: an
  alert of a kind since retired stays readable.
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

    COMPONENT_DUE = "component_due"
    ASSET_ANOMALY = "asset_anomaly"
    CAPACITY_SATURATION = "capacity_saturation"
    HEAT_RECOVERY = "heat_recovery"
    EFFICIENCY_UPGRADE = "efficiency_upgrade"
    USAGE_GROWTH = "usage_growth"
    USAGE_DECLINE = "usage_decline"
    SILENT_ASSETS = "silent_assets"
    THIRD_PARTY_PARTS = "third_party_parts"
    RENEWAL_RISK = "renewal_risk"


@dataclass(frozen=True)
class KindInfo:
    """A kind's family and its condition in one line."""

    family: Family
    description: str


CATALOGUE: dict[SignalKind, KindInfo] = {
    SignalKind.COMPONENT_DUE: KindInfo(
        Family.SERVICE, "a component reaches its limit within the horizon"
    ),
    SignalKind.ASSET_ANOMALY: KindInfo(
        Family.SERVICE, "an asset behaves unlike its own healthy period"
    ),
    SignalKind.CAPACITY_SATURATION: KindInfo(
        Family.EXPANSION, "load near 100 % for a large share of production hours"
    ),
    SignalKind.HEAT_RECOVERY: KindInfo(
        Family.EXPANSION, "high energy use and running hours, no heat-recovery module"
    ),
    SignalKind.EFFICIENCY_UPGRADE: KindInfo(
        Family.EXPANSION, "fixed-speed machine at part load, or leaks in idle hours"
    ),
    SignalKind.USAGE_GROWTH: KindInfo(Family.EXPANSION, "metered volume trending up"),
    SignalKind.USAGE_DECLINE: KindInfo(
        Family.RISK, "usage falling against the account's own baseline"
    ),
    SignalKind.SILENT_ASSETS: KindInfo(Family.RISK, "machines that stopped reporting"),
    SignalKind.THIRD_PARTY_PARTS: KindInfo(
        Family.RISK, "a component replaced without a service order"
    ),
    SignalKind.RENEWAL_RISK: KindInfo(
        Family.RISK, "renewal within N days with risk factors present"
    ),
}

# kind -> family, the lookup most callers need
FAMILIES: dict[SignalKind, Family] = {kind: info.family for kind, info in CATALOGUE.items()}


def family_of(kind: str) -> Family:
    """The family of ``kind`` (a member or its text); ValueError when it names no kind."""
    return CATALOGUE[SignalKind(kind)].family
