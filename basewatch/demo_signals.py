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
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from typing import Any

from core.db import connect
from core.settings import Settings

DAY = dt.timedelta(days=1)
RETRAIN = dt.timedelta(days=30)  # the scheduler retrains nightly; monthly keeps the demo short


def signals_story(
    url: str, settings: Settings, end: dt.datetime, months: int, progress: Any
) -> dict[str, Any]:
    """Replay ``months`` months before ``end`` and tell what it raised (see the docstring)."""
    from basewatch.wiring import signal_prices
    from signals import health
    from signals.alerts import acknowledge, apply_findings
    from signals.backtest import evaluate, format_table, replay, stored_alerts
    from signals.models import save_model
    from signals.rollups import refresh_rollups
    from signals.scoring import KINDS_SCORED

    started = time.monotonic()
    prices = signal_prices(settings)
    quiet = logging.getLogger("signals")
    if quiet.getEffectiveLevel() > logging.DEBUG:
        quiet.setLevel(logging.WARNING)  # one line per pass and model would drown the story
    with connect(url, autocommit=True) as conn:
        refreshed = refresh_rollups(conn)
        progress(f"demo: rollups: {refreshed.summary()}")
        start = (end - dt.timedelta(days=round(30.44 * months))).replace(
            hour=6, minute=0, second=0, microsecond=0
        )
        owners: dict[str, str | None] = dict(
            conn.execute("SELECT account_id, csm_id FROM accounts").fetchall()
        )
        to_acknowledge: tuple[int, ...] = ()
        passes = trainings = acknowledged = 0
        saved: dict[str, int] = defaultdict(int)

        def keep(t: dt.datetime, models: dict[str, object | None]) -> None:
            for name, model in models.items():
                if model is not None:  # None: too little history, the documented fallback
                    save_model(conn, name, t, model, getattr(model, "summary", {}))
                    saved[name] += 1

        last = time.monotonic()
        for t, findings, retrained in replay(
            conn, start, end, step=DAY, retrain_every=RETRAIN, prices=prices, on_trained=keep
        ):
            passes += 1
            trainings += retrained
            health.record_latest(conn, t)
            for alert_id in to_acknowledge:
                row = conn.execute(
                    "SELECT account_id FROM alerts WHERE alert_id = %s AND status = 'open'",
                    (alert_id,),
                ).fetchone()
                if row is not None and owners.get(row[0]):
                    acknowledge(conn, alert_id, str(owners[row[0]]), now=t)
                    acknowledged += 1
            result = apply_findings(
                conn,
                findings,
                now=t,
                kinds_scored=KINDS_SCORED,
                clear_after=dt.timedelta(hours=settings.alert_clear_hours),
                cooldown=dt.timedelta(days=settings.alert_cooldown_days),
            )
            to_acknowledge = result.opened
            if time.monotonic() - last > 5:
                last = time.monotonic()
                progress(f"demo: signals replay at {t:%Y-%m-%d}, pass {passes}")
        raised = stored_alerts(conn, start, end)
        table = evaluate(
            conn,
            raised,
            start,
            end,
            step=DAY,
            passes=passes,
            trainings=trainings,
            kinds=sorted(KINDS_SCORED),
            seconds=time.monotonic() - started,
        )
        queued = conn.execute(
            "SELECT channel, count(*) FROM outbox WHERE alert_id IS NOT NULL GROUP BY channel"
        ).fetchall()
        names: dict[str, str] = dict(conn.execute("SELECT csm_id, name FROM csms").fetchall())
    per_csm: dict[str, list[Any]] = defaultdict(list)
    for alert in raised:
        per_csm[alert.owner or "(no CSM)"].append(alert)
    document = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "passes": passes,
        "alerts_raised": len(raised),
        "acknowledged_by_csms": acknowledged,
        "models_saved": dict(sorted(saved.items())),
        "messages_queued": {str(c): int(n) for c, n in queued},
        "backtest": table.as_dict() | {"alerts": None},
        "per_csm": {
            csm: {
                "name": names.get(csm, csm),
                "alerts": len(alerts),
                "by_kind": _count(a.kind for a in alerts),
                "top": [a.as_dict() for a in _top(alerts, 3)],
            }
            for csm, alerts in sorted(per_csm.items())
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    document["text"] = _render(document, format_table(table))
    return document


def _count(kinds: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for kind in kinds:
        counts[kind] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _top(alerts: list[Any], n: int) -> list[Any]:
    return sorted(alerts, key=lambda a: (-a.score * float(a.value), a.raised_at))[:n]


def _render(document: dict[str, Any], table: str) -> str:
    from signals.catalogue import money

    queued = ", ".join(f"{n:,} {c}" for c, n in document["messages_queued"].items()) or "none"
    lines = [
        f"Signals: the fleet replayed day by day from {document['from'][:10]} to "
        f"{document['to'][:10]} ({document['passes']} scoring passes, each seeing only the "
        f"past) raised {document['alerts_raised']:,} alerts; messages queued: {queued}. The "
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
                f"{alert['score']:.2f}, {money(alert['value'])}/month - {reason}"
            )
    lines += ["", table]
    return "\n".join(lines)
