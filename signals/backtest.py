"""Backtest: replay history, raise the alerts that would have been raised, score them against
what really happened.

**Replay.** From ``start`` to ``end`` in steps (default one hour), the full scoring pass
(``signals.scoring.score``) runs as of each time ``t``: every rule and detector reads only rollup
buckets complete by ``t`` and events before ``t``, and the models are trained in memory on what
was known before ``t`` (at ``start``, then every ``retrain_every`` of replayed time), so no
alert can depend on the future. The findings go through the alert lifecycle of
``signals.alerts`` in memory (:class:`Lifecycle`): an alert is raised when its condition is
entered, not while it holds, expires once the condition has been clear for ``clear_after`` and
is not raised again for the same key within ``cooldown``. Nothing is written to the database.

**Truth.** What really happened: ``failure`` events (``asset_events`` and the labelled truth),
replacements (``component_replaced`` events, labelled ``third_party_replacement``), ``alarm``
events (``asset_events``: alarms and error codes, e.g. imported with ``--kind alarm``), and,
when the fleet came from the simulator or labelled data was imported, the labelled ``churn``
and ``expansion`` events and account stories. The labelled truth (``signals.truth``) is an
argument (``labelled=``): the composition root loads it (``simulator.truth.load_truth`` reads
the simulator's ``ground_truth`` table); this module reads no table of the simulator's. Each
alert kind makes one promise (``signals.kinds``) and is checked against its own truth and its
own window only:

=====================  ===================================================  ================
alert kind             true when, for the alert's asset / account ...        window after it
=====================  ===================================================  ================
failure_risk           the asset fails (a replacement confirms nothing)      the alert's horizon
                                                                             (at least 1 day)
service_due            the component (where both name one) is replaced:     the alert's horizon
                       by us (``replacement``) or elsewhere                  (at least 1 day)
                       (``third_party_replacement``)
asset_anomaly          the asset fails or raises an ``alarm``                the alert's horizon
usage_decline,         the account churns                                    180 days
silent_assets,
renewal_risk
third_party_parts      a part was replaced without a service order in the    (detection)
                       60 days before the alert
capacity_saturation,   the account expands (ground-truth ``expansion``)      180 days
usage_growth,
heat_recovery,
efficiency_upgrade     the account's story is ``leaky`` (no event to time)   -
=====================  ===================================================  ================

Per kind: **precision** = true alerts / alerts (the share of alerts confirmed); **recall** =
truth events with an alert of the kind in the window before them / truth events in the replayed
period (the share of events foreseen; for asset_anomaly the events are failures only: an alarm
confirms an alert but missing one is no miss; for service_due both kinds of replacement);
**recall_foreseeable** (failure_risk, asset_anomaly) = the same over the failures the labelled
truth calls foreseeable (``TruthEvent.foreseeable``: a sudden failure with no warning in the
data is no miss of a predictor; equals recall when every failure is foreseeable); **lead
time** = hours from the first such alert to the event (negative for detections after the
fact), its median and quartiles; **alerts per CSM per week**; **false alerts per 1,000
operating hours** (asset-hours with data in the period). A kind with no truth of its kind (in
the database or the labelled truth) reports its alerts only.

**Pending alerts.** An alert whose window (e.g. raised_at + horizon) reaches past the end of the
data (``data_end``: the end of the latest hourly rollup bucket, ``signals.health.data_end``, no
later than the truth loaded) can be confirmed but not refuted: when no event confirms it, it is
**pending**, neither true nor false. A window ending exactly at ``data_end`` is decided (the
closed window is all observed). The existing figures keep their meaning (``precision`` = true /
all alerts, ``false_per_1000_operating_hours`` counts pending alerts as false: outside clients
read them); beside them: ``pending_alerts``, ``decided_alerts`` (all but pending),
``false_alerts`` (decided and not confirmed), ``precision_decided`` = true / decided,
``chance_precision_decided`` (the chance level over the decided alerts, with only decided random
windows counted: those that hold an event or end by ``data_end``) and
``refuted_per_1000_operating_hours`` (false alerts per 1,000 operating hours).

**Chance level** (``chance_precision``, the ``chance`` column beside precision): the precision
the kind's alerts would have had if each had been raised at a random moment for a random subject
- the share of windows of the same length, starting at a uniformly random operating subject-hour
(asset-hour, or account-hour for the account kinds: each subject weighted by its operating
hours, as the false-alert rate's denominator is), that hold a truth event confirming it. A
subject's operating hours are the whole hours from its first to its last hourly rollup bucket in
the period (an account's: from its assets' first to their last, widened to the hours of the
fleet's span that its contracts in force cover, so that an account under contract whose machines
were silent for the whole period, as before a churn, is still a subject). A window is put at a
subject with the rule that scores alerts (``_matches`` and ``_window``, one home: a component
alert keeps its component, each alert keeps its own horizon), and the kind's chance is the mean
over its alerts of the chance of each alert's window. It is computed exactly, not sampled: the
start hours whose window holds a confirming event are the union over the subject's matching
events of the closed intervals ``[event - window end, event - window start]``, counted on the
hour grid of the subject's span (windows near the period's ends count with the events truth
holds beyond it, exactly as alerts there do). For the story kinds it is the share of
account-hours whose account has the story. A kind with no alerts, no truth or no operating
hours has none.
Precision well above chance is skill; precision near chance is what long windows give for free.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from signals.alerts import strongest
from signals.catalogue import PriceBook
from signals.findings import Finding
from signals.health import data_end as fleet_data_end
from signals.kinds import RETIRED, Family, SignalKind, family_of, promise_of
from signals.routing import (
    DIGEST,
    IMMEDIATE,
    NO_CSM,
    Candidate,
    Routing,
    delivery_load,
    route_in_order,
)
from signals.scoring import score, train_models
from signals.truth import LabelledTruth, TruthEvent

log = logging.getLogger(__name__)

CHURN_WINDOW = dt.timedelta(days=180)
EXPANSION_WINDOW = dt.timedelta(days=180)
DETECTION_WINDOW = dt.timedelta(days=60)
MIN_FAILURE_WINDOW = dt.timedelta(days=1)
_HOUR = dt.timedelta(hours=1)

_ASSET_KINDS = {SignalKind.FAILURE_RISK, SignalKind.SERVICE_DUE, SignalKind.ASSET_ANOMALY}
# the kinds that predict failures: their recall is also reported over foreseeable failures
_FAILURE_KINDS = {SignalKind.FAILURE_RISK, SignalKind.ASSET_ANOMALY}
_CHURN_KINDS = {SignalKind.USAGE_DECLINE, SignalKind.SILENT_ASSETS, SignalKind.RENEWAL_RISK}
_EXPANSION_KINDS = {
    SignalKind.CAPACITY_SATURATION,
    SignalKind.USAGE_GROWTH,
    SignalKind.HEAT_RECOVERY,
}
_STORY_KINDS: dict[str, str] = {SignalKind.EFFICIENCY_UPGRADE: "leaky"}
CHANCE_NOTE = (
    "chance: the precision of the same alerts raised at random operating hours of random "
    "assets (accounts), each with its own window"
)
FORESEEN_NOTE = (
    "foreseen: recall over the failures the labelled truth calls foreseeable (failure_risk, "
    "asset_anomaly); lead h: median hours from the first alert to the event, p25–p75 its "
    "quartiles"
)

PENDING_NOTE = (
    "pending: alerts not confirmed whose window reaches past the end of the data ({data_end}), "
    "neither true nor false; decided: precision over the other alerts, with its chance level "
    "(random windows that end by then or hold an event); refuted/1kh: decided false alerts "
    "per 1,000 operating hours (false/1kh counts the pending ones as false)"
)


@dataclass(frozen=True)
class RaisedAlert:
    """An alert the replay raised: when, for whom, and why."""

    raised_at: dt.datetime
    account_id: str
    kind: str
    subject: str
    score: float
    value: Decimal
    horizon_days: int
    reasons: tuple[str, ...]
    owner: str | None = None

    @property
    def family(self) -> Family:
        return family_of(self.kind)

    @property
    def asset_id(self) -> str:
        return self.subject.split("/", 1)[0]

    @property
    def component(self) -> str:
        return self.subject.split("/", 1)[1] if "/" in self.subject else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "raised_at": self.raised_at.isoformat(),
            "account_id": self.account_id,
            "owner": self.owner,
            "kind": self.kind,
            "family": self.family,
            "subject": self.subject,
            "score": round(self.score, 4),
            "value": str(self.value),
            "horizon_days": self.horizon_days,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaisedAlert:
        """The alert of :meth:`as_dict` (e.g. from ``signals backtest --json``)."""
        return cls(
            dt.datetime.fromisoformat(data["raised_at"]),
            data["account_id"],
            data["kind"],
            data["subject"],
            float(data["score"]),
            Decimal(data["value"]),
            int(data["horizon_days"]),
            tuple(data["reasons"]),
            data.get("owner"),
        )


@dataclass
class _Open:
    finding: Finding
    raised_at: dt.datetime
    last_seen: dt.datetime


@dataclass
class Lifecycle:
    """The alert lifecycle of ``signals.alerts`` in memory (no CSM acts during a replay):
    a key with no open alert and no alert closed within ``cooldown`` raises one; a finding
    for an open key keeps it open; an open key without findings for ``clear_after`` expires."""

    clear_after: dt.timedelta
    cooldown: dt.timedelta
    open: dict[tuple[str, str, str], _Open] = field(default_factory=dict)
    closed_at: dict[tuple[str, str, str], dt.datetime] = field(default_factory=dict)

    def apply(self, findings: Iterable[Finding], now: dt.datetime) -> list[Finding]:
        """Apply one pass's findings; returns the findings that raised an alert."""
        best = {(f.account_id, f.kind, f.subject): f for f in strongest(findings)}
        raised = []
        for key, f in sorted(best.items()):
            current = self.open.get(key)
            if current is not None:
                current.finding, current.last_seen = f, now
                continue
            closed = self.closed_at.get(key)
            if closed is not None and now - closed < self.cooldown:
                continue
            self.open[key] = _Open(f, now, now)
            raised.append(f)
        for key in [k for k, o in self.open.items() if k not in best]:
            if now - self.open[key].last_seen > self.clear_after:
                del self.open[key]
                self.closed_at[key] = now
        return raised


