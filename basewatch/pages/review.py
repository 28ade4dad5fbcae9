"""The business review (QBR) of one account over a period: ``/accounts/<id>/review`` and
``basewatch account review``, one printable HTML page built by :func:`build_review` and
rendered by ``review.html``.

Figures and where they come from (each through its owning package's function):

- **Air, energy, specific power**, per machine and in total, from the daily rollups
  (``signals.asset_status.usage_over_period``): air = the day's mean ``flow_m3_min`` x 1,440,
  energy = the day's mean ``power_kw`` x 24, summed over the days with a reading; specific
  power = energy / air (kWh/m³), absent when either is. Both figures stand on the same basis,
  so a day with readings over part of it counts that part's means for the whole day.
- **Availability**: hours with any reading (hourly rollups) / hours of the period gone by
  (up to now), per machine and over all registered machines (a machine that never reported
  counts as 0 h). Beside it the
  running-hours counter's rise as a share of the period (the machine ran, not only reported).
- **Failures** (``ingest.failures``): the machines' ``failure`` events in the period; one is
  *warned* when a risk or service alert on that machine was opened in the :data:`WARNING_DAYS`
  before it (handled with notice). **Failures avoided** is an association, not a proof: risk
  or service alerts on a machine raised in the period, acted on, and no failure of that
  machine followed before the period's end (dismissed ones left out).
- **Alerts** (``signals.outcomes``): alerts opened in the period, by outcome (still open,
  acknowledged, won, lost, dismissed, expired), how many were acted on (acknowledged, or
  resolved by a person: won, lost, dismissed; as the team page counts) and the value of the
  won ones (per month, as every alert value).
- **Recommendations**: the expansion and service alerts active when the review is built, with
  their value and expected value. Alert money is in the reporting currency.

Period: whole UTC days ``from``..``to``, both included, at most :data:`MAX_DAYS`; without
dates the last full calendar quarter before today. A bad date, ``from`` after ``to`` or a longer
period is an ``InputError`` (400 on the page; usage error, exit 2, on the command line)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from basewatch.pages.render import render
from basewatch.web import Conn, HttpError, Request, Response, html_response, principal_of
from core.errors import InputError

if TYPE_CHECKING:
    from basewatch.api.context import Api
    from core.registry import AccountRow
    from ingest.failures import Failure
    from signals.asset_status import MachinePeriod
    from signals.outcomes import AlertOutcome

MAX_DAYS = 366
WARNING_DAYS = 90  # an alert opened this long before a failure warned of it
WARNING_FAMILIES = ("risk", "service")
RECOMMENDATION_FAMILIES = ("expansion", "service")
RECOMMENDATIONS_SHOWN = 500


# -- the period (pure) ------------------------------------------------------------------------


def last_full_quarter(today: dt.date) -> tuple[dt.date, dt.date]:
    """The calendar quarter before the one ``today`` falls in (first and last day)."""
    this_quarter = dt.date(today.year, (today.month - 1) // 3 * 3 + 1, 1)
    last = this_quarter - dt.timedelta(days=1)
    return dt.date(last.year, (last.month - 1) // 3 * 3 + 1, 1), last


def parse_day(text: str, name: str) -> dt.date:
    """``YYYY-MM-DD``; InputError naming ``name`` otherwise."""
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name}: expected a date YYYY-MM-DD, got {text!r}") from None


def check_period(first: dt.date, last: dt.date) -> None:
    """InputError when ``first`` is after ``last`` or the period is longer than MAX_DAYS."""
    if first > last:
        raise InputError(f"from ({first}) is after to ({last})")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise InputError(
            f"from {first} to {last} is {days} days; a review covers at most {MAX_DAYS}"
        )


def review_period(
    from_text: str | None, to_text: str | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """The period of the dates given; InputError for a bad date, ``from`` after ``to`` or
    more than MAX_DAYS. Neither given: the last full quarter. Only ``from``: through yesterday
    (at most MAX_DAYS, at least the one day). Only ``to``: the 91 days ending on it."""
    quarter = last_full_quarter(today)
    first = parse_day(from_text, "from") if from_text else None
    last = parse_day(to_text, "to") if to_text else None
    if first is None and last is None:
        first, last = quarter
    elif last is None:
        assert first is not None
        last = max(first, min(today - dt.timedelta(days=1), first + dt.timedelta(MAX_DAYS - 1)))
    elif first is None:
        first = last - dt.timedelta(days=90)
    check_period(first, last)
    return first, last


# -- the figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineLine:
    asset_id: str
    model: str
    site: str
    air_m3: float | None
    energy_kwh: float | None
    hours_reported: int
    running_hours: float | None
    period_hours: int  # the hours of the period that have passed

    @property
    def specific_power(self) -> float | None:
        """kWh per m³ of air delivered (None without both figures, or no air)."""
        return specific_power(self.energy_kwh, self.air_m3)

    @property
    def availability(self) -> float | None:
        """Hours with readings / hours passed (None for a period still to come)."""
        return self.hours_reported / self.period_hours if self.period_hours else None

    @property
    def running_share(self) -> float | None:
        if self.running_hours is None or not self.period_hours:
            return None
        return self.running_hours / self.period_hours


@dataclass(frozen=True)
class FailureLine:
    failure: Failure
    warned_by: int | None  # the alert that warned of it, if any


@dataclass(frozen=True)
class Review:
    """Everything the review page shows (money in ``currency``)."""

    account: AccountRow
    first: dt.date
    last: dt.date
    currency: str
    built_at: dt.datetime
    machines: list[MachineLine]
    failures: list[FailureLine]
    avoided: list[AlertOutcome]  # warnings acted on with no failure of the machine since
    alerts: list[AlertOutcome]  # opened in the period
    recommendations: list[dict[str, Any]]  # active expansion and service alerts (JSON-ready)
    air_per_day: list[tuple[dt.date, float]]  # m³, all machines, days with a reading

    def air_chart(self) -> str:
        """The air delivered per day as an inline SVG bar chart ("" without data)."""
        from basewatch.pages.charts import bar_chart

        if not self.air_per_day:
            return ""
        return bar_chart(
            "Air delivered per day (m³, all machines)",
            [d.strftime("%d %b") for d, _ in self.air_per_day],
            [v for _, v in self.air_per_day],
            "air delivered (m³/day)",
            [f"{v:,.0f} m³" for _, v in self.air_per_day],
        )

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def air_m3(self) -> float | None:
        return _total(m.air_m3 for m in self.machines)

    @property
    def energy_kwh(self) -> float | None:
        return _total(m.energy_kwh for m in self.machines)

    @property
    def specific_power(self) -> float | None:
        # over the machines with both figures, so one without a power reading does not lower it
        both = [m for m in self.machines if m.air_m3 and m.energy_kwh is not None]
        return specific_power(_total(m.energy_kwh for m in both), _total(m.air_m3 for m in both))

    @property
    def availability(self) -> float | None:
        passed = sum(m.period_hours for m in self.machines)
        return sum(m.hours_reported for m in self.machines) / passed if passed else None

    @property
    def outcomes(self) -> dict[str, int]:
        from signals.alerts import STATUSES

        counted = Counter(a.status for a in self.alerts)
        return {status: counted.get(status, 0) for status in STATUSES}

    @property
    def acted_on(self) -> int:
        return sum(a.acted_on for a in self.alerts)

    @property
    def won_value(self) -> Decimal:
        return sum((a.value for a in self.alerts if a.status == "won"), Decimal(0))

    @property
    def recommended_value(self) -> Decimal:
        return sum((Decimal(r["value"]) for r in self.recommendations), Decimal(0))

    @property
    def recommended_expected_value(self) -> Decimal:
        return sum((Decimal(r["expected_value"]) for r in self.recommendations), Decimal(0))

    def document(self) -> dict[str, Any]:
        """The figures as JSON-ready data (money as strings, as the other ``--json`` output)."""
        return {
            "account_id": self.account.account_id,
            "account_name": self.account.name,
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "days": self.days,
            "currency": self.currency,
            "air_m3": _rounded(self.air_m3),
            "energy_kwh": _rounded(self.energy_kwh),
            "specific_power_kwh_m3": _rounded(self.specific_power, 4),
            "availability": _rounded(self.availability, 4),
            "machines": [
                {
                    "asset_id": m.asset_id,
                    "air_m3": _rounded(m.air_m3),
                    "energy_kwh": _rounded(m.energy_kwh),
                    "specific_power_kwh_m3": _rounded(m.specific_power, 4),
                    "hours_reported": m.hours_reported,
                    "availability": _rounded(m.availability, 4),
                    "running_hours": _rounded(m.running_hours),
                }
                for m in self.machines
            ],
            "failures": {
                "count": len(self.failures),
                "warned": sum(f.warned_by is not None for f in self.failures),
                "avoided": len(self.avoided),
            },
            "alerts": {
                "raised": len(self.alerts),
                "acted_on": self.acted_on,
                "outcomes": self.outcomes,
                "won_value": str(self.won_value),
            },
            "recommendations": {
                "count": len(self.recommendations),
                "value": str(self.recommended_value),
                "expected_value": str(self.recommended_expected_value),
            },
        }


def specific_power(energy_kwh: float | None, air_m3: float | None) -> float | None:
    if energy_kwh is None or not air_m3:
        return None
    return energy_kwh / air_m3


def _total(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _rounded(value: float | None, places: int = 1) -> float | None:
    return None if value is None else round(value, places)


def build_review(
    conn: Conn,
    account: AccountRow,
    first: dt.date,
    last: dt.date,
    currency: str,
    now: dt.datetime,
) -> Review:
    """The review of ``account`` over the UTC days ``first``..``last``."""
    from core.registry import assets_of
    from ingest.failures import failures_between
    from signals.alerts import list_alerts
    from signals.asset_status import air_delivered_per_day, usage_over_period
    from signals.outcomes import alerts_opened_between

    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    assets = assets_of(conn, account.account_id)
    asset_ids = [a.asset_id for a in assets]
    usage = usage_over_period(conn, asset_ids, first, last)
    failures = failures_between(conn, asset_ids, start, end)
    alerts = alerts_opened_between(
        conn, account.account_id, start - dt.timedelta(days=WARNING_DAYS), end
    )
    active = list_alerts(
        conn, account=account.account_id, status="active", limit=RECOMMENDATIONS_SHOWN
    )
    # a period that reaches past now counts only its hours gone by (a review of this quarter
    # so far is not diluted by the weeks to come)
    hours = max(int((min(end, now) - start).total_seconds() // 3600), 0)
    machines = [
        _machine_line(a.asset_id, a.model or "", a.site or "", usage.get(a.asset_id), hours)
        for a in assets
    ]
    in_period = [a for a in alerts if a.opened_at >= start]
    return Review(
        account=account,
        first=first,
        last=last,
        currency=currency,
        built_at=now,
        machines=machines,
        failures=[FailureLine(f, warning_for(f, alerts)) for f in failures],
        avoided=avoided(in_period, failures),
        alerts=in_period,
        recommendations=[r for r in active if r["family"] in RECOMMENDATION_FAMILIES],
        air_per_day=air_delivered_per_day(conn, asset_ids, first, last),
    )


def _machine_line(
    asset_id: str, model: str, site: str, usage: MachinePeriod | None, hours: int
) -> MachineLine:
    if usage is None:
        return MachineLine(asset_id, model, site, None, None, 0, None, hours)
    return MachineLine(
        asset_id,
        model,
        site,
        usage.air_m3,
        usage.energy_kwh,
        min(usage.hours_reported, hours),
        usage.running_hours,
        hours,
    )


def warning_for(failure: Failure, alerts: list[AlertOutcome]) -> int | None:
    """The first risk or service alert on the failed machine opened in the WARNING_DAYS
    before the failure, or None."""
    since = failure.time - dt.timedelta(days=WARNING_DAYS)
    for alert in alerts:
        if (
            alert.asset_id == failure.asset_id
            and alert.family in WARNING_FAMILIES
            and since <= alert.opened_at <= failure.time
        ):
            return alert.alert_id
    return None


def avoided(alerts: list[AlertOutcome], failures: list[Failure]) -> list[AlertOutcome]:
    """Risk or service alerts on a machine, acted on and not dismissed, with no failure of
    that machine after the alert was opened (within the failures given: the period's)."""
    return [
        a
        for a in alerts
        if a.family in WARNING_FAMILIES
        and a.asset_id
        and a.acted_on
        and a.status != "dismissed"
        and not any(f.asset_id == a.asset_id and f.time >= a.opened_at for f in failures)
    ]


# -- the page ---------------------------------------------------------------------------------


def render_review(review: Review, principal: Any = None, *, standalone: bool = False) -> str:
    """The review as HTML: the page (with navigation for ``principal``) or, ``standalone``,
    the file ``basewatch account review`` writes (no navigation, no links back)."""
    return render(
        "review.html",
        None if standalone else principal,
        review=review,
        currency=review.currency,
        standalone=standalone,
        warning_days=WARNING_DAYS,
    )


def page_review(api: Api, request: Request) -> Response:
    from basewatch.pages.accounts import account_in_scope

    query = request.single(("from", "to"))
    principal = principal_of(request)
    now = dt.datetime.now(dt.UTC)
    try:
        first, last = review_period(query.get("from"), query.get("to"), now.date())
    except InputError as exc:
        raise HttpError(400, str(exc)) from None
    with api.database() as conn:
        account = account_in_scope(conn, principal, request.params[0])
        review = build_review(conn, account, first, last, api.config.reporting_currency, now)
    return html_response(render_review(review, principal))
