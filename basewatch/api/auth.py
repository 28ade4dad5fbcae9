"""Who a request comes from, and whether it may do what it asks: the dependencies every route
declares through one :class:`Gate`.

A gate reads the request body (at most :data:`MAX_BODY_BYTES`, else 413), refuses a
state-changing request a browser sent from another site (403), authenticates (a bearer token:
the deprecated service token or a personal one; else the session cookie), sends a signed-out
page GET to ``/signin`` (303) and answers anything else signed out with 401, keeps manager
routes from a csm (403), checks the body's content type (415), refuses unknown or repeated
query parameters on the JSON routes (400) and, for a change made with the session cookie, the
CSRF token (403). The checks run in that order, as before the port, so the authorization
matrix (``tests/basewatch/test_users_api.py``) holds unchanged. It hands the route an
:class:`Exchange`: the request as the pages and the alert-change path know it
(``basewatch.web.Request``) plus the API's state."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.responses import Response

from basewatch.api.config import MAX_BODY_BYTES
from basewatch.api.context import Api
from basewatch.users import Actor, record
from basewatch.web import HttpError, Principal
from basewatch.web import Request as WebRequest
from basewatch.web import Response as WebResponse

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNAUTHENTICATED = (
    "sign in (/signin), or send Authorization: Bearer <token> with a personal API token "
    "(basewatch users token create)"
)
CHALLENGE = (("WWW-Authenticate", 'Bearer realm="basewatch"'),)


class SignInFirst(Exception):
    """A signed-out page GET: answered 303 to /signin."""


async def on_sign_in_first(request: Request, exc: Exception) -> Response:
    return Response(b"see other\n", 303, {"Location": "/signin"}, media_type="text/plain")


async def request_body(request: Request) -> bytes:
    """The whole body, refused (413) beyond :data:`MAX_BODY_BYTES`. Read before the route
    runs, so the sync route never waits on the client in a worker thread."""
    raw = request.headers.get("Content-Length")
    if raw is not None and raw.isdigit() and int(raw) > MAX_BODY_BYTES:
        raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Exchange:
    """One request as the routes use it: the API's state, who sent it, what it sent."""

    api: Api
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    principal: Principal | None

    def request(self, *params: str) -> WebRequest:
        return WebRequest(
            self.method, self.path, self.query, self.headers, self.body, params, self.principal
        )

    @property
    def who(self) -> Principal:
        assert self.principal is not None  # every route but the public ones authenticates
        return self.principal

    def answer(self, endpoint: Callable[[Api, WebRequest], WebResponse], *params: str) -> Response:
        """Run a page endpoint (``basewatch.pages``) and turn its answer into Starlette's."""
        found = endpoint(self.api, self.request(*params))
        response = Response(found.body, found.status, media_type=found.content_type)
        for name, value in found.headers:
            response.headers.append(name, value)
        return response


class Gate:
    """A route's checks (see the module docstring); ``page``: an HTML route, ``public``: no
    principal needed, ``body``: the content type of a change ("json", "form" or none),
    ``managers``: admin and manager only."""

    def __init__(
        self, *, page: bool = False, public: bool = False, body: str = "", managers: bool = False
    ) -> None:
        self.page = page
        self.public = public
        self.body = body
        self.managers = managers

    def __call__(self, request: Request, body: Annotated[bytes, Depends(request_body)]) -> Exchange:
        api: Api = request.app.state.api
        method, headers = request.method, request.headers
        if method in UNSAFE_METHODS:
            check_same_origin(headers)
        principal = None
        if not self.public:
            principal = authenticate(api, headers, request.cookies)
            if principal is not None and principal.via == "service":
                audit_service_use(api, method, request.url.path)
            if principal is None and self.page and method == "GET":
                raise SignInFirst
            if principal is None:
                raise HttpError(401, UNAUTHENTICATED, CHALLENGE)
            if self.managers and not principal.sees_everything:
                raise HttpError(403, "this is for the manager and admin roles")
        if method in UNSAFE_METHODS:
            check_content_type(self.body, headers, body)
        query = urllib.parse.parse_qs(request.url.query, keep_blank_values=True)
        if not self.page:  # the pages check their own query (basewatch.web.Request.single)
            check_query(query, declared_query(request.scope.get("route")))
        exchange = Exchange(api, method, request.url.path, query, headers, body, principal)
        if principal is not None and principal.via == "session" and method in UNSAFE_METHODS:
            check_csrf(exchange, self.body)
        return exchange


