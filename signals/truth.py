"""What really happened, as the backtest takes it: truth events and a labelled source's stories.

The backtest's truth has two sources. ``asset_events`` (failures and service-order replacements
the machines reported) it reads itself; everything else it is given: a :class:`LabelledTruth`
from whoever knows what happened - the simulator's ``ground_truth`` table, or labelled data
imported with it - loaded by the composition root (``simulator.truth.load_truth``) and passed
in as ``labelled=``. So signals names no table of the simulator's, and a deployment with no
labels passes an empty one (the backtest then scores against ``asset_events`` alone and reports
the kinds with no truth of their kind by their alerts only).

Decisions: a :class:`TruthEvent` is frozen and hashable (the backtest unions the two sources
as a set, each event once); an event's ``time`` is timezone-aware; ``asset_id`` and
``component`` are ``''`` where the event is about an account or a whole machine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# The kinds of labelled event the backtest scores against; labels of other kinds are ignored.
LABELLED_KINDS = frozenset({"failure", "third_party_replacement", "churn", "expansion"})


@dataclass(frozen=True)
class TruthEvent:
    """One thing that happened, at a time, to an account (and one of its assets/components)."""

    kind: str  # failure, replacement, third_party_replacement, churn, expansion
    account_id: str
    asset_id: str
    component: str
    time: dt.datetime
    foreseeable: bool = True


@dataclass(frozen=True)
class LabelledTruth:
    """A labelled source's truth: its events (any kind; the backtest keeps
    :data:`LABELLED_KINDS`) and each account's story (``steady``, ``leaky``, ...)."""

    events: tuple[TruthEvent, ...] = ()
    stories: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def between(self, since: dt.datetime, until: dt.datetime) -> set[TruthEvent]:
        """The events of :data:`LABELLED_KINDS` with times in ``[since, until)``."""
        return {e for e in self.events if e.kind in LABELLED_KINDS and since <= e.time < until}
