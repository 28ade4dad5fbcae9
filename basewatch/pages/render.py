"""Rendering the pages: one Jinja2 environment over ``basewatch/templates`` (autoescape on
for every template, whatever its name, so an account called ``<script>`` is text), the filters
the templates share (money always with its currency, dates, percentages), the CSRF field of a
form, and the error page."""

from __future__ import annotations

import datetime as dt
import functools
import urllib.parse
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any

import jinja2

from basewatch.web import Principal, Response, html_response


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment, built on first use (nothing happens at import time)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("basewatch", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["day"] = day
    env.filters["minute"] = minute
    env.filters["percent"] = percent
    env.filters["quantity"] = quantity
    env.filters["words"] = words
    env.globals["url"] = url
    return env


def render(template: str, principal: Principal | None = None, **context: Any) -> str:
    from basewatch.auth import csrf_token

    session = principal is not None and principal.via == "session"
    csrf = csrf_token(principal.session_id) if session and principal else ""
    return environment().get_template(template).render(principal=principal, csrf=csrf, **context)


def page(template: str, principal: Principal | None = None, **context: Any) -> Response:
    return html_response(render(template, principal, **context))


def render_error(status: int, message: str) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return render("error.html", None, status=status, phrase=phrase, message=message)


def money(amount: Any, currency: str, places: int = 2) -> str:
    """``1,234.50 EUR``; an empty or unreadable amount is a dash."""
    if amount is None or amount == "":
        return "–"
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return str(amount)
    return f"{value:,.{places}f} {currency}"


def quantity(value: float | None, unit: str, places: int = 0) -> str:
    """``12,345 m³``; None is a dash."""
    if value is None:
        return "–"
    return f"{value:,.{places}f} {unit}"


def day(value: Any) -> str:
    """The date of an ISO time or a date (``2026-12-05``); None is a dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()[:10]
    return str(value)[:10]


def minute(value: Any) -> str:
    """An ISO time to the minute, UTC (``2026-12-05 14:03 UTC``)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).isoformat()
    text = str(value)
    return f"{text[:10]} {text[11:16]} UTC"


def percent(value: Any, places: int = 0) -> str:
    if value is None:
        return "–"
    return f"{float(value) * 100:.{places}f}%"


def words(name: Any) -> str:
    """A field or kind name for a person: ``capacity_saturation`` -> ``capacity saturation``."""
    return str(name).replace("_", " ")


def url(path: str, **params: Any) -> str:
    """``path`` with the non-empty ``params`` as its query."""
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urllib.parse.urlencode(kept) if kept else "")


def quoted(segment: str) -> str:
    """A path segment (an account or CSM id) percent-encoded."""
    return urllib.parse.quote(segment, safe="")
