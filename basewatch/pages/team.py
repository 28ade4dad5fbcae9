"""The managers' pages: the team (``/team``: each CSM's alerts over a window, the share acted
on and the value won, ``signals.team_figures``) and the monthly NRR report rendered in the app
(``/reports/nrr?month=YYYY-MM``: the same page ``basewatch nrr report`` writes,
``nrr.report``). Both are for the manager and admin roles (a csm gets 403, as for ``/nrr``)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from basewatch.pages.render import page
from basewatch.web import HttpError, Request, Response, html_response, month_query, principal_of

if TYPE_CHECKING:
    from basewatch.api.context import Api

WINDOWS = (30, 90, 365)  # days the team page can look back
DEFAULT_WINDOW = 90


def page_team(api: Api, request: Request) -> Response:
    from signals.alerts import unowned_active
    from signals.team_figures import alerts_per_csm

    text = request.single(("days",)).get("days") or str(DEFAULT_WINDOW)
    if not text.isdigit() or int(text) not in WINDOWS:
        raise HttpError(400, f"days must be one of {', '.join(map(str, WINDOWS))}")
    days = int(text)
    now = dt.datetime.now(dt.UTC)
    with api.database() as conn:
        team = alerts_per_csm(conn, now - dt.timedelta(days=days), now)
        unowned = unowned_active(conn)
    return page(
        "team.html",
        principal_of(request),
        team=team,
        days=days,
        windows=WINDOWS,
        unowned=unowned,
        currency=api.config.reporting_currency,
    )


def page_nrr_report(api: Api, request: Request) -> Response:
    """The report of ``?month=`` (default: the ledger's last month), with a way back."""
    from core.months import format_month
    from nrr.headline import checked_state
    from nrr.report import build_report, report_page

    month = month_query(request)
    currency = api.config.reporting_currency
    with api.database() as conn:
        state, month = checked_state(conn, currency, month)
        report = build_report(
            conn, currency, month, attribution_window_days=api.config.attribution_window_days
        )
    months = [format_month(state.first_month), format_month(state.last_month)]
    back = (
        '<p><a href="/">basewatch</a> · <a href="/team">team</a> · NRR report of '
        f"{format_month(month)} (ledger {months[0]} to {months[1]}: "
        "<code>?month=YYYY-MM</code>)</p>"
    )
    text = report_page(report).replace(
        '<meta charset="utf-8">',
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width, '
        'initial-scale=1">',
        1,
    )
    return html_response(text.replace("<body>", "<body>" + back, 1))
