"""The account pages: a CSM's accounts (``/csm/<id>/accounts``; every account at
``/accounts`` for managers and admins) and one account (``/accounts/<id>``).

The account list, one row per account: health (the latest recorded churn probability, or the
weighted score of the documented fallback, ``signals.health``, labelled as such), MRR of the
latest ledger month and its change over the 3 months before, the next renewal or end of a
contract in force, active alerts by family, and when data last arrived. ``?sort=`` takes one of
:data:`SORTS` (unknown: 400); figures that are absent sort last.

The account page: contracts and their next renewal, MRR month by month from the ledger
(:data:`MRR_MONTHS`), air delivered per day from the daily rollups (:data:`USAGE_DAYS` up to the
last day with data), the machines with last reading, running hours and the life used of each
component (running hours since it was fitted against its rated life), active and past alerts
with their outcomes, and the health factors with their figures.

Scope: a csm sees only the accounts whose ``csm_id`` is theirs; another account reads as
unknown (404, the same message as a missing one)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from basewatch.pages.alerts import FAMILIES, csm_in_scope
from basewatch.pages.charts import bar_chart
from basewatch.pages.render import page, quoted
from basewatch.web import Conn, HttpError, Principal, Request, Response, principal_of, redirect
from core.errors import NotFound

if TYPE_CHECKING:
    from basewatch.api.context import Api
    from core.contracts import Contract
    from core.registry import AccountRow

PAGE_ACCOUNTS = 200  # rows of one account list page (?offset= for the next)
SORTS = ("name", "health", "mrr", "trend", "renewal", "alerts", "last_data")
SORT_LABELS = {
    "name": "Account",
    "health": "Health",
    "mrr": "MRR",
    "trend": "3-month trend",
    "renewal": "Next renewal",
    "alerts": "Active alerts",
    "last_data": "Last data",
}
TREND_MONTHS = 3
MRR_MONTHS = 24
USAGE_DAYS = 90
PAST_ALERTS = 50  # closed alerts shown on the account page
FIRST_LEDGER_MONTH = dt.date(2000, 1, 1)

# What a health feature is, for a person (never the raw field name).
FEATURE_LABELS = {
    "usage_change": "Usage change, last 28 days against the 84 before",
    "usage_volatility": "Week-to-week usage variation",
    "silent_share": "Share of machines silent for 2 days",
    "third_party_parts": "Parts replaced without a service order (180 days)",
    "days_to_renewal": "Days to the next renewal",
    "manual_renewal": "Renews manually",
    "no_renewal": "Does not renew",
    "notice_days": "Notice period (days)",
    "tenure_years": "Customer for (years)",
    "contracts_ended": "Contracts ended (180 days)",
}
KIND_LABELS = {"fixed": "fixed fee", "metered": "metered", "addon": "add-on"}
PERIOD_LABELS = {
    "month": "monthly",
    "quarter": "quarterly",
    "year": "yearly",
    "multi_year": "multi-year",
}


@dataclass(frozen=True)
class AccountLine:
    """One row of the account list."""

    account: AccountRow
    health: dict[str, Any] | None
    mrr: Decimal | None
    mrr_month: dt.date | None
    trend: Decimal | None  # MRR change over TREND_MONTHS months, reporting currency
    trend_share: float | None  # the same as a share of the earlier MRR
    renewal: tuple[dt.date, str] | None
    alerts: dict[str, int]
    last_data: dt.datetime | None

    @property
    def active_alerts(self) -> int:
        return sum(self.alerts.values())


def page_all_accounts(api: Api, request: Request) -> Response:
    principal = principal_of(request)
    if principal.scope is not None:  # a csm has one list: theirs
        request.single(("sort", "q", "offset"))
        return redirect("/csm/" + quoted(principal.scope) + "/accounts")
    return _account_list(api, request, principal, None, "")


def page_csm_accounts(api: Api, request: Request) -> Response:
    principal = principal_of(request)
    csm_id = request.params[0]
    with api.database() as conn:
        name = csm_in_scope(conn, principal, csm_id)
    return _account_list(api, request, principal, csm_id, name)


def _account_list(
    api: Api, request: Request, principal: Principal, csm_id: str | None, name: str
) -> Response:
    from core.registry import accounts_of

    query = request.single(("sort", "q", "offset"))
    sort = query.get("sort") or "name"
    if sort not in SORTS:
        raise HttpError(400, f"unknown sort {sort!r} (use {', '.join(SORTS)})")
    offset_text = query.get("offset") or "0"
    if not offset_text.isdigit() or int(offset_text) >= 2**31:
        raise HttpError(400, "offset must be a whole number of accounts to skip")
    offset, wanted = int(offset_text), query.get("q", "").strip()
    today = dt.datetime.now(dt.UTC).date()
    with api.database() as conn:
        accounts = [a for a in accounts_of(conn, csm_id) if _matches(a, wanted)]
        lines = account_lines(conn, accounts, csm_id, today)
    ordered = sort_lines(lines, sort)
    return page(
        "accounts.html",
        principal,
        csm_id=csm_id,
        name=name,
        lines=ordered[offset : offset + PAGE_ACCOUNTS],
        total=len(ordered),
        offset=offset,
        page_size=PAGE_ACCOUNTS,
        q=wanted,
        sort=sort,
        sorts=SORT_LABELS,
        families=FAMILIES,
        currency=api.config.reporting_currency,
        path=("/csm/" + quoted(csm_id) + "/accounts") if csm_id else "/accounts",
    )


def _matches(account: AccountRow, wanted: str) -> bool:
    """Whether ``wanted`` (the ``?q=`` filter) is part of the account's id or name, ignoring
    case; an empty filter matches every account."""
    folded = wanted.casefold()
    return folded in account.account_id.casefold() or folded in (account.name or "").casefold()


def account_lines(
    conn: Conn, accounts: list[AccountRow], owner: str | None, today: dt.date
) -> list[AccountLine]:
    """The list's figures of ``accounts`` (``owner``: the CSM whose alerts count, None: all)."""
    from core.contract_store import contracts_of
    from ingest.last_seen import last_reading_per_account
    from nrr.account_mrr import mrr_history
    from signals.alerts import active_by_account_family
    from signals.health import latest_health

    ids = [a.account_id for a in accounts]
    health = {h["account_id"]: h for h in latest_health(conn, accounts=ids)}
    this_month = today.replace(day=1)
    history = mrr_history(conn, ids, FIRST_LEDGER_MONTH, this_month)
    contracts = contracts_of(conn, ids)
    alerts = active_by_account_family(conn, owner)
    last_data = last_reading_per_account(conn, ids)
    lines = []
    for account in accounts:
        months = history.get(account.account_id, [])
        mrr = months[-1].total if months else None
        trend = trend_share = None
        if len(months) > TREND_MONTHS:
            earlier = months[-1 - TREND_MONTHS].total
            assert mrr is not None
            trend = mrr - earlier
            trend_share = float(trend / earlier) if earlier else None
        lines.append(
            AccountLine(
                account,
                health.get(account.account_id),
                mrr,
                months[-1].month if months else None,
                trend,
                trend_share,
                next_renewal_of(contracts.get(account.account_id, []), today),
                alerts.get(account.account_id, {}),
                last_data.get(account.account_id),
            )
        )
    return lines


