"""The demo's signals story: the last months of the fleet replayed through the real alert
lifecycle, what each CSM received, and the backtest table.

The replay scores the fleet as of every day at 06:00 UTC of the last ``months`` months (each
pass sees only rollups and events before it; the models are retrained every 30 days on what
was known then, where the scheduler retrains nightly) and applies the findings to the
``alerts`` table exactly as the hourly scheduler job does, so the alerts, their history and
their queued emails and webhooks are the ones the CSMs would have received. Like the
scheduler it also records each pass's account health (``account_health``) and stores every
model it trains (``signal_models``, as the nightly retrain does), so that ``basewatch signals
health`` and a later ``--refresh`` find them after the demo. The demo's CSMs
act on the data: each alert is acknowledged by its CSM at the next pass after it was raised
(an assumption of the demo, stated in its output) - which is what the NRR attribution then
reads.

Delivery (``signals.routing``): the replay routes each new alert through the same gate as the
scheduler, with the precision stored in the database when it starts - on a new database none,
so every kind is unmeasured and its alerts wait for the weekly digest, as on a fresh
installation. The backtest that follows measures each kind and stores its precision (as
``basewatch signals backtest`` does), so the scheduler's later passes send the kinds that
proved themselves at once; the story then says what the gate with those measurements would
have sent over the replayed period (in-sample: the measurements come from that period).

Progress: the replay first says how many passes it will make, then prints a line after a pass
when none was printed for 5 s (the pass, the time so far and an estimate of the time left
from the average pass), and a heartbeat thread prints the current step whenever 10 s passed
without a line (a model training or the rollup refresh can take longer than that).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import TupleRow

from basewatch.heartbeat import Heartbeat, duration
from core.db import connect
from core.registry import account_owners, csm_names
from core.settings import Settings
from simulator.truth import load_truth

if TYPE_CHECKING:
    from signals.backtest import BacktestResult

DAY = dt.timedelta(days=1)
RETRAIN = dt.timedelta(days=30)  # the scheduler retrains nightly; monthly keeps the demo short
PASS_LINE_S = 5.0  # a line after a pass when none was printed for this long


class Estimate:
    """The replay's progress and time left: the average plain pass and the average pass with
    a training, times the passes and the trainings still to come (models are retrained every
    ``retrain_every``, so which passes train is known in advance)."""

    def __init__(
        self,
        start: dt.datetime,
        total: int,
        step: dt.timedelta = DAY,
        retrain_every: dt.timedelta = RETRAIN,
    ) -> None:
        self.start, self.total, self.step, self.retrain_every = start, total, step, retrain_every
        self.done = 0
        self.trained_at: dt.datetime | None = None
        self._plain: list[float] = []
        self._training: list[float] = []
        self.started = self.last = time.monotonic()

    def passed(self, t: dt.datetime, seconds: float, *, retrained: bool) -> None:
        """The pass at ``t`` took ``seconds`` (its training included when ``retrained``)."""
        self.done += 1
        (self._training if retrained else self._plain).append(seconds)
        if retrained:
            self.trained_at = t
        self.last = time.monotonic()

    def seconds_left(self) -> float | None:
        """Estimated seconds for the passes to come (None before the first pass)."""
        if not self.done:
            return None
        measured = self._plain or self._training
        plain = sum(measured) / len(measured)
        training = sum(self._training) / len(self._training) if self._training else plain
        trainings, last = 0, self.trained_at
        for k in range(self.done, self.total):
            t = self.start + k * self.step
            if last is None or t - last >= self.retrain_every:
                trainings, last = trainings + 1, t
        return plain * (self.total - self.done - trainings) + training * trainings

    def line(self, *, finished: bool) -> str:
        """``demo: signals replay pass 12/61 (2025-11-13) done, 38 s so far, about 2 min 35 s
        left``: the last pass (``finished``) or the one under way."""
        now = time.monotonic()
        number = self.done if finished else self.done + 1
        t = self.start + (number - 1) * self.step
        left = self.seconds_left()
        estimate = (
            f"about {duration(max(0.0, left - (now - self.last)))} left"
            if left is not None
            else "estimating the time left after the first pass"
        )
        return (
            f"demo: signals replay pass {number}/{self.total} ({t:%Y-%m-%d}) "
            f"{'done' if finished else 'under way'}, {duration(now - self.started)} so far, "
            f"{estimate}"
        )


def signals_story(
    url: str, settings: Settings, end: dt.datetime, months: int, progress: Any
) -> dict[str, Any]:
    """Replay ``months`` months before ``end`` and tell what it raised (see the docstring)."""
    from basewatch.wiring import signal_prices
    from signals import health
    from signals.alerts import apply_findings
    from signals.backtest import delivery_load_of, format_table, replay
    from signals.model_store import save_model
    from signals.rollups import refresh_rollups
    from signals.routing import load_routing
    from signals.scoring import KINDS_SCORED

    started = time.monotonic()
    prices = signal_prices(settings)
    quiet = logging.getLogger("signals")
    if quiet.getEffectiveLevel() > logging.DEBUG:
        quiet.setLevel(logging.WARNING)  # one line per pass and model would drown the story
    with connect(url, autocommit=True) as conn, Heartbeat(progress) as beat:
        beat.status(lambda: f"demo: rollups: refreshing, {duration(time.monotonic() - started)}")
        refreshed = refresh_rollups(conn)
        beat.say(f"demo: rollups: {refreshed.summary()}")
        start = (end - dt.timedelta(days=round(30.44 * months))).replace(
            hour=6, minute=0, second=0, microsecond=0
        )
        total = math.ceil((end - start) / DAY)
        owners = account_owners(conn)
        to_acknowledge: tuple[int, ...] = ()
        trainings = acknowledged = 0
        saved: dict[str, int] = defaultdict(int)
        routing = load_routing(conn, settings.alert_min_precision, settings.alert_weekly_budget)

        def keep(t: dt.datetime, models: dict[str, object | None]) -> None:
            for name, model in models.items():
                if model is not None:  # None: too little history, the documented fallback
                    save_model(conn, name, t, model, getattr(model, "summary", {}))
                    saved[name] += 1

        beat.say(
            f"demo: signals replay: {total} daily scoring passes from {start:%Y-%m-%d} to "
            f"{start + (total - 1) * DAY:%Y-%m-%d} (06:00 UTC), each seeing only the past, the "
            f"models retrained every {RETRAIN.days} days"
        )
        estimate = Estimate(start, total)
        beat.status(lambda: estimate.line(finished=False))
        pass_started = time.monotonic()
        for t, findings, retrained in replay(
            conn, start, end, step=DAY, retrain_every=RETRAIN, prices=prices, on_trained=keep
        ):
            trainings += retrained
            health.record_latest(conn, t)
            acknowledged += _acknowledge(conn, to_acknowledge, owners, t)
            result = apply_findings(
                conn,
                findings,
                now=t,
                kinds_scored=KINDS_SCORED,
                clear_after=dt.timedelta(hours=settings.alert_clear_hours),
                cooldown=dt.timedelta(days=settings.alert_cooldown_days),
                currency=prices.currency,
                routing=routing,
                public_url=settings.api_public_url,
            )
            to_acknowledge = result.opened
            estimate.passed(t, time.monotonic() - pass_started, retrained=retrained)
            pass_started = time.monotonic()
            if beat.quiet_for() >= PASS_LINE_S or estimate.done == total:
                beat.say(estimate.line(finished=True))
        evaluating = time.monotonic()
        beat.status(
            lambda: (
                "demo: scoring the replayed alerts against what happened, "
                f"{duration(time.monotonic() - evaluating)} so far"
            )
        )
        table = _measure(conn, settings, start, end, estimate.done, trainings, started)
        raised = table.alerts
        load = delivery_load_of(table, settings.alert_min_precision, settings.alert_weekly_budget)
        queued, held, names = _queued(conn), _held(conn), csm_names(conn)
    document = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "passes": estimate.done,
        "alerts_raised": len(raised),
        "acknowledged_by_csms": acknowledged,
        "models_saved": dict(sorted(saved.items())),
        "messages_queued": queued,
        "held_for_digest": held,
        "backtest": table.as_dict() | {"alerts": None, "delivery": load.as_dict()},
        "per_csm": _per_csm(raised, names),
        "seconds": round(time.monotonic() - started, 1),
    }
    document["text"] = _render(document, f"{format_table(table)}\n{load.line()}", prices.currency)
    return document


def _per_csm(raised: list[Any], names: dict[str, str]) -> dict[str, Any]:
    """Each CSM's alerts: how many, by kind, and the three of most expected value."""
    per_csm: dict[str, list[Any]] = defaultdict(list)
    for alert in raised:
        per_csm[alert.owner or "(no CSM)"].append(alert)
    return {
        csm: {
            "name": names.get(csm, csm),
            "alerts": len(alerts),
            "by_kind": _count(a.kind for a in alerts),
            "top": [a.as_dict() for a in _top(alerts, 3)],
        }
        for csm, alerts in sorted(per_csm.items())
    }


