"""The JSON routes: probes, metrics, alerts and their lifecycle, account health, NRR.

Every answer is a model of ``basewatch.api.models`` (so ``/openapi.json`` describes it and
it is checked before it leaves); lists take ``limit`` (1 to :data:`MAX_LIST_LIMIT`) and
``offset`` and filter by the fields a CSM filters by. Routes are plain functions, so FastAPI
runs them in its worker threads (``BASEWATCH_API_THREADS`` of them) with a pooled database
connection each (``basewatch.api.context``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg_pool import PoolTimeout, TooManyRequests
from starlette.responses import Response

from basewatch.api.auth import Exchange, Gate
from basewatch.api.config import HEALTHZ_WAIT_S, MAX_LIST_LIMIT, MAX_SNOOZE_HOURS, RETRY_AFTER_S
from basewatch.api.errors import PROBLEM, first_line, phrase
from basewatch.api.models import (
    AckBody,
    Alert,
    AlertWithHistory,
    FeedbackBody,
    Health,
    NrrHeadline,
    PrettyJSON,
    Problem,
    Readiness,
    ResolveBody,
    SnoozeBody,
    Status,
    request_body,
)
from basewatch.metrics import CONTENT_TYPE, pending_migrations
from basewatch.users import Actor
from basewatch.web import HttpError, alert_id_of, alert_in_scope, change_alert
from core.errors import NotFound, StorageUnavailable

log = logging.getLogger(__name__)

Public = Annotated[Exchange, Depends(Gate(public=True))]
SignedIn = Annotated[Exchange, Depends(Gate())]
Managers = Annotated[Exchange, Depends(Gate(managers=True))]
Change = Annotated[Exchange, Depends(Gate(body="json"))]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": phrase(status),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


READ_ERRORS = _errors(400, 401, 403, 404, 503)
CHANGE_ERRORS = _errors(400, 401, 403, 404, 409, 413, 415, 503)
PROBE: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "not ready (Retry-After)"}
}

# Problem is referenced by hand above: this route-less mention puts it in the components
router = APIRouter(responses={"default": {"model": Problem, "description": "an error"}})


def _unavailable(document: dict[str, Any]) -> PrettyJSON:
    return PrettyJSON(document, 503, {"Retry-After": str(RETRY_AFTER_S)})


@router.get("/healthz", response_model=Status, responses=PROBE)
def healthz(exchange: Public) -> Any:
    """``ok`` when the database answers, else 503 ``unavailable`` (the reason is logged)."""
    try:
        with exchange.api.database(
            min(HEALTHZ_WAIT_S, exchange.api.config.db_pool_timeout_s)
        ) as conn:
            conn.execute("SELECT 1")
    except (StorageUnavailable, psycopg.Error) as exc:
        log.warning("healthz: database unavailable: %s", first_line(exc))
        return _unavailable({"status": "unavailable"})
    return {"status": "ok"}


@router.get("/livez", response_model=Status)
def livez(exchange: Public) -> Any:
    """The process answers; nothing else is checked (a database outage must not restart it)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=PROBE)
