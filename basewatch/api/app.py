"""The FastAPI application: :func:`create_app` puts the JSON routes (``routes``), the pages
(``pages``), the error handlers (``errors``) and :class:`Edge` together around one
:class:`basewatch.api.context.Api`. Nothing is built at import time.

:class:`Edge` is the outermost layer of every exchange: HEAD is answered as GET without a
body, every answer gets the security headers and ``Server: basewatch``, each request is
counted and timed by route pattern (``/alerts/{id}``, never the path) and logged (the path
only: a query may hold what a user typed), and an unexpected exception becomes a logged 500
problem, never a traceback to the client."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from basewatch.api import errors, pages, routes
from basewatch.api.auth import SignInFirst, on_sign_in_first
from basewatch.api.context import Api
from basewatch.api.models import PrettyJSON

log = logging.getLogger(__name__)

PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
)
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"
OPENAPI_URL = "/openapi.json"  # public, like the probes: it names routes, not data


def security_headers(content_type: str) -> tuple[tuple[str, str], ...]:
    """Headers of every answer (the server's own 400 and busy 503 included)."""
    policy = PAGE_POLICY if content_type.startswith("text/html") else DATA_POLICY
    return (
        ("Server", "basewatch"),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", policy),
    )


def metric_label(path: str) -> str:
    """A route's path template as a metric label, as before the port: ``/alerts/{id}``,
    ``/csm/{name}/alerts/{id}/{action}``."""
    label = re.sub(r"\{alert_id(:int)?\}", "{id}", path)
    return re.sub(r"\{(account_id|csm_id)\}", "{name}", label)


def create_app(api: Api) -> FastAPI:
    """The application serving ``api``; its lifespan sizes the worker threads of the sync
    routes to ``BASEWATCH_API_THREADS``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # FastAPI runs sync routes and dependencies in anyio's default thread pool: sized
        # here, so that at most BASEWATCH_API_THREADS requests run at once (the others wait
        # for a thread, within BASEWATCH_API_MAX_CONNECTIONS)
        anyio.to_thread.current_default_thread_limiter().total_tokens = api.config.threads
        yield

    app = _new_app(lifespan)
    app.state.api = api
    errors.install(app)
    app.add_exception_handler(SignInFirst, on_sign_in_first)
    app.add_middleware(Edge, api=api)
    return app


class Edge:
    """See the module docstring (pure ASGI: it adds no thread hop and no buffering)."""

    def __init__(self, app: ASGIApp, api: Api) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        # HEAD runs the GET route; the server (which still sees HEAD) sends no body
        inner = dict(scope, method="GET") if method == "HEAD" else scope
        started = time.perf_counter()
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in security_headers(headers.get("content-type", "")):
                    headers[name] = value
            await send(message)

        try:
            await self.app(inner, receive, answer)
        except Exception as exc:
            log.error("request failed", exc_info=exc)
            if status:
                raise  # the answer has begun: the server closes the connection
            status = 500
            body = errors.problem_body(500, "internal error (see the server log)")
            await answer(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", errors.PROBLEM.encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await answer({"type": "http.response.body", "body": body})
        finally:
            route = inner.get("route")
            label = metric_label(route.path) if isinstance(route, Route) else "none"
            self.api.metrics.observe(label, method, status, time.perf_counter() - started)
            client = scope.get("client") or ("-", 0)
            log.info("%s %s %s %s", client[0], method, scope.get("path", "-"), status)


@dataclass(frozen=True)
class RouteEntry:
    """One route of the app: its method, path template and metric label."""

    method: str
    path: str
    label: str


def _new_app(lifespan: Any = None) -> FastAPI:
    app = FastAPI(
        title="basewatch",
        summary="Installed-base telemetry to revenue signals: alerts, account health, NRR.",
        description=(
            "Errors are RFC 9457 problem details (application/problem+json) that keep the "
            "`error` field of earlier versions. Authenticate with `Authorization: Bearer "
            "<personal token>` (`basewatch users token create`) or the session cookie of "
            "`/signin`; a change made with the cookie carries `X-CSRF-Token`."
        ),
        version="1",
        openapi_url=OPENAPI_URL,
        docs_url=None,  # the interactive docs load scripts from a CDN: the schema is enough
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=PrettyJSON,
        redirect_slashes=False,  # /alerts/ is no route (404), as before
    )
    app.include_router(routes.router)
    app.include_router(pages.router)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI schema the app serves at ``/openapi.json`` (built without a server)."""
    return _new_app().openapi()


def route_table() -> tuple[RouteEntry, ...]:
    """Every (method, path) the app answers (HEAD aside: every GET takes it), for the
    authorization matrix and the metric labels; ``/openapi.json`` is FastAPI's own."""
    found = [*routes.router.routes, *pages.router.routes]
    return (*_entries(found), RouteEntry("GET", OPENAPI_URL, OPENAPI_URL))


def _entries(found: list[BaseRoute]) -> Iterator[RouteEntry]:
    for route in found:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield RouteEntry(method, route.path, metric_label(route.path))
