"""What the JSON routes (``basewatch.api``) and the pages (``basewatch.pages``) share: the
request and response of one exchange, the principal who sent it, the error raised at the HTTP
edge, and the one path every alert change takes (scope check, change, audit row, one
transaction). No sockets and no routing here: ``basewatch.api`` owns the server (uvicorn) and
the routes (FastAPI), and hands the pages this module's :class:`Request`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg.rows import TupleRow

from basewatch.users import Actor, Source, User, may_see_everything, record
from core.errors import NotFound

Conn = psycopg.Connection[TupleRow]


class Database(Protocol):
    """What an alert change needs of the API: a pooled connection per request (committed on
    success). ``basewatch.api.context.Api`` is one; a protocol keeps this module below
    ``api``."""

    def database(
        self, timeout_s: float | None = None
    ) -> contextlib.AbstractContextManager[Conn]: ...


class HttpError(Exception):
    """An answer other than 2xx decided at the HTTP edge (bad query, body, token, route)."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user (by session cookie or personal token), or, for the
    deprecated ``BASEWATCH_API_TOKEN``, nobody in particular (``user`` None, admin's view)."""

    user: User | None
    via: str  # "session", "token" or "service"
    session_id: str = ""  # the cookie's session id (via "session")

    @property
    def sees_everything(self) -> bool:
        return self.user is None or may_see_everything(self.user)

    @property
    def scope(self) -> str | None:
        """The csm_id whose accounts and alerts alone this principal sees (None: all)."""
        return None if self.sees_everything or self.user is None else self.user.csm_id


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # case-insensitive (Starlette's Headers)
    body: bytes
    params: tuple[str, ...]  # the route's path segments, percent-decoded
    principal: Principal | None = None  # who sent it (None on a public route, signed out)

    def single(self, allowed: tuple[str, ...]) -> dict[str, str]:
        """The query as one value per name; unknown or repeated names are a 400."""
        out = {}
        for name, values in self.query.items():
            if name not in allowed:
                raise HttpError(
                    400, f"unknown query parameter {name!r} (allowed: {', '.join(allowed)})"
                )
            if len(values) > 1:
                raise HttpError(400, f"query parameter {name!r} is given more than once")
            out[name] = values[0]
        return out

    def json_body(self, allowed: tuple[str, ...]) -> dict[str, Any]:
        """The body as a JSON object (an empty body is ``{}``); unknown fields are a 400."""
        if not self.body.strip():
            return {}
        try:
            document = json.loads(self.body, parse_constant=_no_constant)
        except RecursionError:
            raise HttpError(400, "the body is not JSON: nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit number
            raise HttpError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise HttpError(400, "the body must be a JSON object")
        unknown = sorted(set(document) - set(allowed))
        if unknown:
            raise HttpError(400, f"unknown field {unknown[0]!r} (allowed: {', '.join(allowed)})")
        return document

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body, one value per name (the first)."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "the form is not UTF-8") from None
        fields = urllib.parse.parse_qs(text, keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def json_response(document: Any, status: int = 200) -> Response:
    body = json.dumps(document, indent=2, default=str).encode() + b"\n"
    return Response(status, "application/json", body)


def html_response(body: str, status: int = 200) -> Response:
    return Response(status, "text/html; charset=utf-8", body.encode())


def redirect(location: str) -> Response:
    return Response(303, "text/plain; charset=utf-8", b"see other\n", (("Location", location),))


def alert_id_of(text: str) -> int:
    value = int(text)  # the route only matches digits
    if not 1 <= value < 2**63:
        raise NotFound(f"no alert #{text}")
    return value


def principal_of(request: Request) -> Principal:
    assert request.principal is not None  # every route but the public ones authenticates
    return request.principal


def alert_in_scope(conn: Conn, principal: Principal, alert_id: int) -> dict[str, Any]:
    """The alert, or NotFound (the same as for an unknown one) outside a csm's scope."""
    from signals.alerts import get_alert

    alert = get_alert(conn, alert_id)
    if principal.scope is not None and alert["owner_csm_id"] != principal.scope:
        raise NotFound(f"no alert #{alert_id}")
    return alert


def change_alert(
    api: Database,
    request: Request,
    actor: Actor,
    action: str,
    alert_id: int,
    change: Callable[[Conn], dict[str, Any]],
    details: Mapping[str, Any],
    source: Source = "api",
) -> dict[str, Any]:
    """Apply ``change`` to the alert of the route (in the principal's scope) and write the
    audit row, in one transaction."""
    principal = principal_of(request)
    with api.database() as conn, conn.transaction():
        alert_in_scope(conn, principal, alert_id)
        alert = change(conn)
        record(
            conn,
            actor,
            f"alert.{action}",
            f"alert:{alert_id}",
            source,
            {**details, "status": alert["status"], "via": principal.via},
        )
    return alert


def form_values(request: Request, name: str) -> list[str]:
    """Every value of a repeated form field (checkboxes), in order."""
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the form is not UTF-8") from None
    return urllib.parse.parse_qs(text, keep_blank_values=True).get(name, [])


def month_query(request: Request) -> dt.date | None:
    """The request's only query parameter ``?month=YYYY-MM`` (its first day), None when not
    given; 400 when malformed or when another parameter is given."""
    from core.months import parse_month

    query = request.single(("month",))
    if not query.get("month"):
        return None
    try:
        return parse_month(query["month"])
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