def authenticate(
    api: Api, headers: Mapping[str, str], cookies: Mapping[str, str]
) -> Principal | None:
    """The principal of a request: a bearer token (the service token or a personal one) or
    else the session cookie; None when neither is valid. A bearer token that is wrong or
    revoked is refused (401) even with a valid cookie."""
    from basewatch.auth import COOKIE_NAME, user_of_session
    from basewatch.users import user_of_token

    authorization = headers.get("Authorization")
    scheme, _, value = (authorization or "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    if authorization is not None and not given:
        raise HttpError(401, UNAUTHENTICATED, CHALLENGE)
    now = dt.datetime.now(dt.UTC)
    service = api.config.token
    if given and service and hmac.compare_digest(given.encode(), service.encode()):
        return Principal(None, "service")
    if given:
        with api.database() as conn:
            user = user_of_token(conn, given, now=now)
        if user is None:
            raise HttpError(401, "wrong, revoked or expired token", CHALLENGE)
        return Principal(user, "token")
    session_id = cookies.get(COOKIE_NAME, "")
    if not session_id:
        return None
    with api.database() as conn:
        user = user_of_session(conn, session_id, now=now)
    return Principal(user, "session", session_id) if user else None


def audit_service_use(api: Api, method: str, path: str) -> None:
    """Every request with the deprecated service token leaves an audit row (its changes a
    second one, with their ``by``) and, once per process, a warning in the log."""
    if not api.warned_service_token:
        api.warned_service_token = True
        log.warning(
            "a request used BASEWATCH_API_TOKEN, which is deprecated: give scripts personal "
            "tokens (basewatch users token create) and unset it"
        )
    with api.database() as conn:
        record(conn, Actor(None, "service token"), "service_token.use", f"{method} {path}", "api")


def check_csrf(exchange: Exchange, body_kind: str) -> None:
    """A change authenticated by the session cookie carries the session's CSRF token (form
    field ``csrf_token``, or header ``X-CSRF-Token``): 403 without it or with a wrong one."""
    from basewatch.auth import csrf_ok

    given = exchange.headers.get("X-CSRF-Token") or ""
    if not given and body_kind == "form":
        given = exchange.request().form().get("csrf_token", "")
    if not given or not csrf_ok(exchange.who.session_id, given):
        raise HttpError(403, "missing or wrong CSRF token: reload the page and try again")


def check_same_origin(headers: Mapping[str, str]) -> None:
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
    if not same_origin(origin.strip(), host.strip()):
        raise HttpError(
            403, f"cross-site request refused: Origin {origin!r} is not this server ({host!r})"
        )


def same_origin(origin: str, host: str) -> bool:
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


def check_content_type(kind: str, headers: Mapping[str, str], body: bytes) -> None:
    """JSON changes take application/json only (a text/plain or form body is what a page on
    another site can send without a CORS preflight); forms take a urlencoded body (or none)."""
    media = (headers.get("Content-Type") or "").partition(";")[0].strip().lower()
    if kind == "json" and media != "application/json":
        raise HttpError(
            415, f"send the body as Content-Type: application/json (got {media or 'none'!r})"
        )
    if kind == "form" and body and media != "application/x-www-form-urlencoded":
        raise HttpError(
            415, f"send the form as application/x-www-form-urlencoded (got {media or 'none'!r})"
        )


def check_query(query: Mapping[str, list[str]], allowed: frozenset[str]) -> None:
    """Unknown or repeated query parameters are a 400: a typo is not silently ignored."""
    for name, values in query.items():
        if name not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise HttpError(400, f"unknown query parameter {name!r} (allowed: {names})")
        if len(values) > 1:
            raise HttpError(400, f"query parameter {name!r} is given more than once")


def _query_names(dependant: Dependant) -> Iterator[str]:
    yield from (field.alias for field in dependant.query_params)
    for dependency in dependant.dependencies:
        yield from _query_names(dependency)


def declared_query(route: object) -> frozenset[str]:
    """The query parameters a JSON route declares (its OpenAPI parameters)."""
    if not isinstance(route, APIRoute):
        return frozenset()
    return frozenset(_query_names(route.dependant))