@dataclass(frozen=True)
class KindResult:
    """The figures of one alert kind."""

    kind: str
    alerts: int
    true_alerts: int | None
    events: int | None
    caught: int | None
    median_lead_hours: float | None
    alerts_per_csm_week: float
    false_per_1000_hours: float | None
    truth: str
    chance_precision: float | None = None
    lead_p25_hours: float | None = None
    lead_p75_hours: float | None = None
    foreseeable_events: int | None = None
    foreseeable_caught: int | None = None
    # alerts neither confirmed nor refuted: their window reaches past the data's end
    pending_alerts: int | None = None
    chance_precision_decided: float | None = None
    refuted_per_1000_hours: float | None = None

    @property
    def promise(self) -> str:
        return promise_of(self.kind)

    @property
    def decided_alerts(self) -> int | None:
        """Alerts confirmed or refuted: all but the pending ones."""
        if self.true_alerts is None:
            return None
        return self.alerts - (self.pending_alerts or 0)

    @property
    def false_alerts(self) -> int | None:
        """Alerts refuted: decided and not confirmed (pending ones are not counted)."""
        decided = self.decided_alerts
        return None if decided is None or self.true_alerts is None else decided - self.true_alerts

    @property
    def precision_decided(self) -> float | None:
        """True alerts / decided alerts: the precision of the alerts the data can judge."""
        decided = self.decided_alerts
        if self.true_alerts is None or not decided:
            return None
        return self.true_alerts / decided

    @property
    def precision(self) -> float | None:
        if self.true_alerts is None or not self.alerts:
            return None
        return self.true_alerts / self.alerts

    @property
    def recall(self) -> float | None:
        if self.caught is None or not self.events:
            return None
        return self.caught / self.events

    @property
    def recall_foreseeable(self) -> float | None:
        """Foreseen foreseeable failures / foreseeable failures (failure kinds only)."""
        if self.foreseeable_caught is None or not self.foreseeable_events:
            return None
        return self.foreseeable_caught / self.foreseeable_events

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "family": family_of(self.kind),
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "precision": _round(self.precision),
            "chance_precision": _round(self.chance_precision, 6),
            "events": self.events,
            "caught": self.caught,
            "recall": _round(self.recall),
            "foreseeable_events": self.foreseeable_events,
            "foreseeable_caught": self.foreseeable_caught,
            "recall_foreseeable": _round(self.recall_foreseeable),
            "median_lead_hours": _round(self.median_lead_hours, 1),
            "lead_hours_p25": _round(self.lead_p25_hours, 1),
            "lead_hours_p75": _round(self.lead_p75_hours, 1),
            "alerts_per_csm_week": round(self.alerts_per_csm_week, 3),
            "false_per_1000_operating_hours": _round(self.false_per_1000_hours),
            "truth": self.truth,
            "promise": self.promise,
            "pending_alerts": self.pending_alerts,
            "false_alerts": self.false_alerts,
            "decided_alerts": self.decided_alerts,
            "precision_decided": _round(self.precision_decided),
            "chance_precision_decided": _round(self.chance_precision_decided, 6),
            "refuted_per_1000_operating_hours": _round(self.refuted_per_1000_hours),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class BacktestResult:
    start: dt.datetime
    end: dt.datetime
    step: dt.timedelta
    passes: int
    trainings: int
    alerts: list[RaisedAlert]
    kinds: list[KindResult]
    operating_hours: int
    csms: int
    truth_events: dict[str, int]
    seconds: float
    data_end: dt.datetime | None = None

    @property
    def weeks(self) -> float:
        return (self.end - self.start) / dt.timedelta(weeks=1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "step_hours": self.step / dt.timedelta(hours=1),
            "passes": self.passes,
            "trainings": self.trainings,
            "operating_hours": self.operating_hours,
            "csms": self.csms,
            "weeks": round(self.weeks, 2),
            "truth_events": self.truth_events,
            "seconds": round(self.seconds, 1),
            "data_end": None if self.data_end is None else self.data_end.isoformat(),
            "by_kind": [k.as_dict() for k in self.kinds],
            "alerts": [a.as_dict() for a in self.alerts],
        }


