"""``basewatch api``: the HTTP API and the CSM pages, on the standard library's ``http.server``.

Endpoints (JSON documents carry the field names of the CLI's ``--json`` output, built by the
same functions: ``signals.alerts``, ``signals.health``, ``nrr.headline``)::

    GET  /healthz                          200 {"status": "ok"} or 503 {"status": "unavailable"}
    GET  /livez                            200 {"status": "ok"} while the process serves (no
                                           database involved)
    GET  /readyz                           200 {"status": "ready"}, or 503 {"status": "unavailable",
                                           "reason": ...}: database unreachable, migrations pending
    GET  /metrics                          Prometheus text format (``basewatch.metrics``)
    GET  /alerts?status=&owner=&kind=&account=&limit=     like `alerts list --json`
    GET  /alerts/<id>                      the alert with its "history"
    POST /alerts/<id>/ack                  {"by"?}
    POST /alerts/<id>/snooze               {"by"?, "until": ISO time | "hours": N, "reason"}
    POST /alerts/<id>/resolve              {"by"?, "outcome": won|lost|dismissed, "note"?}
    POST /alerts/<id>/feedback             {"by"?, "useful": true|false}
    GET  /accounts/<id>/health             the account's row of `signals health --json`
    GET  /nrr?month=YYYY-MM                `nrr show --json` (manager, admin)
    GET  /signin, POST /signin             HTML: the sign-in form; 303 with the session cookie
    POST /signout                          ends the session server-side, 303 to /signin
    GET  /                                 HTML: the CSMs and their active alert counts
    GET  /csm/<csm_id>?family=&kind=&account=&status=   HTML: that CSM's alerts, new first,
                                           then by expected value; overdue due dates marked
    POST /csm/<csm_id>/alerts/<id>/{ack,snooze,resolve,feedback}   HTML forms, then 303 back
    GET  /csm/<csm_id>/accounts?sort=      HTML: that CSM's accounts (health, MRR and its trend,
                                           renewal, active alerts by family, last data)
    GET  /accounts?sort=                   HTML: every account (manager, admin; a csm is sent
                                           to their own list)
    GET  /accounts/<account_id>            HTML: the account: contracts, MRR and usage charts,
                                           machines and component life, alerts, health factors
    GET  /accounts/<account_id>/review?from=&to=   HTML: the printable business review of
                                           the account (``basewatch.pages.review``)
    GET  /team?days=30|90|365              HTML: alerts per CSM, the share acted on, the value
                                           won (manager, admin)
    GET  /reports/nrr?month=YYYY-MM        HTML: the monthly NRR report, as `nrr report` writes
                                           it (manager, admin)
    POST /csm/<csm_id>/alerts/bulk         HTML form: acknowledge or resolve the ticked alerts
                                           (an audit row each), then 303 back

The pages live in ``basewatch.pages`` (Jinja2 templates in ``basewatch/templates``, autoescape
on); what they and the JSON routes share (request, response, principal, the alert-change path)
in ``basewatch.web``. This module keeps the server, the route table and the JSON routes.

Every GET route answers HEAD too (the same status and headers, no body).

Decisions:

- Standard library only, HTTP/1.0: every connection carries one request, so a shutdown never
  waits for an idle keep-alive client.
- Bounded everywhere (issue 11 item 6). The accept thread hands each connection to a fixed set
  of ``BASEWATCH_API_THREADS`` worker threads; at most ``BASEWATCH_API_MAX_CONNECTIONS``
  connections are held at once (being served or waiting for a worker). A connection beyond
  that is answered at once by the accept thread with a canned ``503`` + ``Retry-After`` and
  closed only once the client has closed its side or :data:`LINGER_S` passed (closing with
  unread request bytes would reset the connection and lose the answer). The listen backlog
  is :data:`LISTEN_BACKLOG`. Database connections come from one ``psycopg_pool`` pool of at
  most ``BASEWATCH_API_DB_POOL_MAX`` (at least one kept open, each checked with an empty
  query when handed out, so a database restart costs no request); a request that waits longer
  than ``BASEWATCH_API_DB_POOL_TIMEOUT_S`` for one is a 503 with ``Retry-After``. So however
  many clients come, the API holds at most that many PostgreSQL sessions, and the ingesters
  and the scheduler keep theirs.
- A client must send its whole request (line, headers, body) within
  :data:`REQUEST_TIMEOUT_S` overall, not per read: a client trickling bytes cannot hold a
  worker longer than that. Writing the answer has its own :data:`WRITE_TIMEOUT_S` per write.
  After an answer to a request that was not read to its end (413, a malformed or too long
  request line or header) the worker drains the rest for up to :data:`LINGER_S` before
  closing, for the same reason as above. Slow clients can still occupy every worker for
  :data:`REQUEST_TIMEOUT_S` at a time; the others are then answered 503 at once rather than
  queued without bound (an event-loop server would be the next step).
- SIGTERM/SIGINT: stop accepting and close the listening socket, let the workers finish the
  running and already accepted requests (worker threads are joined, not daemons), close the
  pool, exit 0.
- The process starts without a database: the pool keeps connecting in the background (an
  attempt given up after :data:`RECONNECT_TIMEOUT_S`, the next request starts a new one) and
  requests answer 503 until it is reachable. Each connection has a statement timeout of
  :data:`STATEMENT_TIMEOUT_S`; a request's transaction is committed when it succeeds and
  rolled back otherwise.
- Errors are ``{"error": "..."}`` (an HTML page on the CSM pages): 400 bad input (a malformed
  request line included), 401 not signed in or a wrong or revoked token, 403 a cross-site
  change, a missing or wrong CSRF token, a ``by`` naming someone else, the NRR for a csm, 404
  unknown route, alert, account, CSM or month (and another csm's: no leak), 405 wrong method
  (with ``Allow``), 409 a lifecycle change the alert's status forbids, 413 a body over
  :data:`MAX_BODY_BYTES`, 415 a body of the wrong content type, 503 (always with
  ``Retry-After``) too busy, database unreachable, not migrated or too slow, 500 a bug
  (logged with its traceback, never shown). Database errors are logged; the answer does not
  name the database's host or name, and ``/healthz`` (public) says only ``ok`` or
  ``unavailable``.
- JSON endpoints take ``Content-Type: application/json`` only (a ``text/plain`` or form body
  is a 415: those are the content types a cross-site page can send without a CORS
  preflight). Bodies are strict JSON (no NaN), nested at most as deep as the parser allows
  (deeper is a 400, not a crash); unknown fields and query parameters are rejected, so a
  typo is a 400 rather than a silently ignored option. A snooze ``until`` is bounded like
  ``hours``: at most :data:`MAX_SNOOZE_HOURS` ahead.
- CSRF (issue 11 item 7): every POST/PUT/PATCH/DELETE is refused with 403 when the browser
  says it comes from another site: ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``,
  or (without that header) an ``Origin`` whose host and port differ from the ``Host`` header
  (``Origin: null`` included; a ``Host`` without a port matches an origin on the scheme's
  default port, so a TLS proxy that keeps ``Host`` works). A request without either header
  (curl, scripts) passes: it cannot come from a browser on another site. The forms take
  ``application/x-www-form-urlencoded`` only.
- Authentication (issue 15; ``basewatch.users``, ``basewatch.auth``): every route but
  ``/healthz`` and ``/signin`` needs a principal: ``Authorization: Bearer <personal token>``
  (``basewatch users token create``; acts with its owner's current role) or the session
  cookie of ``/signin`` (pages, and JSON from a signed-in browser). A bearer token that is
  wrong or revoked is a 401 even beside a valid cookie. A signed-out page GET is sent to
  ``/signin`` (303); everything else is a 401. Nothing is open any more, so ``basewatch api``
  may listen beyond loopback without further settings; pages no longer take ``?token=``
  (an unknown query parameter, 400).
- Roles: admin and manager see every alert, account and CSM page and the NRR; a csm sees
  the alerts whose owner is their CSM, the accounts whose ``csm_id`` is theirs and their own
  page (``/`` sends them there); anything else reads as unknown (404, the same message as a
  missing one); ``/nrr`` is a 403 for a csm.
- The actor of every alert change is the authenticated user; a body's ``by`` may be left out
  or repeat the username, anything else is a 403. Each change writes its ``audit_log`` row in
  the change's transaction (source ``api`` or ``page``; ``via`` session, token or service).
- ``BASEWATCH_API_TOKEN`` (deprecated, kept so existing scripts keep working): a shared
  bearer token compared in constant time that acts with the admin's view but is nobody; its
  changes need ``by`` (recorded as the actor, and audited with ``via: service``), and it
  cannot act on the pages. Every request with it writes a ``service_token.use`` audit row
  (target: method and path) and the first one a warning in the log. Prefer personal tokens;
  unset it once scripts have moved.
- CSRF for the session: every state-changing request authenticated by the cookie carries the
  session's CSRF token (form field ``csrf_token``, in every form the pages render, or header
  ``X-CSRF-Token``), else 403; bearer requests need none (a browser cannot send that header
  cross-site). The cookie is ``HttpOnly; SameSite=Lax`` and ``Secure`` when
  ``BASEWATCH_API_PUBLIC_URL`` is https. Sign-in has no session yet: the same-origin check
  above and SameSite cover it.
- Operations: ``/livez``, ``/readyz``, ``/healthz`` and ``/metrics`` are public. The probes
  (an orchestrator's carry no credentials) say only ready or not, and why in a few words
  without a host or a name. ``/metrics`` holds request counts and durations labelled by route
  pattern (``/alerts/{id}``, never the path: no ids, no account data), like the ingester's
  and the scheduler's metrics ports, which take no credentials either; it needs no database,
  so it still answers while the database (which every sign-in and token check reads) is down.
  Keep the API's port behind the proxy that publishes the pages if request counts are not
  for everyone.
- Every answer carries ``X-Frame-Options: DENY`` and a ``Content-Security-Policy`` with
  ``frame-ancestors 'none'`` (no clickjacking of the forms), ``nosniff``, ``no-store``, and
  ``Server: basewatch`` without the Python version.
- On a CSM page the actor is the signed-in user, and only that CSM's alerts can be changed
  there. Snooze from a page is for a chosen 1, 3, 7, 14 or 30 days and asks for a reason (the
  lifecycle keeps one with every snooze).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import io
import json
import logging
import queue
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import FrameType
from typing import Any

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from basewatch.metrics import (
    CONTENT_TYPE,
    ApiMetrics,
    expected_migrations,
    pending_migrations,
    route_label,
)
from basewatch.pages.accounts import page_account, page_all_accounts, page_csm_accounts
from basewatch.pages.alerts import page_csm, page_index, post_bulk_action, post_page_action
from basewatch.pages.render import render_error
from basewatch.pages.review import page_review
from basewatch.pages.signin import page_signin, post_signin, post_signout
from basewatch.pages.team import page_nrr_report, page_team
from basewatch.users import Actor, record
from basewatch.web import (
    Conn,
    HttpError,
    Principal,
    Request,
    Response,
    alert_id_of,
    alert_in_scope,
    change_alert,
    html_response,
    json_response,
    month_query,
    principal_of,
    redirect,
)
from core.db import Pool, make_pool
from core.errors import ConfigError, InputError, NotFound, StorageUnavailable
from core.settings import Settings

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_S = 30
MAX_BODY_BYTES = 64 * 1024
MAX_LIST_LIMIT = 1000
MAX_SNOOZE_HOURS = 24 * 366
REQUEST_TIMEOUT_S = 10  # the whole request must arrive within this
WRITE_TIMEOUT_S = 30  # one write of the answer
LISTEN_BACKLOG = 128
RETRY_AFTER_S = 5  # the Retry-After of every 503
HEALTHZ_WAIT_S = 2  # /healthz waits at most this long for a database connection
RECONNECT_TIMEOUT_S = 30  # the pool gives up a connection attempt after this
LINGER_S = 2.0  # a connection refused as busy is closed after this at the latest
MAX_LINGERING = 256  # refused connections waiting for their client to close
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
APPLICATION_NAME = "basewatch-api"


@dataclass(frozen=True)
class ApiConfig:
    """What the API needs from the settings. Built by :meth:`from_settings`, so each value's
    default lives once, in ``core.settings.Settings``; only the two bounds that are not
    settings (statement and request timeouts) have their defaults here."""

    database_url: str
    token: str
    reporting_currency: str
    attribution_window_days: int
    db_pool_max: int
    db_pool_timeout_s: float
    threads: int
    max_connections: int
    public_url: str = ""  # https://...: the session cookie is Secure
    statement_timeout_s: int = STATEMENT_TIMEOUT_S
    request_timeout_s: float = REQUEST_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiConfig:
        from basewatch.currency import reporting_currency

        if any(c.isspace() for c in settings.api_token):
            raise ConfigError("BASEWATCH_API_TOKEN", "must not contain spaces")
        return cls(
            database_url=settings.database_url,
            token=settings.api_token,
            reporting_currency=reporting_currency(settings),
            attribution_window_days=settings.attribution_window_days,
            db_pool_max=settings.api_db_pool_max,
            db_pool_timeout_s=settings.api_db_pool_timeout_s,
            threads=settings.api_threads,
            max_connections=settings.api_max_connections,
            public_url=settings.api_public_url,
        )

    @property
    def secure_cookie(self) -> bool:
        return self.public_url.lower().startswith("https://")


Endpoint = Callable[["Api", Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: Endpoint
    page: bool = False  # HTML: errors as a page, a signed-out GET is sent to /signin
    public: bool = False  # no authentication needed
    body: str = ""  # the content type a POST must have: "json", "form" or "" (no body)
    label: str = ""  # the pattern as a metric label (``/alerts/{id}``)
    managers: bool = False  # admin and manager only (a csm gets 403)


class Api:
    """Routes a request to its endpoint and turns errors into answers; no socket I/O here.
    Owns the database pool (opened here, without waiting for the database; :meth:`close`)."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._warned_service_token = False
        timeout = f"{config.statement_timeout_s}s"

        def configure(conn: Conn) -> None:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))
            conn.commit()

        self.pool: Pool = make_pool(
            config.database_url,
            min_size=1,
            max_size=config.db_pool_max,
            application_name=APPLICATION_NAME,
            timeout_s=config.db_pool_timeout_s,
            configure=configure,
            check=True,
            reconnect_timeout_s=RECONNECT_TIMEOUT_S,
            wait=False,
        )
        self.metrics = ApiMetrics()
        self.migrations = expected_migrations(_packages())

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def database(self, timeout_s: float | None = None) -> Iterator[Conn]:
        """A pooled connection for one request: committed on success, rolled back on error.
        Waits up to ``timeout_s`` (default: the pool's timeout) for a free one."""
        with self.pool.connection(timeout=timeout_s) as conn:
            yield conn

    def handle(self, method: str, target: str, headers: Message, body: bytes) -> Response:
        """Answer one request; counted and timed by its route's pattern (``none``: no route)."""
        started = time.perf_counter()
        response, label = self._dispatch(method, target, headers, body)  # errors are answers
        self.metrics.observe(label, method, response.status, time.perf_counter() - started)
        return response

    def _dispatch(
        self, method: str, target: str, headers: Message, body: bytes
    ) -> tuple[Response, str]:
        split = urllib.parse.urlsplit(target)
        matches = [(r, m) for r in ROUTES if (m := r.pattern.fullmatch(split.path))]
        if not matches:
            return self._error(HttpError(404, f"no such route: {split.path}"), False), "none"
        page = matches[0][0].page
        label = matches[0][0].label
        wanted = "GET" if method == "HEAD" else method
        chosen = next(((r, m) for r, m in matches if r.method == wanted), None)
        try:
            if chosen is None:
                methods = {r.method for r, _ in matches}
                allowed = ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
                raise HttpError(
                    405, f"{method} is not allowed here (allowed: {allowed})", (("Allow", allowed),)
                )
            route, match = chosen
            label = route.label
            if method in UNSAFE_METHODS:
                check_same_origin(headers)
            query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
            principal = None
            if not route.public:
                principal = self._authenticate(headers)
                if principal is not None and principal.via == "service":
                    self._audit_service_use(method, split.path)
                if principal is None and route.page and method in ("GET", "HEAD"):
                    return redirect("/signin"), label
                if principal is None:
                    raise HttpError(401, UNAUTHENTICATED, _CHALLENGE)
                if route.managers and not principal.sees_everything:
                    raise HttpError(403, "this is for the manager and admin roles")
            if method in UNSAFE_METHODS:
                _check_content_type(route, headers, body)
            params = tuple(urllib.parse.unquote(g) for g in match.groups())
            request = Request(method, split.path, query, headers, body, params, principal)
            if principal is not None and principal.via == "session" and method in UNSAFE_METHODS:
                _check_csrf(request, route)
            return route.endpoint(self, request), label
        except Exception as exc:  # every error becomes an answer; bugs are logged
            return self._error(exc, page), label

    def _authenticate(self, headers: Message) -> Principal | None:
        """The principal of a request: a bearer token (the service token or a personal one)
        or else the session cookie; None when neither is valid. A bearer token that is
        wrong or revoked is refused (401) even with a valid cookie."""
        from basewatch.auth import user_of_session
        from basewatch.users import user_of_token

        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
        if headers.get("Authorization") is not None and not given:
            raise HttpError(401, UNAUTHENTICATED, _CHALLENGE)
        now = dt.datetime.now(dt.UTC)
        service = self.config.token
        if given and service and hmac.compare_digest(given.encode(), service.encode()):
            return Principal(None, "service")
        if given:
            with self.database() as conn:
                user = user_of_token(conn, given, now=now)
            if user is None:
                raise HttpError(401, "wrong, revoked or expired token", _CHALLENGE)
            return Principal(user, "token")
        session_id = _session_cookie(headers)
        if not session_id:
            return None
        with self.database() as conn:
            user = user_of_session(conn, session_id, now=now)
        return Principal(user, "session", session_id) if user else None

    def _audit_service_use(self, method: str, path: str) -> None:
        """Every request with the deprecated service token leaves an audit row (its changes
        a second one, with their ``by``) and, once per process, a warning in the log."""
        if not self._warned_service_token:
            self._warned_service_token = True
            log.warning(
                "a request used BASEWATCH_API_TOKEN, which is deprecated: give scripts personal "
                "tokens (basewatch users token create) and unset it"
            )
        with self.database() as conn:
            record(
                conn, Actor(None, "service token"), "service_token.use", f"{method} {path}", "api"
            )

    def _error(self, exc: Exception, page: bool) -> Response:
        status, message = error_status(exc, self.config)
        headers = exc.headers if isinstance(exc, HttpError) else ()
        if status == 503:
            headers = (*headers, ("Retry-After", str(RETRY_AFTER_S)))
        if page:
            response = html_response(render_error(status, message), status)
        else:
            response = json_response({"error": message}, status)
        return Response(response.status, response.content_type, response.body, headers)


