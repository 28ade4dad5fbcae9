"""Attribution of expansion and churn to the signals' alerts: association, never causation.

nrr reads the alerts of the signals package through the view signals publishes for it,
``alert_outcomes`` (columns ``account_id``, ``family``, ``status``, ``opened_at``,
``acknowledged_at``, ``closed_at``; see signals/migrations/008_alert_outcomes.sql), never the
``alerts`` table, and never imports signals.

Definitions (times in UTC; a month's MRR is its run rate on its last day, so an expansion or a
churn of month M is dated at the end of M, the first instant of M + 1):

* An expansion-family alert is **acted on** when it was acknowledged or won and not dismissed
  (a CSM who dismissed it said the signal was wrong, even after acknowledging it). Its *action
  time* is when it was acknowledged, or, for an alert won without an acknowledgement, when it
  was won. An alert opened long ago and acknowledged recently counts from its acknowledgement;
  an alert acknowledged after the expansion does not count for it.
* The expansion of an account in month M (movement kind ``expansion``; new and reactivation
  are not expansion) is **signal-influenced** when an acted-on expansion alert of that account
  has its action time in the ``window_days`` days before the end of M
  (``BASEWATCH_ATTRIBUTION_WINDOW_DAYS``, default 90): end of M − window <= action < end of M.
  The whole expansion amount of the account in M is then influenced.
* The churn of an account in month M is **flagged** when a risk-family alert of that account
  was open at the start of M: opened before M and not closed (won, lost, dismissed, expired)
  before M. Otherwise it is **unflagged**. An alert raised during the churn month is too late
  to count.
* **NRR without signal-influenced expansion**, month over month: (start + expansion −
  influenced − contraction − churn) / start over the NRR cohort (MRR > 0 last month). Over the
  trailing 12 months: (Σ MRR_t − removed) / Σ MRR_{t−12} over the T12M NRR cohort, where
  removed = Σ over cohort accounts of min(their influenced expansion in the 12 months, their
  expansion over the window max(MRR_t − MRR_{t−12}, 0)): an account that expanded and gave it
  back adds nothing to the NRR, so nothing is taken out, and the figure never drops below GRR.
  It is a bookkeeping figure ("the NRR had that expansion not been booked"), not a claim that
  the expansion would not have happened without the alert.

Absent, not zero: when there is no ``alert_outcomes`` view (signals not installed) or it holds no
alert, every attributed figure is None (null, an empty CSV cell) and the status says why; a
month that ended before the first alert was opened is "not measured" too. A trailing window
that starts before the first alert is "partly measured": its expansion, churn and attributed
figures are summed over its months from the first alert's month on (so unmeasured churn is
never counted as unflagged), while its NRR and NRR without stay those of the T12M cohort.

Amounts are the movements' (reporting currency, constant currency against the month before).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from core.money import ZERO, money_text, percent_text, ratio
from core.months import add_months, format_month
from nrr.bridge import bridges
from nrr.ledger import ledger_state, read_settings
from nrr.metrics import MonthOverMonth, Trailing
from nrr.retention import trailing, trailing_series

DEFAULT_WINDOW_DAYS = 90
TRAILING_MONTHS = 12
MEASURED, PARTLY, NOT_MEASURED = "measured", "partly measured", "not measured"
DEFINITION = (
    "Signal-influenced expansion: an account's expansion in a month when one of its "
    "expansion alerts was acknowledged or won (and not dismissed) in the {window} days before "
    "the month's end. Flagged churn: a risk alert of the account was open at the start of the "
    "churn month; otherwise unflagged. NRR without signal-influenced expansion = (start + "
    "expansion - influenced - contraction - churn) / start over the NRR cohort (trailing 12 "
    "months: influenced expansion capped at each account's expansion over the window). "
    "Association, bookkeeping only: not a claim that the signals caused the revenue."
)


# -- pure rules --------------------------------------------------------------------------------


def month_start(month: dt.date) -> dt.datetime:
    return dt.datetime.combine(month, dt.time(), dt.UTC)


def month_end(month: dt.date) -> dt.datetime:
    """The end of ``month``: the first instant of the next month, UTC."""
    return month_start(add_months(month, 1))


@dataclass(frozen=True)
class AlertFacts:
    """The columns of an ``alert_outcomes`` row that attribution reads."""

    family: str
    status: str
    opened_at: dt.datetime
    acknowledged_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None

    @property
    def acted_at(self) -> dt.datetime | None:
        """When an expansion alert was acted on (acknowledged, else won), or None."""
        if self.status == "dismissed":
            return None
        if self.acknowledged_at is not None:
            return self.acknowledged_at
        return self.closed_at if self.status == "won" else None

    def influences(self, month: dt.date, window_days: int) -> bool:
        """Does this alert make the account's expansion in ``month`` signal-influenced?"""
        acted = self.acted_at
        end = month_end(month)
        return (
            self.family == "expansion"
            and acted is not None
            and end - dt.timedelta(days=window_days) <= acted < end
        )

    def flags(self, churn_month: dt.date) -> bool:
        """Was this risk alert open at the start of ``churn_month``?"""
        start = month_start(churn_month)
        return (
            self.family == "risk"
            and self.opened_at < start
            and (self.closed_at is None or self.closed_at >= start)
        )