@dataclass(frozen=True)
class DeliveryLoad:
    """How the replayed alerts would have reached their CSMs through the delivery gate of
    ``signals.routing`` (precision gate and weekly budget; :func:`delivery_load_of`)."""

    min_precision: float
    weekly_budget: int
    precision_source: str  # whose precision the gate used
    csms: int
    weeks: float
    immediate: int
    digest: int
    max_immediate_7_days: int  # the most immediate alerts one CSM got in any 7 days
    immediate_by_kind: dict[str, int]
    # immediate alerts of accounts without a CSM: no budget counts them (signals.routing, rule
    # 4) and nobody receives them, so they are not in max_immediate_7_days
    immediate_without_csm: int = 0

    @property
    def immediate_per_csm_week(self) -> float:
        return self.immediate / self.csms / self.weeks if self.weeks > 0 else 0.0

    @property
    def digest_per_csm_week(self) -> float:
        return self.digest / self.csms / self.weeks if self.weeks > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_precision": self.min_precision,
            "weekly_budget": self.weekly_budget,
            "precision_source": self.precision_source,
            "immediate": self.immediate,
            "digest": self.digest,
            "immediate_per_csm_week": round(self.immediate_per_csm_week, 2),
            "digest_per_csm_week": round(self.digest_per_csm_week, 2),
            "max_immediate_7_days": self.max_immediate_7_days,
            "immediate_by_kind": self.immediate_by_kind,
            "immediate_without_csm": self.immediate_without_csm,
        }

    def line(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.immediate_by_kind.items()) or "none"
        return (
            f"delivery (gate: measured precision ≥ {self.min_precision:.0%}, at most "
            f"{self.weekly_budget} immediate alerts per CSM in 7 days; precision from "
            f"{self.precision_source}): {self.immediate_per_csm_week:.2f} immediate and "
            f"{self.digest_per_csm_week:.2f} digest alerts per CSM per week, at most "
            f"{self.max_immediate_7_days} immediate for one CSM in any 7 days; immediate: {kinds}"
            + (
                f" ({self.immediate_without_csm} of them of accounts without a CSM, sent to "
                "nobody and counted against no budget)"
                if self.immediate_without_csm
                else ""
            )
        )