UNAUTHENTICATED = (
    "sign in (/signin), or send Authorization: Bearer <token> with a personal API token "
    "(basewatch users token create)"
)
_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="basewatch"'),)


def _session_cookie(headers: Message) -> str:
    from http.cookies import CookieError, SimpleCookie

    from basewatch.auth import COOKIE_NAME

    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(headers.get("Cookie") or "")
    except CookieError:
        return ""
    morsel = cookie.get(COOKIE_NAME)
    return morsel.value if morsel is not None else ""


def _check_csrf(request: Request, route: Route) -> None:
    """A change authenticated by the session cookie carries the session's CSRF token (form
    field ``csrf_token``, or header ``X-CSRF-Token``): 403 without it or with a wrong one."""
    from basewatch.auth import csrf_ok

    assert request.principal is not None
    given = request.headers.get("X-CSRF-Token") or ""
    if not given and route.body == "form":
        given = request.form().get("csrf_token", "")
    if not given or not csrf_ok(request.principal.session_id, given):
        raise HttpError(403, "missing or wrong CSRF token: reload the page and try again")


def check_same_origin(headers: Message) -> None:
    """Refuse (403) a state-changing request a browser sent from another site."""
    site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site:
        if site in ("same-origin", "none"):
            return
        raise HttpError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = headers.get("Origin")
    if origin is None:
        return  # not a browser, or one too old to say: it cannot be made to send a token
    host = headers.get("Host") or ""
    if not _same_origin(origin.strip(), host.strip()):
        raise HttpError(
            403, f"cross-site request refused: Origin {origin!r} is not this server ({host!r})"
        )