def readyz(exchange: Public) -> Any:
    """Ready when the database answers and no migration is pending; the reason in a few words
    otherwise, never the database's host, name or error text (those are logged)."""
    api = exchange.api
    try:
        with api.database(min(HEALTHZ_WAIT_S, api.config.db_pool_timeout_s)) as conn:
            pending = pending_migrations(conn, api.migrations)
    except (StorageUnavailable, psycopg.Error, PoolTimeout, TooManyRequests) as exc:
        log.warning("readyz: database unavailable: %s", first_line(exc))
        return _unavailable({"status": "unavailable", "reason": "the database does not answer"})
    if pending:
        reason = (
            f"{pending} database migration{'s' if pending > 1 else ''} pending: "
            "run basewatch db migrate"
        )
        return _unavailable({"status": "unavailable", "reason": reason})
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def prometheus_metrics(exchange: Public) -> Response:
    """Request counts and durations by route pattern, Prometheus text format."""
    return Response(exchange.api.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/alerts", response_model=list[Alert], responses=READ_ERRORS)
def alerts_list(
    exchange: SignedIn,
    status: Annotated[
        str, Query(description="all, active, closed or one status (open, acknowledged, ...)")
    ] = "active",
    owner: Annotated[str | None, Query(description="the owner's CSM id")] = None,
    kind: str | None = None,
    account: Annotated[str | None, Query(description="an account id")] = None,
    family: Annotated[str | None, Query(description="risk, expansion or service")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Any:
    """Like ``basewatch alerts list --json``: active first, then by priority and due date. A
    csm lists their own alerts only."""
    from signals.alerts import STATUS_FILTERS, list_alerts

    status = status or "active"
    if status not in ("all", *STATUS_FILTERS):
        raise HttpError(400, f"unknown status {status!r} (use all, {', '.join(STATUS_FILTERS)})")
    owner = owner or None
    scope = exchange.who.scope
    if scope is not None:  # a csm lists their own alerts only
        if owner not in (None, scope):
            return []
        owner = scope
    with exchange.api.database() as conn:
        return list_alerts(
            conn,
            status=None if status == "all" else status,
            owner=owner,
            kind=kind or None,
            account=account or None,
            family=family or None,
            limit=limit,
            offset=offset,
        )


@router.get("/alerts/{alert_id:int}", response_model=AlertWithHistory, responses=READ_ERRORS)
def alert_detail(exchange: SignedIn, alert_id: int) -> Any:
    """The alert with its ``history``; another csm's alert is unknown (404)."""
    from signals.alerts import alert_history

    number = alert_id_of(str(alert_id))
    with exchange.api.database() as conn:
        alert = alert_in_scope(conn, exchange.who, number)
        alert["history"] = alert_history(conn, number)
    return alert


def _text_field(body: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise HttpError(400, f"field {name!r} is required")
        return ""
    if not isinstance(value, str):
        raise HttpError(400, f"field {name!r} must be a string")
    if required and not value.strip():
        raise HttpError(400, f"field {name!r} must not be empty")
    return value


def _snooze_until(body: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    until, hours = body.get("until"), body.get("hours")
    if (until is None) == (hours is None):
        raise HttpError(400, "give either 'until' (an ISO time) or 'hours' (a number)")
    if until is not None:
        if not isinstance(until, str):
            raise HttpError(400, "field 'until' must be an ISO time string")
        try:
            parsed = dt.datetime.fromisoformat(until)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            parsed = parsed.astimezone(dt.UTC)  # 9999-12-31T23:00-05:00 overflows here
        except (ValueError, OverflowError):
            raise HttpError(400, f"'until' is not an ISO time: {until!r}") from None
        if parsed > now + dt.timedelta(hours=MAX_SNOOZE_HOURS):
            raise HttpError(
                400, f"'until' must be at most {MAX_SNOOZE_HOURS} hours (366 days) ahead"
            )
        return parsed
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        raise HttpError(400, "field 'hours' must be a number")
    if not 0 < hours <= MAX_SNOOZE_HOURS:
        raise HttpError(400, f"'hours' must be more than 0 and at most {MAX_SNOOZE_HOURS}")
    return now + dt.timedelta(hours=hours)


def _actor(exchange: Exchange, body: Mapping[str, Any]) -> Actor:
    """The actor of a change is the authenticated user; a ``by`` that names anybody else is
    refused (403). The deprecated service token has no user: its ``by`` is required."""
    principal = exchange.who
    if principal.user is None:
        return Actor(None, _text_field(body, "by", required=True))
    by = _text_field(body, "by", required=False)
    if "by" in body and by != principal.user.username:
        raise HttpError(
            403,
            f"'by' must be left out or be the authenticated user ({principal.user.username}):"
            " the actor of a change is who signed in",
        )
    return Actor(principal.user.user_id, principal.user.username)


def _change(
    exchange: Exchange,
    alert_id: int,
    fields: tuple[str, ...],
    action: str,
    apply: Any,
) -> dict[str, Any]:
    """Parse the body (strict JSON, only ``fields``), then change the alert in the
    principal's scope and write the audit row in one transaction (``basewatch.web``)."""
    request = exchange.request()
    body = request.json_body(fields)
    actor = _actor(exchange, body)
    number = alert_id_of(str(alert_id))
    change, details = apply(body, actor, number)
    return change_alert(exchange.api, request, actor, action, number, change, details)


@router.post(
    "/alerts/{alert_id:int}/ack",
    response_model=Alert,
    responses=CHANGE_ERRORS,
    openapi_extra=request_body(AckBody),
)
def post_ack(exchange: Change, alert_id: int) -> Any:
    """Acknowledge the alert (open → acknowledged)."""
    from signals.alerts import acknowledge

    def apply(body: Mapping[str, Any], actor: Actor, number: int) -> Any:
        return (lambda c: acknowledge(c, number, actor.name)), {}

    return _change(exchange, alert_id, ("by",), "ack", apply)


@router.post(
    "/alerts/{alert_id:int}/snooze",
    response_model=Alert,
    responses=CHANGE_ERRORS,
    openapi_extra=request_body(SnoozeBody),
)
def post_snooze(exchange: Change, alert_id: int) -> Any:
    """Snooze the alert until a time or for some hours, with a reason."""
    from signals.alerts import snooze

    def apply(body: Mapping[str, Any], actor: Actor, number: int) -> Any:
        reason = _text_field(body, "reason", required=True)
        now = dt.datetime.now(dt.UTC)
        until = _snooze_until(body, now)
        return (
            lambda c: snooze(c, number, until, reason, actor.name, now=now),
            {"until": until.isoformat(), "reason": reason},
        )

    return _change(exchange, alert_id, ("by", "until", "hours", "reason"), "snooze", apply)


@router.post(
    "/alerts/{alert_id:int}/resolve",
    response_model=Alert,
    responses=CHANGE_ERRORS,
    openapi_extra=request_body(ResolveBody),
)
def post_resolve(exchange: Change, alert_id: int) -> Any:
    """Close the alert as won, lost or dismissed, with an optional note."""
    from signals.alerts import OUTCOMES, resolve

    def apply(body: Mapping[str, Any], actor: Actor, number: int) -> Any:
        outcome = _text_field(body, "outcome", required=True)
        if outcome not in OUTCOMES:
            raise HttpError(400, f"'outcome' must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        note = _text_field(body, "note", required=False)
        return (
            lambda c: resolve(c, number, outcome, actor.name, note),
            {"outcome": outcome, "note": note},
        )

    return _change(exchange, alert_id, ("by", "outcome", "note"), "resolve", apply)


@router.post(
    "/alerts/{alert_id:int}/feedback",
    response_model=Alert,
    responses=CHANGE_ERRORS,
    openapi_extra=request_body(FeedbackBody),
)
def post_feedback(exchange: Change, alert_id: int) -> Any:
    """Mark the alert useful or not useful (kept for measuring precision)."""
    from signals.alerts import feedback

    def apply(body: Mapping[str, Any], actor: Actor, number: int) -> Any:
        useful = body.get("useful")
        if not isinstance(useful, bool):
            raise HttpError(400, "field 'useful' must be true or false")
        return (lambda c: feedback(c, number, useful, actor.name)), {"useful": useful}

    return _change(exchange, alert_id, ("by", "useful"), "feedback", apply)


@router.get("/accounts/{account_id}/health", response_model=Health, responses=READ_ERRORS)
def account_health(exchange: SignedIn, account_id: str) -> Any:
    """The account's row of ``basewatch signals health --json``; another csm's account is
    unknown (404)."""
    from signals.health import latest_health

    scope = exchange.who.scope
    with exchange.api.database() as conn:
        rows = latest_health(conn, account_id)
        if scope is not None:
            owner = conn.execute(
                "SELECT csm_id FROM accounts WHERE account_id = %s", (account_id,)
            ).fetchone()
            if owner is None or owner[0] != scope:
                rows = []  # another csm's account reads as unknown
    if not rows:
        raise NotFound(
            f"no health recorded for account {account_id!r} (unknown account, no active "
            "contract, or not scored yet)"
        )
    return rows[0]


@router.get("/nrr", response_model=NrrHeadline, responses=READ_ERRORS)
def nrr_headline(
    exchange: Managers,
    month: Annotated[str | None, Query(description="YYYY-MM; default the ledger's last")] = None,
) -> Any:
    """``basewatch nrr show --json`` (manager and admin roles)."""
    from basewatch.web import month_query
    from nrr.headline import headline

    chosen = month_query(exchange.request())
    api = exchange.api
    with api.database() as conn:
        figures = headline(
            conn,
            api.config.reporting_currency,
            chosen,
            attribution_window_days=api.config.attribution_window_days,
        )
    return figures.document()