def delivery_load_of(
    result: BacktestResult,
    min_precision: float,
    weekly_budget: int,
    precision: dict[str, float | None] | None = None,
) -> DeliveryLoad:
    """Route the result's alerts pass by pass with the gate of ``signals.routing`` (the same
    rules as the live path, one rolling budget per CSM) and count what each CSM got at once
    and what waited for the digest. ``precision``: the measured precision per kind the gate
    reads (e.g. the stored one); by default this backtest's own over its decided alerts
    (``KindResult.precision_decided``, as ``signals.routing`` stores it), which is in-sample: the
    gate then knows how the period turned out, so the figures say what the gate does with
    a given measurement, not how well the measurement predicts itself."""
    source = "the stored measurements"
    if precision is None:
        precision = {k.kind: k.precision_decided for k in result.kinds}
        source = "this backtest (in-sample)"
    raised = [
        (a.raised_at, Candidate(i, a.kind, a.owner, _expected_value(a)))
        for i, a in enumerate(result.alerts)
    ]
    routes = route_in_order(raised, Routing(precision, min_precision, weekly_budget))
    load = delivery_load(raised, routes)
    by_kind: dict[str, int] = defaultdict(int)
    for _, c in raised:
        if routes[c.key].delivery == IMMEDIATE:
            by_kind[c.kind] += 1
    return DeliveryLoad(
        min_precision,
        weekly_budget,
        source,
        result.csms,
        result.weeks,
        sum(v[IMMEDIATE] for v in load.values()),
        sum(v[DIGEST] for v in load.values()),
        max((v["max_7_days"] for o, v in load.items() if o != NO_CSM), default=0),
        dict(sorted(by_kind.items())),
        load.get(NO_CSM, {}).get(IMMEDIATE, 0),
    )


def _expected_value(alert: RaisedAlert) -> Decimal:
    """As ``Finding.expected_value``: probability × value, to the cent."""
    return (Decimal(str(alert.score)) * alert.value).quantize(Decimal("0.01"))


Progress = Callable[[dt.datetime, int, int, int], None]


def replay(
    conn: psycopg.Connection[TupleRow],
    start: dt.datetime,
    end: dt.datetime,
    *,
    step: dt.timedelta = dt.timedelta(hours=1),
    retrain_every: dt.timedelta = dt.timedelta(days=1),
    prices: PriceBook | None = None,
    kinds: Collection[str] | None = None,
    on_trained: Callable[[dt.datetime, dict[str, object | None]], None] | None = None,
) -> Iterator[tuple[dt.datetime, list[Finding], bool]]:
    """Each replayed time with its findings (as of that time) and whether models were
    retrained before it. ``on_trained(t, models)`` is called after each training (the demo
    stores the models there; the backtest keeps them in memory only)."""
    _check_window(start, end, step)
    models: dict[str, object | None] = {}
    trained_at: dt.datetime | None = None
    t = start
    while t < end:
        retrained = trained_at is None or t - trained_at >= retrain_every
        if retrained:
            models = train_models(conn, t)
            trained_at = t
            if on_trained is not None:
                on_trained(t, models)
        findings = score(conn, t, prices, models)
        if kinds is not None:
            findings = [f for f in findings if f.kind in kinds]
        yield t, findings, retrained
        t += step