def _same_origin(origin: str, host: str) -> bool:
    """Whether ``Origin`` names the server the ``Host`` header names (a ``Host`` without a
    port stands for the origin scheme's default port, as behind a TLS proxy)."""
    source = urllib.parse.urlsplit(origin)
    target = urllib.parse.urlsplit("//" + host)
    try:
        source_port = source.port or {"http": 80, "https": 443}.get(source.scheme)
        target_port = target.port
    except ValueError:
        return False
    if source.scheme not in ("http", "https") or not source.hostname or not target.hostname:
        return False
    if source.hostname != target.hostname:
        return False
    return source_port in (80, 443) if target_port is None else source_port == target_port


def _media_type(headers: Message) -> str:
    return (headers.get("Content-Type") or "").partition(";")[0].strip().lower()


def _check_content_type(route: Route, headers: Message, body: bytes) -> None:
    """JSON endpoints take application/json only; forms take a urlencoded body (or none)."""
    media = _media_type(headers)
    if route.body == "json" and media != "application/json":
        raise HttpError(
            415, f"send the body as Content-Type: application/json (got {media or 'none'!r})"
        )
    if route.body == "form" and body and media != "application/x-www-form-urlencoded":
        raise HttpError(
            415, f"send the form as application/x-www-form-urlencoded (got {media or 'none'!r})"
        )