def next_renewal_of(contracts: list[Contract], today: dt.date) -> tuple[dt.date, str] | None:
    """The earliest next renewal or end among the contracts in force ``today``."""
    from core.contracts import in_force, next_renewal

    found = [r for c in contracts if in_force(c, today) and (r := next_renewal(c, today))]
    return min(found, default=None)


def sort_lines(lines: list[AccountLine], sort: str) -> list[AccountLine]:
    """``lines`` by ``sort``: riskiest health, largest MRR, steepest decline, soonest renewal,
    most alerts, stalest data first; absent figures last; then by name."""
    keys: dict[str, Any] = {
        "health": lambda x: None if x.health is None else -x.health["probability"],
        "mrr": lambda x: None if x.mrr is None else -x.mrr,
        "trend": lambda x: x.trend_share if x.trend_share is not None else x.trend,
        "renewal": lambda x: None if x.renewal is None else x.renewal[0],
        "alerts": lambda x: -x.active_alerts,
        "last_data": lambda x: x.last_data,
    }
    by_name = sorted(lines, key=lambda x: (x.account.name.lower(), x.account.account_id))
    if sort == "name":
        return by_name
    key = keys[sort]
    return sorted(by_name, key=lambda x: (key(x) is None, key(x) if key(x) is not None else 0))


# -- one account ---------------------------------------------------------------------------


def account_in_scope(conn: Conn, principal: Principal, account_id: str) -> AccountRow:
    """The account; NotFound for an unknown one and for another csm's (no leak)."""
    from core.registry import accounts_of

    found = accounts_of(conn, account_id=account_id)
    if not found or principal.scope not in (None, found[0].csm_id):
        raise NotFound(f"no account {account_id!r}")
    return found[0]