def _check_window(start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the backtest's from and to must be timezone-aware")
    if end <= start:
        raise ValueError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    if step <= dt.timedelta(0):
        raise ValueError("the step must be positive")


def run_backtest(
    conn: psycopg.Connection[TupleRow],
    start: dt.datetime,
    end: dt.datetime,
    *,
    step: dt.timedelta = dt.timedelta(hours=1),
    retrain_every: dt.timedelta = dt.timedelta(days=1),
    clear_after: dt.timedelta = dt.timedelta(hours=48),
    cooldown: dt.timedelta = dt.timedelta(days=7),
    prices: PriceBook | None = None,
    kinds: Collection[str] | None = None,
    progress: Progress | None = None,
    labelled: LabelledTruth | None = None,
) -> BacktestResult:
    """Replay ``[start, end)`` and evaluate the raised alerts against the truth (``asset_events``
    and ``labelled``: none when omitted)."""
    started = time.monotonic()
    lifecycle = Lifecycle(clear_after, cooldown)
    owners = _owners(conn)
    raised: list[RaisedAlert] = []
    passes = trainings = 0
    total = int((end - start) / step) + (1 if (end - start) % step else 0)
    for t, findings, retrained in replay(
        conn, start, end, step=step, retrain_every=retrain_every, prices=prices, kinds=kinds
    ):
        passes += 1
        trainings += retrained
        for f in lifecycle.apply(findings, t):
            raised.append(
                RaisedAlert(
                    t,
                    f.account_id,
                    f.kind,
                    f.subject,
                    f.score,
                    f.value,
                    f.horizon_days,
                    f.reasons,
                    owners.get(f.account_id),
                )
            )
        if progress is not None:
            progress(t, passes, total, len(raised))
    return evaluate(
        conn,
        raised,
        start,
        end,
        step=step,
        passes=passes,
        trainings=trainings,
        kinds=kinds,
        seconds=time.monotonic() - started,
        labelled=labelled,
    )


def evaluate(
    conn: psycopg.Connection[TupleRow],
    raised: list[RaisedAlert],
    start: dt.datetime,
    end: dt.datetime,
    *,
    step: dt.timedelta,
    passes: int,
    trainings: int,
    kinds: Collection[str] | None = None,
    seconds: float = 0.0,
    labelled: LabelledTruth | None = None,
) -> BacktestResult:
    """Score alerts raised in ``[start, end)`` against the truth: the database's
    ``asset_events`` and ``labelled`` (none when omitted)."""
    labelled = labelled if labelled is not None else LabelledTruth()
    owners = _owners(conn)
    until = end + max(CHURN_WINDOW, EXPANSION_WINDOW)
    truth = load_truth(conn, start, until, labelled)
    stories = dict(labelled.stories)
    hours = _operating_hours(conn, start, end)
    spans = operating_spans(conn, start, end)
    csms = len({o for o in owners.values() if o}) or 1
    weeks = (end - start) / dt.timedelta(weeks=1)
    known = truth_end(conn, until)
    # a retired kind (in signals.scoring.KINDS_SCORED, which the demo passes) has nothing to score
    scored = sorted(k for k in (SignalKind if kinds is None else kinds) if k not in RETIRED)
    results = [
        evaluate_kind(
            kind,
            raised,
            truth,
            stories,
            start,
            end,
            hours,
            csms,
            weeks,
            spans=spans,
            data_end=known,
        )
        for kind in scored
    ]
    counts: dict[str, int] = defaultdict(int)
    for e in truth:
        if start <= e.time < end:
            counts[e.kind] += 1
    return BacktestResult(
        start,
        end,
        step,
        passes,
        trainings,
        raised,
        results,
        hours,
        csms,
        dict(sorted(counts.items())),
        seconds,
        known,
    )


def truth_end(conn: psycopg.Connection[TupleRow], until: dt.datetime) -> dt.datetime | None:
    """Up to when the truth is known: the end of the fleet's data (the end of its latest
    hourly rollup bucket, ``signals.health.data_end``), but no later than ``until``, the end
    of the truth loaded. An alert whose window reaches past it is pending."""
    end = fleet_data_end(conn)
    return None if end is None else min(end, until)


def evaluate_at_horizon(
    conn: psycopg.Connection[TupleRow],
    raised: list[RaisedAlert],
    kind: str,
    start: dt.datetime,
    end: dt.datetime,
    horizon: dt.timedelta,
    labelled: LabelledTruth | None = None,
) -> KindResult:
    """``kind``'s alerts raised in ``[start, end)`` scored as :func:`evaluate` scores them,
    but against ``horizon`` after each alert instead of the alert's own horizon (an asset
    kind; e.g. failure_risk at 24 h beside the published Azure figures)."""
    labelled = labelled if labelled is not None else LabelledTruth()
    owners = _owners(conn)
    until = end + max(CHURN_WINDOW, EXPANSION_WINDOW)
    truth = load_truth(conn, start, until, labelled)
    csms = len({o for o in owners.values() if o}) or 1
    return evaluate_kind(
        kind,
        raised,
        truth,
        dict(labelled.stories),
        start,
        end,
        _operating_hours(conn, start, end),
        csms,
        (end - start) / dt.timedelta(weeks=1),
        spans=operating_spans(conn, start, end),
        horizon=horizon,
        data_end=truth_end(conn, until),
    )


def stored_alerts(
    conn: psycopg.Connection[TupleRow], start: dt.datetime, end: dt.datetime
) -> list[RaisedAlert]:
    """The alerts of the ``alerts`` table opened in ``[start, end)``, as raised alerts (to score
    a replay that went through the real lifecycle, as the demo's does). Alerts of a retired
    kind (``signals.kinds.RETIRED``) are left out: no kind makes their promise now."""
    rows = conn.execute(
        "SELECT opened_at, account_id, kind, subject, score, value, horizon_days, reasons,"
        " owner_csm_id FROM alerts WHERE opened_at >= %s AND opened_at < %s"
        " AND kind = ANY(%s) ORDER BY opened_at, alert_id",
        (start, end, [str(k) for k in SignalKind]),
    ).fetchall()
    return [
        RaisedAlert(t, str(a), str(k), str(s), float(sc), Decimal(v), int(h), tuple(r), o)
        for t, a, k, s, sc, v, h, r, o in rows
    ]


def _owners(conn: psycopg.Connection[TupleRow]) -> dict[str, str | None]:
    return {str(a): c for a, c in conn.execute("SELECT account_id, csm_id FROM accounts")}


def load_truth(
    conn: psycopg.Connection[TupleRow],
    start: dt.datetime,
    until: dt.datetime,
    labelled: LabelledTruth,
) -> list[TruthEvent]:
    """Failures, replacements, alarms, churn and expansions with times in
    ``[start - 60 days, until)``, from ``asset_events`` and ``labelled``, each once (an event
    both hold is taken from ``labelled``, which may know it was not foreseeable)."""
    since = start - DETECTION_WINDOW
    rows = conn.execute(
        """
        SELECT CASE e.kind WHEN 'component_replaced' THEN 'replacement' ELSE e.kind END,
               a.account_id, e.asset_id, coalesce(e.component, ''), e.time
        FROM asset_events e JOIN assets a USING (asset_id)
        WHERE e.kind IN ('failure', 'component_replaced', 'alarm') AND e.time >= %(since)s
          AND e.time < %(until)s
        """,
        {"since": since, "until": until},
    ).fetchall()
    events = {
        (e.kind, e.account_id, e.asset_id, e.component, e.time): e
        for e in (TruthEvent(str(k), str(a), str(s), str(c), t) for k, a, s, c, t in rows)
    }
    for e in labelled.between(since, until):
        events[(e.kind, e.account_id, e.asset_id, e.component, e.time)] = e
    return sorted(
        events.values(), key=lambda e: (e.time, e.kind, e.account_id, e.asset_id, e.component)
    )


def _operating_hours(
    conn: psycopg.Connection[TupleRow], start: dt.datetime, end: dt.datetime
) -> int:
    row = conn.execute(
        "SELECT count(*) FROM rollup_hourly WHERE bucket >= %s AND bucket < %s", (start, end)
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class OperatingSpans:
    """Each asset's account and its first and last hourly bucket with data in the period, and
    the accounts under contract in the period with the days their contracts cover."""

    assets: dict[str, tuple[str, dt.datetime, dt.datetime]]
    # account -> (first day, last day) of its contracts in force in the period
    contracts: dict[str, tuple[dt.date, dt.date]] = field(default_factory=dict)

    def accounts(self) -> dict[str, tuple[dt.datetime, dt.datetime]]:
        """Each account's span: from its assets' first bucket to their last, widened to the
        hours of the fleet's span its contracts cover (an account under contract is a subject
        even when its machines were silent for the whole period, as they often are before a
        churn)."""
        spans: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        for account, first, last in self.assets.values():
            lo, hi = spans.get(account, (first, last))
            spans[account] = (min(first, lo), max(last, hi))
        if not spans:
            return spans
        fleet_lo = min(lo for lo, _ in spans.values())
        fleet_hi = max(hi for _, hi in spans.values())
        for account, (first_day, last_day) in self.contracts.items():
            lo = max(fleet_lo, dt.datetime.combine(first_day, dt.time(), dt.UTC))
            hi = min(fleet_hi, dt.datetime.combine(last_day, dt.time(23), dt.UTC))
            if lo > hi:
                continue
            if account in spans:
                lo, hi = min(lo, spans[account][0]), max(hi, spans[account][1])
            spans[account] = (lo, hi)
        return spans


def operating_spans(
    conn: psycopg.Connection[TupleRow], start: dt.datetime, end: dt.datetime
) -> OperatingSpans:
    """The assets' operating spans in ``[start, end)`` (hourly rollup buckets with data) and
    the accounts' contract days in force in it (core's ``contracts``; none for data sets
    without contracts)."""
    rows = conn.execute(
        "SELECT r.asset_id, a.account_id, min(r.bucket), max(r.bucket)"
        " FROM rollup_hourly r JOIN assets a USING (asset_id)"
        " WHERE r.bucket >= %s AND r.bucket < %s GROUP BY r.asset_id, a.account_id",
        (start, end),
    ).fetchall()
    first_day = start.astimezone(dt.UTC).date()
    last_day = (end - dt.timedelta(microseconds=1)).astimezone(dt.UTC).date()
    contracts = conn.execute(
        "SELECT account_id, min(start_date), max(coalesce(end_date, %(last)s))"
        " FROM contracts WHERE start_date <= %(last)s"
        " AND (end_date IS NULL OR end_date >= %(first)s) GROUP BY account_id",
        {"first": first_day, "last": last_day},
    ).fetchall()
    return OperatingSpans(
        {str(s): (str(a), lo, hi) for s, a, lo, hi in rows},
        {str(a): (first, last) for a, first, last in contracts},
    )


def _matches(alert: RaisedAlert, event: TruthEvent) -> bool:
    """Whether ``event`` is about what ``alert`` is about."""
    if alert.kind in _ASSET_KINDS:
        if event.asset_id != alert.asset_id:
            return False
        return not (alert.component and event.component and alert.component != event.component)
    if alert.kind == SignalKind.THIRD_PARTY_PARTS:
        if event.asset_id and event.asset_id != alert.asset_id:
            return False
        return event.account_id == alert.account_id
    return event.account_id == alert.account_id


def _window(
    alert: RaisedAlert, horizon: dt.timedelta | None = None
) -> tuple[dt.timedelta, dt.timedelta]:
    """The span, relative to the alert, in which a truth event confirms it. ``horizon``
    replaces an asset alert's own (e.g. the 24 h of published Azure figures)."""
    if alert.kind in _ASSET_KINDS:
        if horizon is not None:
            return dt.timedelta(0), horizon
        return dt.timedelta(0), max(dt.timedelta(days=alert.horizon_days), MIN_FAILURE_WINDOW)
    if alert.kind == SignalKind.THIRD_PARTY_PARTS:
        return -DETECTION_WINDOW, dt.timedelta(0)
    if alert.kind in _CHURN_KINDS:
        return dt.timedelta(0), CHURN_WINDOW
    return dt.timedelta(0), EXPANSION_WINDOW


def _confirming_starts(
    alert: RaisedAlert, event: TruthEvent, horizon: dt.timedelta | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """The raise times (a closed interval) at which an alert like ``alert`` has ``event``
    inside its window."""
    before, after = _window(alert, horizon)
    return event.time - after, event.time - before


def _confirms(alert: RaisedAlert, event: TruthEvent, horizon: dt.timedelta | None = None) -> bool:
    """Whether ``event`` is about ``alert``'s subject and inside its window."""
    lo, hi = _confirming_starts(alert, event, horizon)
    return _matches(alert, event) and lo <= alert.raised_at <= hi


def is_pending(
    alert: RaisedAlert,
    data_end: dt.datetime | None,
    horizon: dt.timedelta | None = None,
) -> bool:
    """Whether ``alert``'s window reaches past ``data_end`` (an event there could still
    confirm it): an unconfirmed such alert is pending, neither true nor false. A window that
    ends exactly at ``data_end`` is decided (its closed window is all observed)."""
    if data_end is None:
        return False
    return alert.raised_at + _window(alert, horizon)[1] > data_end


def hours_covered(
    first: dt.datetime, last: dt.datetime, intervals: Iterable[tuple[dt.datetime, dt.datetime]]
) -> int:
    """How many of the whole hours ``first``, ``first + 1 h``, ... ``last`` lie in the union of
    the closed ``intervals`` (exact: integer hour indices, overlaps counted once)."""
    n = (last - first) // _HOUR + 1
    ranges = []
    for lo, hi in intervals:
        k_lo = max(0, -((first - lo) // _HOUR))  # ceil((lo - first) / 1 h)
        k_hi = min(n - 1, (hi - first) // _HOUR)  # floor((hi - first) / 1 h)
        if k_lo <= k_hi:
            ranges.append((k_lo, k_hi))
    covered, reach = 0, -1
    for k_lo, k_hi in sorted(ranges):
        if k_hi > reach:
            covered += k_hi - max(k_lo, reach + 1) + 1
            reach = k_hi
    return covered


def chance_level(
    alert: RaisedAlert,
    truth: Iterable[TruthEvent],
    subjects: Iterable[tuple[str, str, dt.datetime, dt.datetime]],
    horizon: dt.timedelta | None = None,
    data_end: dt.datetime | None = None,
) -> tuple[int, int]:
    """(hours whose window holds a confirming event, hours) for ``alert``'s window put at each
    operating hour of each subject ``(account, asset or "", first, last)``: the alert's subject
    is replaced (its component kept) and matched by the scoring rule (``_matches``,
    ``_confirming_starts``). With ``data_end``, the hours counted are the decided ones only
    (as :func:`is_pending` decides an alert): those whose window holds an event or ends by
    ``data_end``."""
    events = list(truth)
    hits = hours = 0
    for account, asset, first, last in subjects:
        subject = alert.subject
        if asset:
            subject = f"{asset}/{alert.component}" if alert.component else asset
        there = replace(alert, account_id=account, subject=subject)
        starts = [_confirming_starts(there, e, horizon) for e in events if _matches(there, e)]
        hits += hours_covered(first, last, starts)
        if data_end is None:
            hours += (last - first) // _HOUR + 1
        else:  # a start hour is decided when its window is hit or ends by data_end
            decidable = (first, data_end - _window(there, horizon)[1])
            hours += hours_covered(first, last, [*starts, decidable])
    return hits, hours


def _chance_precision(
    kind: str,
    mine: list[RaisedAlert],
    relevant: list[TruthEvent],
    spans: OperatingSpans | None,
    horizon: dt.timedelta | None = None,
    data_end: dt.datetime | None = None,
) -> float | None:
    """The mean over ``mine`` of each alert's chance level (see the module docstring); with
    ``data_end``, of each one's chance among the decided windows (:func:`chance_level`)."""
    if not mine or not relevant or spans is None:
        return None
    if kind in _ASSET_KINDS or kind == SignalKind.THIRD_PARTY_PARTS:
        subjects = [(a, s, lo, hi) for s, (a, lo, hi) in sorted(spans.assets.items())]
    else:
        subjects = [(a, "", lo, hi) for a, (lo, hi) in sorted(spans.accounts().items())]
    if not subjects:
        return None
    alike: dict[tuple[str, int], list[RaisedAlert]] = defaultdict(list)
    for a in mine:  # alerts with one component and horizon have one chance
        alike[(a.component, a.horizon_days)].append(a)
    total, counted = 0.0, 0
    for group in alike.values():
        hits, hours = chance_level(group[0], relevant, subjects, horizon, data_end)
        if hours:  # no decided window at all: the group has no chance level
            total += len(group) * hits / hours
            counted += len(group)
    return total / counted if counted else None


def _story_chance(
    story: str, mine: list[RaisedAlert], stories: dict[str, str], spans: OperatingSpans | None
) -> float | None:
    """The share of account-hours whose account has ``story``."""
    if not mine or spans is None:
        return None
    accounts = spans.accounts()
    hours = {a: (hi - lo) // _HOUR + 1 for a, (lo, hi) in accounts.items()}
    total = sum(hours.values())
    if not total:
        return None
    return sum(h for a, h in hours.items() if stories.get(a) == story) / total


def _truth_kinds(kind: str) -> tuple[set[str], set[str]]:
    """(events that confirm an alert, events an alert should have caught) for ``kind``."""
    if kind == SignalKind.FAILURE_RISK:
        return {"failure"}, {"failure"}
    if kind == SignalKind.SERVICE_DUE:
        replaced = {"replacement", "third_party_replacement"}
        return replaced, replaced
    if kind == SignalKind.ASSET_ANOMALY:
        return {"failure", "alarm"}, {"failure"}
    if kind == SignalKind.THIRD_PARTY_PARTS:
        return {"third_party_replacement"}, {"third_party_replacement"}
    if kind in _CHURN_KINDS:
        return {"churn"}, {"churn"}
    if kind in _EXPANSION_KINDS:
        return {"expansion"}, {"expansion"}
    return set(), set()


def evaluate_kind(
    kind: str,
    alerts: list[RaisedAlert],
    truth: list[TruthEvent],
    stories: dict[str, str],
    start: dt.datetime,
    end: dt.datetime,
    operating_hours: int,
    csms: int,
    weeks: float,
    *,
    spans: OperatingSpans | None = None,
    horizon: dt.timedelta | None = None,
    data_end: dt.datetime | None = None,
) -> KindResult:
    """Precision, recall, lead time and alert load of one kind, and its chance level when the
    subjects' operating ``spans`` are given (see the module docstring). ``horizon``: score the
    asset kinds' alerts against this window after each alert instead of their own horizon
    (e.g. the 24 h of the published Azure figures); the kind's promise is unchanged.
    ``data_end``: where the data ends; an unconfirmed alert whose window reaches past it is
    pending (:func:`is_pending`), counted in neither the decided nor the false alerts (none
    is pending when omitted)."""
    mine = [a for a in alerts if a.kind == kind]
    per_csm_week = len(mine) / csms / weeks if weeks > 0 else 0.0
    confirming, expected = _truth_kinds(kind)
    if kind in _STORY_KINDS:
        story = _STORY_KINDS[kind]
        if not stories:
            return KindResult(kind, len(mine), None, None, None, None, per_csm_week, None, "")
        true = sum(stories.get(a.account_id) == story for a in mine)
        storied = {a for a, s in stories.items() if s == story}
        caught = len(storied & {a.account_id for a in mine})
        false_rate = _false_rate(len(mine) - true, operating_hours)
        chance = _story_chance(story, mine, stories, spans)
        return KindResult(
            kind,
            len(mine),
            true,
            len(storied),
            caught,
            None,
            per_csm_week,
            false_rate,
            f"accounts with the {story} story",
            chance,
            pending_alerts=0,  # a story has no window: every alert is decided
            chance_precision_decided=chance,
            refuted_per_1000_hours=false_rate,
        )
    relevant = [e for e in truth if e.kind in confirming]
    if not relevant:
        return KindResult(kind, len(mine), None, None, None, None, per_csm_week, None, "")
    confirmed = [any(_confirms(a, e, horizon) for e in relevant) for a in mine]
    true = sum(confirmed)
    decided = [
        a
        for a, ok in zip(mine, confirmed, strict=True)
        if ok or not is_pending(a, data_end, horizon)
    ]
    pending = len(mine) - len(decided)
    events = [e for e in relevant if e.kind in expected and start <= e.time < end]
    leads: list[float] = []
    foreseeable = foreseen = 0
    for e in events:
        firsts = [a.raised_at for a in mine if _confirms(a, e, horizon)]
        if firsts:
            leads.append((e.time - min(firsts)) / dt.timedelta(hours=1))
        if e.foreseeable:
            foreseeable += 1
            foreseen += bool(firsts)
    quartiles = _quartiles(leads)
    failures = kind in _FAILURE_KINDS
    return KindResult(
        kind,
        len(mine),
        true,
        len(events),
        len(leads),
        quartiles[1],
        per_csm_week,
        _false_rate(len(mine) - true, operating_hours),
        " or ".join(sorted(confirming)),
        _chance_precision(kind, mine, relevant, spans, horizon),
        quartiles[0],
        quartiles[2],
        foreseeable if failures else None,
        foreseen if failures else None,
        pending,
        _chance_precision(kind, decided, relevant, spans, horizon, data_end),
        _false_rate(len(decided) - true, operating_hours),
    )


def _quartiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(25th percentile, median, 75th percentile) of ``values``, ``None`` when empty."""
    if not values:
        return None, None, None
    if len(values) == 1:
        return values[0], values[0], values[0]
    p25, p50, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return p25, p50, p75


def _false_rate(false_alerts: int, operating_hours: int) -> float | None:
    return false_alerts * 1000 / operating_hours if operating_hours else None


def format_table(result: BacktestResult) -> str:
    """The per-kind table, for the terminal."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    def num(value: float | None, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    def chance(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = [
        f"backtest {result.start:%Y-%m-%d %H:%M} → {result.end:%Y-%m-%d %H:%M} UTC, "
        f"{result.passes:,} scoring passes (step {result.step}), {result.trainings} trainings, "
        f"{result.operating_hours:,} operating hours, {result.csms} CSM(s), "
        f"{result.seconds:.0f} s",
        f"{'kind':<20} {'alerts':>6} {'pending':>7} {'precision':>9} {'chance':>7} "
        f"{'decided':>7} {'chance':>7} {'recall':>11} {'foreseen':>8} {'lead h':>7} "
        f"{'p25–p75':>11} {'/CSM/wk':>7} {'false/1kh':>9} {'refuted/1kh':>11}",
    ]
    for k in result.kinds:
        recall = "-" if k.events is None else f"{k.caught}/{k.events} {pct(k.recall)}"
        spread = (
            "-"
            if k.lead_p25_hours is None or k.lead_p75_hours is None
            else f"{k.lead_p25_hours:.0f}–{k.lead_p75_hours:.0f}"
        )
        pending = "-" if k.pending_alerts is None else str(k.pending_alerts)
        lines.append(
            f"{k.kind:<20} {k.alerts:>6} {pending:>7} {pct(k.precision):>9} "
            f"{chance(k.chance_precision):>7} {pct(k.precision_decided):>7} "
            f"{chance(k.chance_precision_decided):>7} {recall:>11} "
            f"{pct(k.recall_foreseeable):>8} {num(k.median_lead_hours, '.0f'):>7} {spread:>11} "
            f"{k.alerts_per_csm_week:>7.2f} {num(k.false_per_1000_hours, '.2f'):>9} "
            f"{num(k.refuted_per_1000_hours, '.2f'):>11}"
        )
    lines.append(CHANCE_NOTE)
    lines.append(FORESEEN_NOTE)
    end = "-" if result.data_end is None else f"{result.data_end:%Y-%m-%d %H:%M} UTC"
    lines.append(PENDING_NOTE.format(data_end=end))
    lines.append("promises (each kind is scored against this event and horizon only):")
    lines += [f"  {k.kind}: {k.promise}" for k in result.kinds]
    events = ", ".join(f"{n} {kind}" for kind, n in result.truth_events.items()) or "none"
    lines.append(f"truth in the period: {events}")
    return "\n".join(lines)