def _measure(
    conn: psycopg.Connection[TupleRow],
    settings: Settings,
    start: dt.datetime,
    end: dt.datetime,
    passes: int,
    trainings: int,
    started: float,
) -> BacktestResult:
    """Score the replayed alerts against what happened, and store each kind's precision (the
    delivery gate of the scheduler's later passes reads it)."""
    from signals.backtest import evaluate, stored_alerts
    from signals.routing import record_precision
    from signals.scoring import KINDS_SCORED

    table = evaluate(
        conn,
        stored_alerts(conn, start, end),
        start,
        end,
        step=DAY,
        passes=passes,
        trainings=trainings,
        kinds=sorted(KINDS_SCORED),
        seconds=time.monotonic() - started,
        labelled=load_truth(conn),
    )
    record_precision(conn, table, end)
    return table


def _queued(conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
    from signals.delivery import queued_per_channel

    return queued_per_channel(conn)


def _held(conn: psycopg.Connection[TupleRow]) -> int:
    """Alerts the replay held for the digest."""
    from signals.alerts import delivery_counts

    return delivery_counts(conn).get("digest", 0)


def _acknowledge(
    conn: psycopg.Connection[TupleRow],
    alert_ids: tuple[int, ...],
    owners: dict[str, str | None],
    t: dt.datetime,
) -> int:
    """The demo's CSMs acknowledge the alerts opened by the previous pass; returns how many."""
    from signals.alerts import acknowledge, open_alert_account

    done = 0
    for alert_id in alert_ids:
        account = open_alert_account(conn, alert_id)
        owner = owners.get(account) if account is not None else None
        if owner:
            acknowledge(conn, alert_id, owner, now=t)
            done += 1
    return done


def _count(kinds: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for kind in kinds:
        counts[kind] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _top(alerts: list[Any], n: int) -> list[Any]:
    return sorted(alerts, key=lambda a: (-a.score * float(a.value), a.raised_at))[:n]


def _render(document: dict[str, Any], table: str, currency: str) -> str:
    from signals.catalogue import money

    queued = ", ".join(f"{n:,} {c}" for c, n in document["messages_queued"].items()) or "none"
    lines = [
        f"Signals: the fleet replayed day by day from {document['from'][:10]} to "
        f"{document['to'][:10]} ({document['passes']} scoring passes, each seeing only the "
        f"past) raised {document['alerts_raised']:,} alerts; messages queued: {queued}; "
        f"held for the weekly digest: {document['held_for_digest']:,} (no kind was measured "
        "when the replay started; the backtest below measures them). The "
        f"demo's CSMs acknowledge each alert the day after it arrives "
        f"({document['acknowledged_by_csms']:,} acknowledged).",
    ]
    saved = ", ".join(f"{name} {n}" for name, n in document["models_saved"].items())
    lines.append(
        f"  Models trained by the replay and stored (versions): {saved or 'none'}; the "
        "account health of every pass is recorded too (basewatch signals health)."
    )
    for csm, entry in document["per_csm"].items():
        kinds = ", ".join(f"{n} {k}" for k, n in entry["by_kind"].items())
        lines.append(f"  {entry['name']} ({csm}): {entry['alerts']} alerts - {kinds}")
        for alert in entry["top"]:
            reason = alert["reasons"][0] if alert["reasons"] else ""
            lines.append(
                f"    {alert['raised_at'][:10]} {alert['kind']} {alert['account_id']}"
                f"{' ' + alert['subject'] if alert['subject'] else ''}: score "
                f"{alert['score']:.2f}, {money(alert['value'], currency)}/month - {reason}"
            )
    lines += ["", table]
    return "\n".join(lines)