def nrr_without(
    start: Decimal, expansion: Decimal, influenced: Decimal, contraction: Decimal, churn: Decimal
) -> Decimal | None:
    """(start + expansion − influenced − contraction − churn) / start; None for no cohort."""
    return ratio(start + expansion - influenced - contraction - churn, start)


# -- what the database holds -----------------------------------------------------------------


@dataclass(frozen=True)
class AlertCoverage:
    """Whether alerts can be read at all, and since when they exist."""

    table_exists: bool
    alerts: int = 0
    first_opened_at: dt.datetime | None = None

    @property
    def usable(self) -> bool:
        return self.table_exists and self.alerts > 0

    @property
    def reason(self) -> str:
        """Why nothing is measured ("" when alerts exist)."""
        if not self.table_exists:
            return "no alerts table (the signals package is not installed)"
        if not self.alerts:
            return "no alerts recorded"
        return ""

    def covers(self, month: dt.date) -> bool:
        """Did alerts exist before ``month`` ended?"""
        return (
            self.usable
            and self.first_opened_at is not None
            and self.first_opened_at < month_end(month)
        )

    def document(self) -> dict[str, Any]:
        return {
            "table": self.table_exists,
            "count": self.alerts,
            "first_opened_at": self.first_opened_at.isoformat() if self.first_opened_at else None,
        }


