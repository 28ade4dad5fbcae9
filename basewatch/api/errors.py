"""Errors at the HTTP edge: every exception a route raises becomes an answer here.

JSON routes answer RFC 9457 problem details (``application/problem+json``): ``type``
(``about:blank``: the status says it all), ``title`` (the status phrase), ``status``,
``detail`` (what went wrong, for a person) and, for the clients written before, the same text
as ``error``. HTML pages (routes of class :class:`PageRoute`) answer the error page instead.
A 503 always carries ``Retry-After``. Database errors are logged; the answer never names the
database's host or name. Anything unexpected is a 500 logged with its traceback, never
shown (``basewatch.api.app`` catches it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from basewatch.api.config import RETRY_AFTER_S, ApiConfig
from basewatch.web import HttpError
from core.errors import BasewatchError, ConfigError, InputError, NotFound, StorageUnavailable

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
Headers = Sequence[tuple[str, str]]


class PageRoute(APIRoute):
    """A route that answers HTML: its errors are the error page, not problem details."""


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def problem_document(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": phrase(status),
        "status": status,
        "detail": message,
        "error": message,
    }


def problem_body(status: int, message: str) -> bytes:
    return json.dumps(problem_document(status, message), indent=2).encode() + b"\n"


def answer(status: int, message: str, headers: Headers = (), *, page: bool = False) -> Response:
    """The error answer: problem details, or the error page for an HTML route."""
    extra = dict(headers)
    if status == 503:
        extra["Retry-After"] = str(RETRY_AFTER_S)
    if page:
        from basewatch.pages.render import render_error

        return Response(
            render_error(status, message), status, extra, media_type="text/html; charset=utf-8"
        )
    return Response(problem_body(status, message), status, extra, media_type=PROBLEM)


def is_page(request: Request) -> bool:
    return isinstance(request.scope.get("route"), PageRoute)


def error_status(exc: Exception, config: ApiConfig) -> tuple[int, str]:
    """The HTTP status and message of an exception a route raised."""
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
        log.warning("no database connection for a request: %s", first_line(exc))
        return 503, (
            f"no database connection free within {config.db_pool_timeout_s:g} s (the database "
            "is unreachable or every connection is busy); retry later"
        )
    if isinstance(exc, PoolClosed):
        return 503, "the API is stopping; retry later"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return 503, f"the database did not answer within {config.statement_timeout_s} s"
    if isinstance(exc, psycopg.DataError):  # a NUL character in a filter, say (schemathesis)
        return 400, f"a value the database cannot take: {first_line(exc)}"
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return 503, "the database is not migrated: run basewatch db migrate"
    if isinstance(exc, StorageUnavailable | psycopg.OperationalError):
        log.warning("database unavailable: %s", first_line(exc))
        return 503, "the database is unavailable (see the server log); retry later"
    if isinstance(exc, ConfigError):  # the server's settings disagree with its data
        log.error("%s", exc)
        return 500, str(exc)
    log.error("request failed", exc_info=exc)
    return 500, "internal error (see the server log)"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _config(request: Request) -> ApiConfig:
    config: ApiConfig = request.app.state.api.config
    return config


async def on_error(request: Request, exc: Exception) -> Response:
    status, message = error_status(exc, _config(request))
    headers = exc.headers if isinstance(exc, HttpError) else ()
    return answer(status, message, headers, page=is_page(request))


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals: no route (404), a method the route does not take (405)."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return answer(404, f"no such route: {request.url.path}")
    if exc.status_code == 405:
        methods = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
        allowed = ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
        message = f"{request.method} is not allowed here (allowed: {allowed})"
        return answer(405, message, (("Allow", allowed),), page=is_page(request))
    return answer(exc.status_code, str(exc.detail), tuple(headers.items()), page=is_page(request))


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """A query or path parameter of the wrong type or out of range: 400 (not FastAPI's 422),
    as before the port."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body")]
    name = ".".join(where) or "the request"
    kind, given = first.get("type", ""), first.get("input")
    if kind == "int_parsing":
        message = f"{name} must be a whole number, got {given!r}"
    elif kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(request.scope.get("route"), name)
        message = f"{name} must be between {low} and {high}, got {given}"
    else:
        message = f"{name}: {first.get('msg', 'invalid')}"
    return answer(400, message, page=is_page(request))


def _bounds(route: object, name: str) -> tuple[Any, Any]:
    """The ``ge`` and ``le`` of the route's query parameter ``name``."""
    low = high = None
    fields = route.dependant.query_params if isinstance(route, APIRoute) else []
    for field in fields:
        if field.alias == name:
            for rule in field.field_info.metadata:
                low = getattr(rule, "ge", low)
                high = getattr(rule, "le", high)
    return low, high


def install(app: FastAPI) -> None:
    """Register the handlers (an unexpected exception is caught by the app's middleware)."""
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    for kind in (
        HttpError,
        BasewatchError,
        psycopg.Error,
        PoolTimeout,
        TooManyRequests,
        PoolClosed,
    ):
        app.add_exception_handler(kind, on_error)