def error_status(exc: Exception, config: ApiConfig) -> tuple[int, str]:
    """The HTTP status and message of an exception an endpoint raised."""
    from signals.alerts import AlertStateError

    if isinstance(exc, HttpError):
        return exc.status, exc.message
    if isinstance(exc, AlertStateError):
        return 409, str(exc)
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(exc, ConfigError) and exc.name == "--month":
        return 404, f"month {str(exc).removeprefix('--month: ')}"
    if isinstance(exc, InputError):
        return 400, str(exc)
    if isinstance(exc, PoolTimeout | TooManyRequests):
        log.warning("no database connection for a request: %s", _first_line(exc))
        return 503, (
            f"no database connection free within {config.db_pool_timeout_s:g} s (the database "
            "is unreachable or every connection is busy); retry later"
        )
    if isinstance(exc, PoolClosed):
        return 503, "the API is stopping; retry later"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return 503, f"the database did not answer within {config.statement_timeout_s} s"
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return 503, "the database is not migrated: run basewatch db migrate"
    if isinstance(exc, StorageUnavailable | psycopg.OperationalError):
        log.warning("database unavailable: %s", _first_line(exc))
        return 503, "the database is unavailable (see the server log); retry later"
    if isinstance(exc, ConfigError):  # the server's settings disagree with its data
        log.error("%s", exc)
        return 500, str(exc)
    log.error("request failed", exc_info=exc)
    return 500, "internal error (see the server log)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- field parsing ----------------------------------------------------------------------------