def alert_coverage(conn: psycopg.Connection[TupleRow]) -> AlertCoverage:
    row = conn.execute("SELECT to_regclass('alert_outcomes') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return AlertCoverage(False)
    found = conn.execute("SELECT count(*), min(opened_at) FROM alert_outcomes").fetchone()
    assert found is not None
    return AlertCoverage(True, int(found[0]), found[1])


@dataclass(frozen=True)
class PeriodAttribution:
    """Attribution figures of one month, or of a trailing window ending at ``last_month``.

    The attributed figures (influenced, flagged, unflagged, NRR without) are None when not
    measured; the expansion, churn and NRR beside them always are."""

    first_month: dt.date
    last_month: dt.date
    status: str
    note: str
    expansion: Decimal
    expansion_accounts: int
    churn: Decimal
    churn_accounts: int
    cohort_size: int
    start_mrr: Decimal
    nrr: Decimal | None
    influenced_expansion: Decimal | None = None
    influenced_accounts: int | None = None
    flagged_churn: Decimal | None = None
    flagged_accounts: int | None = None
    # influenced expansion taken out of the NRR (None without a cohort or a measurement)
    removed_expansion: Decimal | None = None
    nrr_without_influenced: Decimal | None = None
    summed_from: dt.date | None = None  # partly measured: expansion and churn from this month

    @property
    def measured_label(self) -> str:
        """The months whose expansion and churn the figures sum."""
        if self.summed_from is None or self.summed_from == self.first_month:
            return self.label
        return f"{format_month(self.summed_from)}..{format_month(self.last_month)}"

    @property
    def label(self) -> str:
        if self.first_month == self.last_month:
            return format_month(self.last_month)
        return f"{format_month(self.first_month)}..{format_month(self.last_month)}"

    @property
    def unflagged_churn(self) -> Decimal | None:
        return None if self.flagged_churn is None else self.churn - self.flagged_churn

    @property
    def unflagged_accounts(self) -> int | None:
        return (
            None if self.flagged_accounts is None else self.churn_accounts - self.flagged_accounts
        )

    def document(self) -> dict[str, Any]:
        def money(value: Decimal | None) -> str | None:
            return None if value is None else money_text(value)

        def pct(value: Decimal | None) -> float | None:
            text = percent_text(value)
            return float(text) if text else None

        return {
            "period": self.label,
            "measured_period": self.measured_label if self.status != NOT_MEASURED else None,
            "status": self.status,
            "note": self.note,
            "expansion": money_text(self.expansion),
            "expansion_accounts": self.expansion_accounts,
            "influenced_expansion": money(self.influenced_expansion),
            "influenced_accounts": self.influenced_accounts,
            "churn": money_text(self.churn),
            "churn_accounts": self.churn_accounts,
            "flagged_churn": money(self.flagged_churn),
            "flagged_accounts": self.flagged_accounts,
            "unflagged_churn": money(self.unflagged_churn),
            "unflagged_accounts": self.unflagged_accounts,
            "cohort_size": self.cohort_size,
            "start_mrr": money_text(self.start_mrr),
            "nrr_pct": pct(self.nrr),
            "removed_expansion": money(self.removed_expansion),
            "nrr_without_influenced_pct": pct(self.nrr_without_influenced),
        }


@dataclass(frozen=True)
class Attribution:
    """Attribution of each month of a trailing window and of the whole window."""

    window_days: int
    coverage: AlertCoverage
    months: list[PeriodAttribution]
    trailing: PeriodAttribution

    @property
    def month(self) -> PeriodAttribution:
        return self.months[-1]

    def document(self) -> dict[str, Any]:
        return {
            "definition": DEFINITION.format(window=self.window_days),
            "window_days": self.window_days,
            "alerts": self.coverage.document(),
            "month": self.month.document(),
            "trailing_12_months": self.trailing.document(),
            "by_month": [m.document() for m in self.months],
        }


def summary_line(found: Attribution, currency: str) -> str:
    """One sentence on the trailing window: how much expansion followed signals, how much
    churn had been flagged, and the NRR without the influenced expansion."""
    window = found.trailing
    if window.influenced_expansion is None or window.flagged_churn is None:
        return f"Signal attribution {window.label}: not measured ({window.note})."
    share = ratio(window.influenced_expansion, window.expansion)
    share_text = f"{percent_text(share, 0)}%, " if share is not None else ""
    nrr = percent_text(window.nrr, 1)
    without = percent_text(window.nrr_without_influenced, 1)
    nrr_text = (
        f"; T12M NRR {nrr}%, {without}% without the influenced expansion" if nrr and without else ""
    )
    caveat = f" [{window.status}: {window.note}]" if window.status != MEASURED else ""
    return (
        f"Signal attribution {window.measured_label}: {window.influenced_expansion:,.2f} of "
        f"{window.expansion:,.2f} {currency} expansion ({share_text}{window.influenced_accounts}"
        f" of {window.expansion_accounts} accounts) followed an expansion alert acted on within "
        f"{found.window_days} days; churn {window.churn:,.2f} {currency}: flagged by an open "
        f"risk alert {window.flagged_churn:,.2f} ({window.flagged_accounts} accounts), unflagged "
        f"{window.churn - window.flagged_churn:,.2f} ({window.unflagged_accounts}){nrr_text}. "
        f"Association, not causation.{caveat}"
    )


# The expansion and churn movements of the window, each marked attributed or not (see the
# module docstring), summed per month, over the window, and per account with influenced
# expansion (for the trailing cap). Alerts are matched by joins on the account (hash joins:
# `alerts`, under the alert_outcomes view, has no index on account_id alone, and a correlated
# EXISTS per movement would scan it once per row).
_ATTRIBUTION = """
WITH moves AS MATERIALIZED (
    SELECT m.month, m.account_id, m.kind, m.amount,
           m.month::timestamp AT TIME ZONE 'UTC' AS month_start,
           (m.month + interval '1 month') AT TIME ZONE 'UTC' AS month_end
    FROM mrr_movements m
    WHERE m.month BETWEEN %(first)s AND %(last)s
      AND m.kind IN ('expansion', 'churn') AND m.amount > 0
      -- months that ended before the first alert are not measured
      AND (m.month + interval '1 month') AT TIME ZONE 'UTC' > %(covered_from)s
), acted AS (
    SELECT account_id,
           coalesce(acknowledged_at, CASE WHEN status = 'won' THEN closed_at END) AS acted_at
    FROM alert_outcomes
    WHERE family = 'expansion' AND status <> 'dismissed'
      AND (acknowledged_at IS NOT NULL OR status = 'won')
), influenced AS (
    SELECT DISTINCT v.month, v.account_id
    FROM moves v JOIN acted a ON a.account_id = v.account_id
    WHERE v.kind = 'expansion'
      AND a.acted_at >= v.month_end - make_interval(days => %(window)s)
      AND a.acted_at < v.month_end
), flagged AS (
    SELECT DISTINCT v.month, v.account_id
    FROM moves v JOIN alert_outcomes r ON r.account_id = v.account_id
    WHERE v.kind = 'churn' AND r.family = 'risk'
      AND r.opened_at < v.month_start
      AND (r.closed_at IS NULL OR r.closed_at >= v.month_start)
), marked AS (
    SELECT v.month, v.account_id, v.kind, v.amount,
           (i.account_id IS NOT NULL OR f.account_id IS NOT NULL) AS attributed
    FROM moves v
    LEFT JOIN influenced i ON i.month = v.month AND i.account_id = v.account_id
    LEFT JOIN flagged f ON f.month = v.month AND f.account_id = v.account_id
)
SELECT GROUPING(month, account_id) AS level, month, account_id,
       coalesce(sum(amount) FILTER (WHERE kind = 'expansion' AND attributed), 0),
       count(DISTINCT account_id) FILTER (WHERE kind = 'expansion' AND attributed),
       coalesce(sum(amount) FILTER (WHERE kind = 'churn' AND attributed), 0),
       count(DISTINCT account_id) FILTER (WHERE kind = 'churn' AND attributed)
FROM marked
GROUP BY GROUPING SETS ((month), (account_id), ())
HAVING GROUPING(account_id) = 1
    OR sum(amount) FILTER (WHERE kind = 'expansion' AND attributed) > 0
"""

_TOTALS = """
SELECT GROUPING(month) AS level, month,
       coalesce(sum(amount) FILTER (WHERE kind = 'expansion'), 0),
       count(DISTINCT account_id) FILTER (WHERE kind = 'expansion'),
       coalesce(sum(amount) FILTER (WHERE kind = 'churn'), 0),
       count(DISTINCT account_id) FILTER (WHERE kind = 'churn')
FROM mrr_movements
WHERE month BETWEEN %(first)s AND %(last)s AND kind IN ('expansion', 'churn') AND amount > 0
GROUP BY GROUPING SETS ((month), ())
"""

_Sums = tuple[Decimal, int, Decimal, int]
_NONE: _Sums = (ZERO, 0, ZERO, 0)


def _sums(row: tuple[Any, ...]) -> _Sums:
    return Decimal(row[0]), int(row[1]), Decimal(row[2]), int(row[3])


def attribution(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date,
    window_days: int = DEFAULT_WINDOW_DAYS,
    *,
    first_movement_month: dt.date | None = None,
    trailing_12: Trailing | None = None,
    trailing_known: bool = False,
) -> Attribution:
    """Attribution of ``month`` and of the 12 months ending with it (from
    ``first_movement_month``, default the ledger's second month, on when the ledger is
    shorter). ``trailing_12`` is the month's
    T12M retention when the caller has it (``trailing_known``), so both show the same NRR."""
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    with read_settings(conn):
        return _attribution(
            conn,
            reporting_currency,
            month,
            window_days,
            first_movement_month,
            trailing_12,
            trailing_known,
        )


def _attribution(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date,
    window_days: int,
    first_movement_month: dt.date | None,
    trailing_12: Trailing | None,
    trailing_known: bool,
) -> Attribution:
    first = add_months(month, -(TRAILING_MONTHS - 1))
    if first_movement_month is None:
        state = ledger_state(conn)
        first_movement_month = add_months(state.first_month, 1) if state else first
    first = min(max(first, first_movement_month), month)
    coverage = alert_coverage(conn)
    params = {"first": first, "last": month}
    totals: dict[dt.date | None, _Sums] = {}
    for level, at, *rest in conn.execute(_TOTALS, params):
        totals[None if level else at] = _sums(tuple(rest))
    measured_from = _measured_from(coverage, first, month)
    if measured_from is not None and measured_from > first:
        # a partly measured window sums expansion and churn over its measured months only, so
        # that unmeasured churn is never counted as unflagged
        totals[None] = _NONE
        for level, _, *rest in conn.execute(_TOTALS, {"first": measured_from, "last": month}):
            if level:
                totals[None] = _sums(tuple(rest))
    attributed: dict[dt.date | None, _Sums] = {}
    influenced_by_account: dict[str, Decimal] = {}
    if coverage.usable:
        assert coverage.first_opened_at is not None
        rows = conn.execute(
            _ATTRIBUTION,
            {**params, "window": window_days, "covered_from": coverage.first_opened_at},
        )
        for level, at, account_id, *rest in rows:
            if level == 1:  # per month
                attributed[at] = _sums(tuple(rest))
            elif level == 2:  # per account
                influenced_by_account[str(account_id)] = Decimal(rest[0])
            else:
                attributed[None] = _sums(tuple(rest))
    months = [
        _month_figures(
            MonthOverMonth.from_bridge(b), totals.get(b.month, _NONE), attributed, coverage
        )
        for b in bridges(conn, first, month)
    ]
    if not trailing_known:
        trailing_12 = trailing_series(conn, reporting_currency, month, month, 12).get(month)
    window = _window_figures(
        conn,
        reporting_currency,
        first,
        month,
        totals.get(None, _NONE),
        attributed.get(None, _NONE),
        influenced_by_account,
        coverage,
        trailing_12,
    )
    return Attribution(window_days, coverage, months, window)


def _measured_from(coverage: AlertCoverage, first: dt.date, last: dt.date) -> dt.date | None:
    """The first month of ``first`` .. ``last`` that ended after the first alert, or None."""
    if not coverage.covers(last) or coverage.first_opened_at is None:
        return None
    opened = coverage.first_opened_at.astimezone(dt.UTC).date()
    return max(first, opened.replace(day=1))


def _month_figures(
    mom: MonthOverMonth,
    total: _Sums,
    attributed: dict[dt.date | None, _Sums],
    coverage: AlertCoverage,
) -> PeriodAttribution:
    month = mom.month
    expansion, expansion_accounts, churn, churn_accounts = total
    base = PeriodAttribution(
        month,
        month,
        MEASURED,
        "",
        expansion,
        expansion_accounts,
        churn,
        churn_accounts,
        mom.cohort_size,
        mom.start,
        mom.nrr,
    )
    if not coverage.usable:
        return _replace(base, status=NOT_MEASURED, note=coverage.reason)
    if not coverage.covers(month):
        return _replace(base, status=NOT_MEASURED, note=_before(coverage))
    influenced, influenced_accounts, flagged, flagged_accounts = attributed.get(month, _NONE)
    return _replace(
        base,
        influenced_expansion=influenced,
        influenced_accounts=influenced_accounts,
        flagged_churn=flagged,
        flagged_accounts=flagged_accounts,
        removed_expansion=influenced,
        nrr_without_influenced=nrr_without(
            mom.start, mom.expansion, influenced, mom.contraction, mom.churn
        ),
    )


def _window_figures(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    first: dt.date,
    last: dt.date,
    total: _Sums,
    attributed: _Sums,
    influenced_by_account: dict[str, Decimal],
    coverage: AlertCoverage,
    trailing_12: Trailing | None,
) -> PeriodAttribution:
    expansion, expansion_accounts, churn, churn_accounts = total
    base = PeriodAttribution(
        first,
        last,
        MEASURED,
        "",
        expansion,
        expansion_accounts,
        churn,
        churn_accounts,
        trailing_12.cohort_size if trailing_12 else 0,
        trailing_12.start_mrr if trailing_12 else ZERO,
        trailing_12.nrr if trailing_12 else None,
    )
    if not coverage.usable:
        return _replace(base, status=NOT_MEASURED, note=coverage.reason)
    if not coverage.covers(last):
        return _replace(base, status=NOT_MEASURED, note=_before(coverage))
    status, note = MEASURED, ""
    assert coverage.first_opened_at is not None
    if coverage.first_opened_at > month_start(first):  # alerts began inside the window
        opened = coverage.first_opened_at.astimezone(dt.UTC).date()
        status = PARTLY
        note = f"{_since(coverage)}; expansion and churn summed from {opened:%Y-%m}"
        base = _replace(base, summed_from=max(first, opened.replace(day=1)))
    removed = (
        _removed(conn, reporting_currency, last, influenced_by_account) if trailing_12 else None
    )
    influenced, influenced_accounts, flagged, flagged_accounts = attributed
    return _replace(
        base,
        status=status,
        note=note,
        influenced_expansion=influenced,
        influenced_accounts=influenced_accounts,
        flagged_churn=flagged,
        flagged_accounts=flagged_accounts,
        removed_expansion=removed,
        nrr_without_influenced=(
            ratio(trailing_12.end_mrr - removed, trailing_12.start_mrr)
            if trailing_12 and removed is not None
            else None
        ),
    )


def _removed(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    month: dt.date,
    influenced_by_account: dict[str, Decimal],
) -> Decimal:
    """Σ over T12M cohort accounts of min(influenced expansion, expansion over the window)."""
    if not influenced_by_account:
        return ZERO
    per_account = trailing(
        conn, reporting_currency, month, month, TRAILING_MONTHS, dimension="account"
    )
    removed = ZERO
    for account_id, influenced in influenced_by_account.items():
        figures = per_account.get((month, account_id))
        if figures is not None:  # not in the cohort: not in the NRR either
            removed += min(influenced, figures.expansion)
    return removed


def _before(coverage: AlertCoverage) -> str:
    assert coverage.first_opened_at is not None
    return f"ended before the first alert ({coverage.first_opened_at:%Y-%m-%d})"


def _since(coverage: AlertCoverage) -> str:
    assert coverage.first_opened_at is not None
    return f"alerts recorded since {coverage.first_opened_at:%Y-%m-%d}"


def _replace(period: PeriodAttribution, **changes: Any) -> PeriodAttribution:
    return dataclasses.replace(period, **changes)
