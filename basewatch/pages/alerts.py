"""The alert pages: the CSMs with their alert counts (``/``), a CSM's alerts (``/csm/<id>``:
new first, then by expected value, filtered by family, kind, account and status; overdue due
dates marked), the forms that act on one alert and the bulk form that acknowledges or resolves
the ticked ones. Every change goes through :func:`basewatch.web.change_alert`'s rules: the
signed-in user is the actor, one audit row per alert, source ``page``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from basewatch.pages.render import page, quoted, url
from basewatch.users import Actor, record
from basewatch.web import (
    Conn,
    HttpError,
    Principal,
    Request,
    Response,
    alert_id_of,
    change_alert,
    form_values,
    principal_of,
    redirect,
)
from core.errors import NotFound

if TYPE_CHECKING:
    from basewatch.api.context import Api

PAGE_ALERTS = 500  # alerts shown on one CSM page
SNOOZE_DAYS = (1, 3, 7, 14, 30)  # the choices of the snooze form
DEFAULT_SNOOZE_DAYS = 7
FAMILIES = ("risk", "expansion", "service")
MAX_BULK = PAGE_ALERTS
_DONE = {
    "ack": "acknowledged",
    "snooze": "snoozed",
    "resolve": "resolved",
    "feedback": "feedback recorded",
}


def page_index(api: Api, request: Request) -> Response:
    from signals.alerts import active_per_csm, unowned_active

    request.single(())
    principal = principal_of(request)
    if principal.scope is not None:  # a csm has one page: theirs
        return redirect("/csm/" + quoted(principal.scope))
    with api.database() as conn:
        csms = active_per_csm(conn)
        unowned = unowned_active(conn)
    return page("index.html", principal, csms=csms, unowned=unowned)


def csm_in_scope(conn: Conn, principal: Principal, csm_id: str) -> str:
    """The CSM's name; NotFound for an unknown CSM and for another csm's (no leak)."""
    from core.registry import csm_name

    if principal.scope not in (None, csm_id):
        raise NotFound(f"no CSM {csm_id!r}")
    name = csm_name(conn, csm_id)
    if name is None:
        raise NotFound(f"no CSM {csm_id!r}")
    return name or csm_id


def page_csm(api: Api, request: Request) -> Response:
    from core.registry import accounts_of
    from signals.alerts import OUTCOMES, STATUS_FILTERS, list_alerts
    from signals.kinds import SignalKind

    query = request.single(
        ("done", "alert", "n", "skipped", "family", "kind", "account", "status", "offset")
    )
    principal = principal_of(request)
    csm_id = request.params[0]
    filters = {
        "family": query.get("family", ""),
        "kind": query.get("kind", ""),
        "account": query.get("account", ""),
        "status": query.get("status") or "active",
    }
    if filters["family"] not in ("", *FAMILIES):
        raise HttpError(400, f"unknown family {filters['family']!r} (use {', '.join(FAMILIES)})")
    statuses = ("active", "open", "acknowledged", "closed", "all", *STATUS_FILTERS[4:])
    if filters["status"] not in statuses:
        raise HttpError(400, f"unknown status {filters['status']!r} (use {', '.join(statuses)})")
    offset_text = query.get("offset") or "0"
    if not offset_text.isdigit() or int(offset_text) >= 2**31:
        raise HttpError(400, "offset must be a whole number of alerts to skip")
    offset = int(offset_text)
    with api.database() as conn:
        name = csm_in_scope(conn, principal, csm_id)
        accounts = accounts_of(conn, csm_id)
        alerts = list_alerts(
            conn,
            status=None if filters["status"] == "all" else filters["status"],
            owner=csm_id,
            kind=filters["kind"] or None,
            account=filters["account"] or None,
            family=filters["family"] or None,
            limit=PAGE_ALERTS + 1,
            offset=offset,
        )
    truncated = len(alerts) > PAGE_ALERTS
    alerts = sorted(alerts[:PAGE_ALERTS], key=_inbox_order)
    now = dt.datetime.now(dt.UTC)
    for alert in alerts:
        alert["overdue"] = alert["status"] in ACTIVE and _time(alert["due_at"]) < now
    return page(
        "csm.html",
        principal,
        csm_id=csm_id,
        name=name,
        alerts=alerts,
        truncated=truncated,
        offset=offset,
        page_size=PAGE_ALERTS,
        accounts=accounts,
        filters=filters,
        filtered=any(filters[k] for k in ("family", "kind", "account")),
        families=FAMILIES,
        kinds=sorted(k.value for k in SignalKind),
        statuses=statuses,
        outcomes=OUTCOMES,
        snooze_days=SNOOZE_DAYS,
        bulk_statuses=ACTIVE,
        selectable=any(a["status"] in ACTIVE for a in alerts),
        currency=api.config.reporting_currency,
        notice=_notice(query),
    )


ACTIVE = ("open", "acknowledged")


def _inbox_order(alert: dict[str, Any]) -> tuple[Any, ...]:
    """New (open) first, then the largest expected value, then the oldest."""
    return (alert["status"] != "open", -Decimal(alert["expected_value"]), alert["alert_id"])


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _notice(query: dict[str, str]) -> str:
    done = query.get("done", "")
    if done in _DONE and query.get("alert", "").isdigit():
        return f"Alert #{query['alert']} {_DONE[done]}."
    if done.startswith("bulk-") and done[5:] in _DONE and query.get("n", "").isdigit():
        text = f"{query['n']} alert(s) {_DONE[done[5:]]}."
        skipped = query.get("skipped", "0")
        if skipped.isdigit() and int(skipped):
            text += f" {skipped} skipped: their status no longer allowed it."
        return text
    return ""


def _page_actor(principal: Principal) -> Actor:
    if principal.user is None:
        raise HttpError(403, "the service token cannot act on the pages: sign in as a user")
    return Actor(principal.user.user_id, principal.user.username)


def _snooze_days(fields: dict[str, str]) -> int:
    text = fields.get("days") or str(DEFAULT_SNOOZE_DAYS)
    if not text.isdigit() or int(text) not in SNOOZE_DAYS:
        raise HttpError(400, f"snooze for one of {', '.join(map(str, SNOOZE_DAYS))} days")
    return int(text)


def post_page_action(api: Api, request: Request) -> Response:
    from signals.alerts import OUTCOMES, acknowledge, feedback, resolve, snooze

    request.single(())
    principal = principal_of(request)
    actor = _page_actor(principal)
    csm_id, alert_id, action = request.params[0], alert_id_of(request.params[1]), request.params[2]
    if principal.scope not in (None, csm_id):
        raise NotFound(f"no CSM {csm_id!r}")
    fields = request.form()
    now = dt.datetime.now(dt.UTC)
    change: Callable[[Conn], dict[str, Any]]
    details: dict[str, Any] = {"page": csm_id}
    if action == "ack":
        change = lambda c: acknowledge(c, alert_id, actor.name, now=now)  # noqa: E731
    elif action == "snooze":
        reason = fields.get("reason", "")
        until = now + dt.timedelta(days=_snooze_days(fields))
        details.update(reason=reason, until=until.isoformat())
        change = lambda c: snooze(c, alert_id, until, reason, actor.name, now=now)  # noqa: E731
    elif action == "resolve":
        outcome, note = fields.get("outcome", ""), fields.get("note", "")
        if outcome not in OUTCOMES:
            raise HttpError(400, f"outcome must be one of {', '.join(OUTCOMES)}")
        details.update(outcome=outcome, note=note)
        change = lambda c: resolve(c, alert_id, outcome, actor.name, note, now=now)  # noqa: E731
    else:
        verdict = fields.get("useful", "")
        if verdict not in ("true", "false"):
            raise HttpError(400, "useful must be true or false")
        details["useful"] = verdict == "true"
        change = lambda c: feedback(c, alert_id, verdict == "true", actor.name, now=now)  # noqa: E731

    def on_page(conn: Conn) -> dict[str, Any]:
        from signals.alerts import get_alert

        if get_alert(conn, alert_id)["owner_csm_id"] != csm_id:
            raise NotFound(f"alert #{alert_id} is not one of {csm_id}'s alerts")
        return change(conn)

    change_alert(api, request, actor, action, alert_id, on_page, details, source="page")
    location = url("/csm/" + quoted(csm_id), done=action, alert=str(alert_id))
    return redirect(f"{location}#alert-{alert_id}")


def post_bulk_action(api: Api, request: Request) -> Response:
    """Acknowledge or resolve every ticked alert (form field ``alert``, repeated). Each alert
    changes in its own savepoint with its own audit row; one whose status no longer allows
    the change is skipped and counted; one that is not this CSM's fails the whole form (404,
    nothing changed), as on the single-alert forms."""
    from signals.alerts import OUTCOMES, AlertStateError, acknowledge, get_alert, resolve

    request.single(())
    principal = principal_of(request)
    actor = _page_actor(principal)
    csm_id = request.params[0]
    if principal.scope not in (None, csm_id):
        raise NotFound(f"no CSM {csm_id!r}")
    fields = request.form()
    action = fields.get("action", "")
    if action not in ("ack", "resolve"):
        raise HttpError(400, "action must be ack or resolve")
    outcome, note = fields.get("outcome", ""), fields.get("note", "")
    if action == "resolve" and outcome not in OUTCOMES:
        raise HttpError(400, f"outcome must be one of {', '.join(OUTCOMES)}")
    ticked = form_values(request, "alert")
    if not ticked:
        raise HttpError(400, "tick at least one alert")
    if len(ticked) > MAX_BULK or not all(t.isdigit() for t in ticked):
        raise HttpError(400, f"alert must be up to {MAX_BULK} alert numbers")
    ids = sorted({alert_id_of(t) for t in ticked})
    now = dt.datetime.now(dt.UTC)
    details: dict[str, Any] = {"page": csm_id, "bulk": len(ids)}
    if action == "resolve":
        details.update(outcome=outcome, note=note)
    done = skipped = 0
    with api.database() as conn, conn.transaction():
        for alert_id in ids:
            if get_alert(conn, alert_id)["owner_csm_id"] != csm_id:
                raise NotFound(f"alert #{alert_id} is not one of {csm_id}'s alerts")
            try:
                with conn.transaction():
                    if action == "ack":
                        alert = acknowledge(conn, alert_id, actor.name, now=now)
                    else:
                        alert = resolve(conn, alert_id, outcome, actor.name, note, now=now)
                    record(
                        conn,
                        actor,
                        f"alert.{action}",
                        f"alert:{alert_id}",
                        "page",
                        {**details, "status": alert["status"], "via": principal.via},
                    )
            except AlertStateError:
                skipped += 1
                continue
            done += 1
    location = url(
        "/csm/" + quoted(csm_id), done=f"bulk-{action}", n=str(done), skipped=str(skipped)
    )
    return redirect(location)