def _int_param(text: str, name: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name} must be a whole number, got {text!r}") from None
    if not minimum <= value <= maximum:
        raise HttpError(400, f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


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


# -- JSON endpoints ---------------------------------------------------------------------------


def healthz(api: Api, request: Request) -> Response:
    # public: says ok or unavailable and nothing else (the reason goes to the log)
    try:
        with api.database(min(HEALTHZ_WAIT_S, api.config.db_pool_timeout_s)) as conn:
            conn.execute("SELECT 1")
    except (StorageUnavailable, psycopg.Error) as exc:
        log.warning("healthz: database unavailable: %s", _first_line(exc))
        answer = json_response({"status": "unavailable"}, 503)
        return Response(
            503, answer.content_type, answer.body, (("Retry-After", str(RETRY_AFTER_S)),)
        )
    return json_response({"status": "ok"})


def livez(api: Api, request: Request) -> Response:
    # the process answers: nothing else is checked (a database outage must not restart it)
    return json_response({"status": "ok"})


def readyz(api: Api, request: Request) -> Response:
    # public: a short reason, never the database's host, name or error text (those are logged)
    try:
        with api.database(min(HEALTHZ_WAIT_S, api.config.db_pool_timeout_s)) as conn:
            pending = pending_migrations(conn, api.migrations)
    except (StorageUnavailable, psycopg.Error, PoolTimeout, TooManyRequests) as exc:
        log.warning("readyz: database unavailable: %s", _first_line(exc))
        return _unready("the database does not answer")
    if pending:
        return _unready(
            f"{pending} database migration{'s' if pending > 1 else ''} pending: "
            "run basewatch db migrate"
        )
    return json_response({"status": "ready"})


def _unready(reason: str) -> Response:
    answer = json_response({"status": "unavailable", "reason": reason}, 503)
    return Response(503, answer.content_type, answer.body, (("Retry-After", str(RETRY_AFTER_S)),))


def prometheus_metrics(api: Api, request: Request) -> Response:
    request.single(())
    return Response(200, CONTENT_TYPE, api.metrics.render())


def _packages() -> tuple[str, ...]:
    from basewatch.wiring import PACKAGES

    return PACKAGES


def alerts_list(api: Api, request: Request) -> Response:
    from signals.alerts import STATUS_FILTERS, list_alerts

    query = request.single(("status", "owner", "kind", "account", "limit"))
    status = query.get("status") or "active"
    if status not in ("all", *STATUS_FILTERS):
        raise HttpError(400, f"unknown status {status!r} (use all, {', '.join(STATUS_FILTERS)})")
    limit = _int_param(query.get("limit") or "100", "limit", 1, MAX_LIST_LIMIT)
    owner = query.get("owner") or None
    scope = principal_of(request).scope
    if scope is not None:  # a csm lists their own alerts only
        if owner not in (None, scope):
            return json_response([])
        owner = scope
    with api.database() as conn:
        rows = list_alerts(
            conn,
            status=None if status == "all" else status,
            owner=owner,
            kind=query.get("kind") or None,
            account=query.get("account") or None,
            limit=limit,
        )
    return json_response(rows)


def alert_detail(api: Api, request: Request) -> Response:
    from signals.alerts import alert_history

    request.single(())
    alert_id = alert_id_of(request.params[0])
    with api.database() as conn:
        alert = alert_in_scope(conn, principal_of(request), alert_id)
        alert["history"] = alert_history(conn, alert_id)
    return json_response(alert)


def _actor(request: Request, body: Mapping[str, Any]) -> Actor:
    """The actor of a change is the authenticated user; a ``by`` that names anybody else is
    refused (403). The deprecated service token has no user: its ``by`` is required."""
    principal = principal_of(request)
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


def post_ack(api: Api, request: Request) -> Response:
    from signals.alerts import acknowledge

    body = request.json_body(("by",))
    actor = _actor(request, body)
    alert_id = alert_id_of(request.params[0])
    return json_response(
        change_alert(
            api, request, actor, "ack", alert_id, lambda c: acknowledge(c, alert_id, actor.name), {}
        )
    )


def post_snooze(api: Api, request: Request) -> Response:
    from signals.alerts import snooze

    body = request.json_body(("by", "until", "hours", "reason"))
    actor = _actor(request, body)
    reason = _text_field(body, "reason", required=True)
    now = dt.datetime.now(dt.UTC)
    until = _snooze_until(body, now)
    alert_id = alert_id_of(request.params[0])
    return json_response(
        change_alert(
            api,
            request,
            actor,
            "snooze",
            alert_id,
            lambda c: snooze(c, alert_id, until, reason, actor.name, now=now),
            {"until": until.isoformat(), "reason": reason},
        )
    )


def post_resolve(api: Api, request: Request) -> Response:
    from signals.alerts import OUTCOMES, resolve

    body = request.json_body(("by", "outcome", "note"))
    actor = _actor(request, body)
    outcome = _text_field(body, "outcome", required=True)
    if outcome not in OUTCOMES:
        raise HttpError(400, f"'outcome' must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    note = _text_field(body, "note", required=False)
    alert_id = alert_id_of(request.params[0])
    return json_response(
        change_alert(
            api,
            request,
            actor,
            "resolve",
            alert_id,
            lambda c: resolve(c, alert_id, outcome, actor.name, note),
            {"outcome": outcome, "note": note},
        )
    )


def post_feedback(api: Api, request: Request) -> Response:
    from signals.alerts import feedback

    body = request.json_body(("by", "useful"))
    actor = _actor(request, body)
    useful = body.get("useful")
    if not isinstance(useful, bool):
        raise HttpError(400, "field 'useful' must be true or false")
    alert_id = alert_id_of(request.params[0])
    return json_response(
        change_alert(
            api,
            request,
            actor,
            "feedback",
            alert_id,
            lambda c: feedback(c, alert_id, useful, actor.name),
            {"useful": useful},
        )
    )


def account_health(api: Api, request: Request) -> Response:
    from signals.health import latest_health

    request.single(())
    account = request.params[0]
    scope = principal_of(request).scope
    with api.database() as conn:
        rows = latest_health(conn, account)
        if scope is not None:
            owner = conn.execute(
                "SELECT csm_id FROM accounts WHERE account_id = %s", (account,)
            ).fetchone()
            if owner is None or owner[0] != scope:
                rows = []  # another csm's account reads as unknown
    if not rows:
        raise NotFound(
            f"no health recorded for account {account!r} (unknown account, no active "
            "contract, or not scored yet)"
        )
    return json_response(rows[0])


def nrr_headline(api: Api, request: Request) -> Response:
    from nrr.headline import headline

    month = month_query(request)
    with api.database() as conn:
        figures = headline(
            conn,
            api.config.reporting_currency,
            month,
            attribution_window_days=api.config.attribution_window_days,
        )
    return json_response(figures.document())


# -- routes -----------------------------------------------------------------------------------


def _route(
    method: str,
    pattern: str,
    endpoint: Endpoint,
    *,
    page: bool = False,
    public: bool = False,
    body: str = "",
    managers: bool = False,
) -> Route:
    return Route(
        method, re.compile(pattern), endpoint, page, public, body, route_label(pattern), managers
    )


ROUTES = (
    _route("GET", r"/healthz", healthz, public=True),
    _route("GET", r"/livez", livez, public=True),
    _route("GET", r"/readyz", readyz, public=True),
    _route("GET", r"/metrics", prometheus_metrics, public=True),
    _route("GET", r"/alerts", alerts_list),
    _route("GET", r"/alerts/(\d+)", alert_detail),
    _route("POST", r"/alerts/(\d+)/ack", post_ack, body="json"),
    _route("POST", r"/alerts/(\d+)/snooze", post_snooze, body="json"),
    _route("POST", r"/alerts/(\d+)/resolve", post_resolve, body="json"),
    _route("POST", r"/alerts/(\d+)/feedback", post_feedback, body="json"),
    _route("GET", r"/accounts/([^/]+)/health", account_health),
    _route("GET", r"/nrr", nrr_headline, managers=True),
    _route("GET", r"/signin", page_signin, page=True, public=True),
    _route("POST", r"/signin", post_signin, page=True, public=True, body="form"),
    _route("POST", r"/signout", post_signout, page=True, body="form"),
    _route("GET", r"/", page_index, page=True),
    _route("GET", r"/csm/([^/]+)", page_csm, page=True),
    _route("GET", r"/csm/([^/]+)/accounts", page_csm_accounts, page=True),
    _route("GET", r"/accounts", page_all_accounts, page=True),
    _route("GET", r"/accounts/([^/]+)", page_account, page=True),
    _route("GET", r"/accounts/([^/]+)/review", page_review, page=True),
    _route("GET", r"/team", page_team, page=True, managers=True),
    _route("GET", r"/reports/nrr", page_nrr_report, page=True, managers=True),
    _route("POST", r"/csm/([^/]+)/alerts/bulk", post_bulk_action, page=True, body="form"),
    _route(
        "POST",
        r"/csm/([^/]+)/alerts/(\d+)/(ack|snooze|resolve|feedback)",
        post_page_action,
        page=True,
        body="form",
    ),
)


# -- the server -------------------------------------------------------------------------------

_PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
)
_DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"


def _security_headers(content_type: str) -> tuple[tuple[str, str], ...]:
    """Headers of every answer (the canned busy answer included)."""
    policy = _PAGE_POLICY if content_type.startswith("text/html") else _DATA_POLICY
    return (
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", policy),
    )


def _busy_answer() -> bytes:
    body = (
        json.dumps({"error": "the API is busy (too many requests at once); retry later"}) + "\n"
    ).encode()
    lines = [
        "HTTP/1.0 503 Service Unavailable",
        "Server: basewatch",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"Retry-After: {RETRY_AFTER_S}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in _security_headers("application/json")),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_BUSY = _busy_answer()


class _DeadlineReader(io.RawIOBase):
    """A socket's input that fails with ``TimeoutError`` once ``deadline`` (monotonic) has
    passed, however the bytes trickle in: each read waits only for the time left."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.0"  # one request per connection
    default_request_version = "HTTP/1.0"  # errors on a garbled request line get a status line
    server_version = "basewatch"
    sys_version = ""  # no Python version in the Server header

    linger = False  # the request may not have been read to its end: drain before closing

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced: the whole request must arrive before one deadline
        deadline = time.monotonic() + self.server.api.config.request_timeout_s
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def finish(self) -> None:
        super().finish()
        if self.linger:  # closing with unread bytes would reset the connection: drain first
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + LINGER_S
                while (left := deadline - time.monotonic()) > 0:
                    self.connection.settimeout(left)
                    if not self.connection.recv(65536):
                        break

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except HttpError as exc:
            self.linger = True
            response = json_response({"error": exc.message}, exc.status)
        else:
            response = self.server.api.handle(self.command, self.path, self.headers, body)
        self._send(response)

    def _send(self, response: Response) -> None:
        self.connection.settimeout(WRITE_TIMEOUT_S)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in _security_headers(response.content_type) + response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line, a line or header
        too long, an unknown method) as JSON answers with the usual headers."""
        self.close_connection = True
        self.linger = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send(json_response({"error": message or phrase}, code))

    def _read_body(self) -> bytes:
        # read the whole body even for requests that will be refused: closing a socket with
        # unread data resets it, and the client could lose the answer
        raw = self.headers.get("Content-Length")
        if not raw:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if length < 0:
            raise HttpError(400, "Content-Length is negative")
        if length > MAX_BODY_BYTES:
            raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # the path only (a query may hold what a user typed); a garbled request has neither
        path = urllib.parse.urlsplit(getattr(self, "path", "") or "").path or "-"
        log.info("%s %s %s %s", self.client_address[0], self.command or "-", path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("%s: " + format, self.client_address[0], *args)


Connection = tuple[socket.socket, Any]


class ApiServer(HTTPServer):
    """The HTTP server: ``serve_forever`` accepts connections and hands them to the worker
    threads; ``shutdown`` + ``server_close`` stop it after the accepted requests are done
    (see the module docstring for the bounds)."""

    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], config: ApiConfig) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler, bind_and_activate=False)
        try:
            self.server_bind()
            self.api = Api(config)
        except BaseException:
            self.socket.close()
            raise
        try:
            self.server_activate()  # listen
        except BaseException:
            self.socket.close()
            self.api.close()
            raise
        self.refused = 0  # connections answered 503 because too many were held
        self.api.metrics.refused = lambda: self.refused
        self._held = 0  # connections being served or waiting for a worker
        self._lock = threading.Lock()
        self._closed = False
        self._last_busy_log = -1e9
        self._lingering: list[tuple[socket.socket, float]] = []
        self._connections: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"api-worker-{n}")
            for n in range(config.threads)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            busy = self._held >= self.api.config.max_connections
            if not busy:
                self._held += 1
        if busy:
            self._refuse(request)
        else:
            self._connections.put((request, client_address))

    def _work(self) -> None:
        while (item := self._connections.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                with self._lock:
                    self._held -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away
            log.info("%s: connection lost: %s", client_address[0], exc)
        else:
            log.error("request from %s failed", client_address[0], exc_info=exc)

    def _refuse(self, sock: socket.socket) -> None:
        """Answer 503 without a worker; close once the client has closed (see LINGER_S)."""
        self.refused += 1
        now = time.monotonic()
        if now - self._last_busy_log >= 10:
            self._last_busy_log = now
            log.warning(
                "busy: %d connections held (BASEWATCH_API_MAX_CONNECTIONS): answering 503",
                self.api.config.max_connections,
            )
        try:
            sock.setblocking(False)
            _drain(sock)
            sock.send(_BUSY)  # a few hundred bytes into an empty send buffer
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self._lingering) >= MAX_LINGERING:
            oldest, _ = self._lingering.pop(0)
            oldest.close()
        self._lingering.append((sock, now + LINGER_S))

    def service_actions(self) -> None:
        """Called by ``serve_forever`` between connections: closes refused connections whose
        client has closed or whose time is up."""
        now = time.monotonic()
        keep = []
        for sock, until in self._lingering:
            if _drain(sock) or now >= until:
                sock.close()
            else:
                keep.append((sock, until))
        self._lingering = keep

    def server_close(self) -> None:
        """Stop listening, let the workers finish every accepted request, close the pool."""
        if self._closed:
            return
        self._closed = True
        super().server_close()
        for _ in self._workers:
            self._connections.put(None)
        for worker in self._workers:
            worker.join()
        for sock, _ in self._lingering:
            sock.close()
        self._lingering = []
        self.api.close()


def _drain(sock: socket.socket) -> bool:
    """Read what a non-blocking socket has; True once the peer has closed (or it broke)."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def make_server(config: ApiConfig, host: str, port: int) -> ApiServer:
    """Bind (port 0: any free port) and start the workers; serve with ``serve_forever``, stop
    with ``shutdown`` + ``server_close``."""
    if not 0 <= port <= 65535:
        raise ConfigError("--port", f"must be between 0 and 65535, got {port}")
    return ApiServer((host, port), config)


def run_api(settings: Settings, *, host: str, port: int) -> int:
    """``basewatch api``: serve until SIGTERM or SIGINT; returns the exit code (0)."""
    config = ApiConfig.from_settings(settings)
    server = make_server(config, host, port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping after the running requests", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
    thread.start()
    try:
        log.info(
            "api listening on %s (%d threads, at most %d connections held, %d database "
            "connections)",
            server.url,
            config.threads,
            config.max_connections,
            config.db_pool_max,
        )
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        thread.join()
        server.server_close()  # waits for the running requests
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("api stopped")
    return 0