def page_account(api: Api, request: Request) -> Response:
    from core.contract_store import contracts_of
    from core.contracts import monthly_fee, next_renewal
    from core.registry import assets_of, components_of
    from ingest.last_seen import last_readings
    from nrr.account_mrr import mrr_history
    from signals.alerts import list_alerts
    from signals.asset_status import air_delivered_per_day, running_hours
    from signals.health import latest_factors

    request.single(())
    principal = principal_of(request)
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    currency = api.config.reporting_currency
    with api.database() as conn:
        account = account_in_scope(conn, principal, request.params[0])
        account_id = account.account_id
        contracts = contracts_of(conn, [account_id]).get(account_id, [])
        # the ledger's last MRR_MONTHS months of the account, however old the ledger is
        months = mrr_history(conn, [account_id], FIRST_LEDGER_MONTH, today.replace(day=1))
        months = {a: m[-MRR_MONTHS:] for a, m in months.items()}
        assets = assets_of(conn, account_id)
        asset_ids = [a.asset_id for a in assets]
        seen = last_readings(conn, asset_ids)
        hours = running_hours(conn, asset_ids)
        components = components_of(conn, account_id)
        usage_end = max(seen.values(), default=now).date()
        usage = air_delivered_per_day(
            conn, asset_ids, usage_end - dt.timedelta(days=USAGE_DAYS - 1), usage_end
        )
        alerts = list_alerts(conn, account=account_id, limit=PAST_ALERTS + 500)
        health = latest_factors(conn, account_id)
    active = [a for a in alerts if a["status"] in ("open", "acknowledged")]
    past = [a for a in alerts if a["status"] not in ("open", "acknowledged")][:PAST_ALERTS]
    history = months.get(account_id, [])
    return page(
        "account.html",
        principal,
        account=account,
        currency=currency,
        contracts=[
            {
                "contract": c,
                "kind": KIND_LABELS.get(c.kind, c.kind),
                "period": PERIOD_LABELS.get(c.billing_period, c.billing_period),
                "per_month": monthly_fee(c) if c.kind != "metered" else None,
                "next": next_renewal(c, today),
                "in_force": c.end_date is None or c.end_date >= today,
            }
            for c in contracts
        ],
        renewal=next_renewal_of(contracts, today),
        mrr_rows=history,
        mrr_chart=bar_chart(
            f"MRR by month ({currency}, fixed + metered)",
            [m.month.strftime("%Y-%m") for m in history],
            [float(m.total) for m in history],
            f"MRR ({currency})",
            [f"{m.total:,.2f} {currency}" for m in history],
        )
        if history
        else "",
        usage_chart=bar_chart(
            "Air delivered per day (m³, all machines)",
            [d.strftime("%d %b") for d, _ in usage],
            [v for _, v in usage],
            "air delivered (m³/day)",
            [f"{v:,.0f} m³" for _, v in usage],
        )
        if usage
        else "",
        usage_days=len(usage),
        machines=[
            {
                "asset": a,
                "last_seen": seen.get(a.asset_id),
                "running_hours": hours.get(a.asset_id),
                "components": [
                    _life(c, hours.get(a.asset_id)) for c in components if c.asset_id == a.asset_id
                ],
            }
            for a in assets
        ],
        active=active,
        past=past,
        health=health,
        factors=[
            {**f, "label": FEATURE_LABELS.get(f["feature"], f["feature"].replace("_", " "))}
            for f in (health or {}).get("top", [])
        ],
        features=[
            (FEATURE_LABELS.get(k, k.replace("_", " ")), v)
            for k, v in (health or {}).get("features", {}).items()
        ],
    )


def _months_before(month: dt.date, count: int) -> dt.date:
    from core.months import add_months

    return add_months(month, -count)


def _life(component: Any, running: float | None) -> dict[str, Any]:
    """A component's life used: running hours since it was fitted / its rated life (None
    without a running-hours reading)."""
    rated = float(component.rated_life_hours)
    used = (
        None if running is None else max(running - float(component.installed_at_running_hours), 0)
    )
    share = None if used is None or rated <= 0 else used / rated
    state = "" if share is None else ("late" if share >= 1 else "near" if share >= 0.8 else "")
    return {
        "name": component.kind.replace("_", " "),
        "rated": rated,
        "used": used,
        "share": share,
        "width": 0 if share is None else min(round(share * 100), 100),
        "state": state,
    }
