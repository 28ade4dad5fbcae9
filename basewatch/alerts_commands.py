"""``basewatch alerts list|ack|snooze|resolve|feedback|deliver``.

:func:`register` adds them (``basewatch.commands``). ``deliver`` runs the scheduler's
delivery job once (``basewatch.jobs.deliver_alerts``, the settings read by
``basewatch.wiring``). Handlers take ``(settings, args)``; an unknown alert id or a change the
alert's state does not allow raises a :class:`~core.errors.BasewatchError` (``NotFound``,
``AlertStateError``), which the CLI turns into one line on stderr and exit code 1.

Every change (``ack``, ``snooze``, ``resolve``, ``feedback``) writes an ``audit_log`` row in
its transaction: source ``cli``, actor the ``--by`` name or the login name (the CLI runs with
the database's credentials, so it is trusted like an admin; ``--by`` records on whose behalf),
and the login name in the details.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from typing import Any

from basewatch.argtypes import positive
from basewatch.commands import Commands
from basewatch.currency import reporting_currency
from basewatch.output import emit
from core.settings import Settings

# -- handlers ---------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def _actor(args: argparse.Namespace) -> str:
    return str(args.by) if args.by else _login()


def _audit(conn: Any, action: str, alert: dict[str, Any], args: argparse.Namespace) -> None:
    """The audit row of a CLI alert action (actor: ``--by`` or the login name)."""
    from basewatch.users import Actor, record

    details = {"status": alert["status"], "login": _login()}
    record(
        conn,
        Actor(None, _actor(args)),
        f"alert.{action}",
        f"alert:{alert['alert_id']}",
        "cli",
        details,
    )


def _line(alert: dict[str, Any], currency: str) -> str:
    from signals.catalogue import money

    where = alert["account_id"] + (f"/{alert['subject']}" if alert["subject"] else "")
    state = alert["status"] + (" (snoozed)" if alert["snoozed"] else "")
    overdue = alert["status"] in ("open", "acknowledged") and (
        dt.datetime.fromisoformat(alert["due_at"]) < _now()
    )
    return (
        f"#{alert['alert_id']} P{alert['priority']} {state:<14} {alert['kind']:<20} {where}  "
        f"EV {money(alert['expected_value'], currency)}/month  due {alert['due_at'][:10]}"
        f"{' (overdue)' if overdue else ''}  owner {alert['owner_csm_id'] or '-'}"
        f"  delivery {alert['delivery']}"
    )


def _describe(alert: dict[str, Any], currency: str) -> str:
    lines = [_line(alert, currency)]
    lines += [f"    {r}" for r in alert["reasons"]]
    if alert["delivery_reason"]:
        lines.append(f"    delivery: {alert['delivery_reason']}")
    return "\n".join(lines)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from signals.alerts import count_alerts, list_alerts

    currency = reporting_currency(settings)  # the currency the amounts are shown in
    status = None if args.status == "all" else args.status
    filters = {"status": status, "owner": args.owner, "kind": args.kind, "account": args.account}
    with open_database(settings) as conn:
        rows = list_alerts(conn, **filters, limit=args.limit)
        total = len(rows) if len(rows) < args.limit else count_alerts(conn, **filters)
    if len(rows) < total and not args.json:
        print(
            f"showing {len(rows)} of {total} alerts (the most urgent first); --limit N shows more",
            file=sys.stderr,
        )
    document = {"alerts": rows, "total": total, "limit": args.limit}
    emit(args, document, lambda: "\n".join(_describe(r, currency) for r in rows) or "no alerts")
    return 0


def _changed(settings: Settings, args: argparse.Namespace, alert: dict[str, Any], what: str) -> int:
    currency = reporting_currency(settings)
    emit(args, alert, lambda: f"alert #{alert['alert_id']} {what}\n{_describe(alert, currency)}")
    return 0


def cmd_ack(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from signals.alerts import acknowledge

    with open_database(settings) as conn:
        alert = acknowledge(conn, args.id, _actor(args))
        _audit(conn, "ack", alert, args)
    return _changed(settings, args, alert, f"acknowledged by {alert['acknowledged_by']}")


def cmd_snooze(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from signals.alerts import snooze

    now = _now()
    until: dt.datetime = args.until or now + dt.timedelta(hours=args.hours)
    with open_database(settings) as conn:
        alert = snooze(conn, args.id, until, args.reason, _actor(args), now=now)
        _audit(conn, "snooze", alert, args)
    return _changed(settings, args, alert, f"snoozed until {alert['snoozed_until']}")


def cmd_resolve(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from signals.alerts import resolve

    with open_database(settings) as conn:
        alert = resolve(conn, args.id, args.outcome, _actor(args), args.note or "")
        _audit(conn, "resolve", alert, args)
    return _changed(settings, args, alert, f"resolved as {alert['status']} by {alert['closed_by']}")


def cmd_feedback(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.wiring import open_database
    from signals.alerts import feedback

    with open_database(settings) as conn:
        alert = feedback(conn, args.id, args.useful, _actor(args))
        _audit(conn, "feedback", alert, args)
    return _changed(settings, args, alert, f"marked {alert['feedback'].replace('_', ' ')}")


def cmd_deliver(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.jobs import deliver_alerts
    from basewatch.wiring import delivery_transports, email_max_age, open_database
    from signals.delivery import requeue_given_up

    now = _now()
    with open_database(settings) as conn:
        requeued = (
            requeue_given_up(conn, now=now, email_max_age=email_max_age(settings))
            if args.retry_given_up
            else 0
        )
        result = deliver_alerts(conn, settings, now, delivery_transports(settings))
    document = {**result.document(), "requeued": requeued}
    emit(
        args,
        document,
        lambda: (
            f"sent {result.sent}, failed {result.failed} (will retry), gave up {result.gave_up},"
            f" deferred {result.deferred} (snoozed), waiting {result.waiting} (no transport),"
            f" postponed {result.postponed} (destination not answering)"
            + (
                f", expired {result.expired} (alert emails queued more than "
                f"{settings.alert_email_max_age_hours} h ago, given up unsent)"
                if result.expired
                else ""
            )
            + (f", requeued {requeued}" if requeued else "")
        ),
    )
    return 0


# -- parser -----------------------------------------------------------------------------------


def _alert_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an alert number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"alert numbers start at 1, got {value}")
    return value


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of hours, got {text!r}") from None
    if not 0 < value <= 24 * 366:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most a year, got {value}")
    return value


def _until(text: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected YYYY-MM-DD or an ISO time, got {text!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _target(command: argparse.ArgumentParser) -> None:
    command.add_argument("id", type=_alert_id, metavar="ID", help="alert number")
    command.add_argument("--by", help="who makes the change (default: the login name)")


def register(commands: Commands) -> None:
    """Add ``alerts`` and its subcommands."""
    from signals.alerts import OUTCOMES, STATUS_FILTERS

    alerts = commands.group(
        "alerts", "alerts for CSMs: list, acknowledge, snooze, resolve, deliver"
    )
    lst = alerts.add("list", cmd_list, "list alerts, active and most urgent first")
    lst.add_argument(
        "--status",
        choices=("all", *STATUS_FILTERS),
        default="active",
        help="active (open or acknowledged, the default), closed, all, or one status",
    )
    lst.add_argument("--owner", metavar="CSM", help="only this CSM's alerts")
    lst.add_argument("--kind", help="only this signal kind")
    lst.add_argument("--account", help="only this account's alerts")
    lst.add_argument(
        "--limit",
        type=positive,
        default=100,
        metavar="N",
        help="list at most N alerts, the most urgent first (default 100; when more match, "
        "the text output says 'showing N of M' on stderr and --json gives the count as "
        "'total')",
    )

    _target(alerts.add("ack", cmd_ack, "acknowledge an open alert"))

    snz = alerts.add("snooze", cmd_snooze, "hold an alert's messages until a later time")
    _target(snz)
    when = snz.add_mutually_exclusive_group(required=True)
    when.add_argument("--until", type=_until, help="YYYY-MM-DD (00:00 UTC) or an ISO time")
    when.add_argument("--hours", type=_hours, help="for this many hours from now")
    snz.add_argument("--reason", required=True, help="why (kept with the alert)")

    res = alerts.add("resolve", cmd_resolve, "close an alert as won, lost or dismissed")
    _target(res)
    res.add_argument("--outcome", choices=OUTCOMES, required=True)
    res.add_argument("--note", help="what happened (kept with the alert)")

    fb = alerts.add("feedback", cmd_feedback, "say whether an alert was useful")
    _target(fb)
    verdict = fb.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--useful", dest="useful", action="store_true")
    verdict.add_argument("--not-useful", dest="useful", action="store_false")

    dlv = alerts.add("deliver", cmd_deliver, "send the alert messages that are due, once")
    dlv.add_argument(
        "--retry-given-up",
        action="store_true",
        help="first put messages that were given up back in the queue",
    )
