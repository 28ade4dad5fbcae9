"""The MRR ledger: MRR per account × month × product line (× currency), built in SQL.

Rules (stated in ``nrr``'s docstring, restated on plain data in ``nrr.mrr_rules``): fixed and
addon fees normalised to a month; metered contracts as a run rate of an average month (the
month's billed usage ÷ its days × 30.4375, at least the monthly minimum), the usage billed by
recurring metered invoice lines when they exist for the contract and month, else by
``usage_daily_between`` × unit price; one-offs and taxes never; every contract counted in the
months it is in force on the last day; converted at the month's rate.

:func:`rebuild` recomputes months >= ``since`` (all of them with ``full``) in one transaction,
then the movements of the same months (``nrr.bridge``), and records the ledger's span, its
reporting currency and that it is no longer stale in ``mrr_ledger_state``. Without ``since`` it
continues from what the imports marked stale and from the ledger's last month.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from core.errors import InputError, NotFound
from core.months import (
    add_months,
    format_month,
    last_day,
    months_between,
    previous_complete_month,
)
from nrr.bridge import rebuild_movements
from nrr.mrr_rules import AVERAGE_MONTH_DAYS

log = logging.getLogger(__name__)
MAX_MISSING_RATES_LISTED = 20
# Memory per sort or hash for the rebuild's queries, set for its transaction only: a few million
# rows sort and hash in memory instead of temporary files.
BATCH_WORK_MEM = "256MB"

# The months since .. through (a CTE; an integer series, so the planner knows how many), and the
# join that gives each contract the months it counts in: from its start month to the last month
# it is in force on the last day.
_MONTHS = """
nrr_months AS (
    SELECT (%(since)s::date + i * interval '1 month')::date AS month
    FROM generate_series(0, %(month_count)s - 1) AS i
)"""
_CONTRACT_MONTHS = """
    JOIN nrr_months m
      ON m.month >= date_trunc('month', c.start_date::timestamp)::date
     AND (c.end_date IS NULL
          OR m.month <= (date_trunc('month', (c.end_date + 1)::timestamp)
                         - interval '1 month')::date)
"""
_FORMAT = {"months": sql.SQL(_MONTHS), "contract_months": sql.SQL(_CONTRACT_MONTHS)}

# The metered contract months, each with its invoiced amount per currency (none: telemetry).
_METERED_MONTHS = sql.SQL(
    """
CREATE TEMP TABLE nrr_metered ON COMMIT DROP AS
WITH {months}, invoiced AS (
    SELECT contract_id, period AS month, currency, greatest(sum(amount), 0) AS amount
    FROM invoice_lines
    WHERE recurring AND kind = 'metered' AND period BETWEEN %(since)s AND %(through)s
    GROUP BY contract_id, period, currency
)
SELECT m.month, c.account_id, c.product_line, c.contract_id,
       extract(day FROM m.month + interval '1 month' - interval '1 day')::integer AS days,
       c.currency AS contract_currency, c.unit_price, c.monthly_minimum,
       coalesce(c.unit, 'm3') = 'm3' AS per_m3,
       i.currency AS invoice_currency, i.amount AS invoiced
FROM contracts c
{contract_months}
LEFT JOIN invoiced i ON i.contract_id = c.contract_id AND i.month = m.month
WHERE c.kind = 'metered'
"""
).format(**_FORMAT)

# The assets of accounts with a metered (per m³) contract month in since .. through that no
# recurring metered invoice line bills: per contract, its months in force in the span against the
# distinct months its lines bill (one pass over the lines' partial index, no contract × month
# expansion), so that the telemetry can be read while the metered months are being built.
_GAP_ASSETS = """
WITH spans AS (
    SELECT contract_id, account_id,
           greatest(date_trunc('month', start_date::timestamp)::date, %(since)s::date)
               AS first_month,
           least(CASE WHEN end_date IS NULL THEN %(through)s::date
                      ELSE (date_trunc('month', (end_date + 1)::timestamp)
                            - interval '1 month')::date END,
                 %(through)s::date) AS last_month
    FROM contracts
    WHERE kind = 'metered' AND coalesce(unit, 'm3') = 'm3'
), gaps AS (
    SELECT s.account_id
    FROM spans s
    LEFT JOIN invoice_lines i ON i.recurring AND i.kind = 'metered'
                             AND i.contract_id = s.contract_id
                             AND i.period BETWEEN s.first_month AND s.last_month
    WHERE s.first_month <= s.last_month
    GROUP BY s.contract_id, s.account_id, s.first_month, s.last_month
    HAVING count(DISTINCT i.period)
           < (extract(year FROM s.last_month) - extract(year FROM s.first_month)) * 12
             + extract(month FROM s.last_month) - extract(month FROM s.first_month) + 1
)
SELECT DISTINCT a.asset_id
FROM gaps g JOIN assets a ON a.account_id = g.account_id
ORDER BY a.asset_id
"""

_USAGE = """
SELECT a.account_id, date_trunc('month', d.day::timestamp)::date AS month,
       round(sum(d.volume_m3)::numeric, 3) AS volume_m3
FROM usage_daily_between(%(since)s, %(through_day)s, %(assets)s) d
JOIN assets a ON a.asset_id = d.asset_id
GROUP BY a.account_id, date_trunc('month', d.day::timestamp)
"""

# Parts are summed as whole micro-units of the currency (bigint; local MRR keeps six decimals):
# exact like numeric, and several times cheaper to aggregate over millions of parts.
# Source bits: 1 = metered from invoices, 2 = metered from telemetry.
_INSERT = sql.SQL(
    """
WITH {months}, rates AS (  -- the rate of every month and currency (none: NULL, an error)
    SELECT m.month, f.currency COLLATE "C" AS currency, f.rate
    FROM nrr_months m JOIN fx_rates f ON f.month = m.month
    WHERE f.currency <> %(reporting)s
    UNION ALL
    SELECT month, %(reporting)s COLLATE "C", 1::numeric FROM nrr_months
), fixed_contracts AS MATERIALIZED (  -- each fee per month computed once
    SELECT account_id COLLATE "C" AS account_id, product_line COLLATE "C" AS product_line,
           currency COLLATE "C" AS currency, start_date, end_date,
           (round(fee / CASE billing_period WHEN 'month' THEN 1 WHEN 'quarter' THEN 3
                             WHEN 'year' THEN 12 ELSE term_months END, 6)
            * 1000000)::bigint AS fixed_micro
    FROM contracts
    WHERE kind <> 'metered'
), fixed AS (
    SELECT m.month, c.account_id, c.product_line, c.currency, c.fixed_micro,
           0::bigint AS metered_micro, 0 AS source_bits
    FROM fixed_contracts c
    {contract_months}
), metered AS (
    SELECT g.month, g.account_id COLLATE "C" AS account_id,
           g.product_line COLLATE "C" AS product_line,
           coalesce(g.invoice_currency, g.contract_currency) COLLATE "C" AS currency,
           0::bigint AS fixed_micro,
           -- the month's billed usage as a run rate of an average month, at least the minimum
           (round(greatest(round(CASE WHEN g.invoiced IS NOT NULL THEN g.invoiced
                                      ELSE round(coalesce(u.volume_m3, 0) * g.unit_price, 2)
                                 END * %(average_month_days)s / g.days, 6),
                           coalesce(g.monthly_minimum, 0)), 6)
            * 1000000)::bigint AS metered_micro,
           CASE WHEN g.invoiced IS NOT NULL THEN 1 ELSE 2 END AS source_bits
    FROM nrr_metered g
    LEFT JOIN nrr_usage u ON u.account_id = g.account_id AND u.month = g.month AND g.per_m3
), lines AS (
    -- a contract is one part of a line (metered ones once per invoice currency): count(*).
    -- Each part brings its rate (a hash join on 108-odd rows), so that one sort by month first
    -- groups the parts and orders the insert (no hash table of 1.8 million groups, no re-sort).
    SELECT p.month, p.account_id, p.product_line, p.currency, r.rate,
           sum(p.fixed_micro)::numeric * 0.000001 AS fixed_local,
           sum(p.metered_micro)::numeric * 0.000001 AS metered_local,
           CASE bit_or(p.source_bits) WHEN 1 THEN 'invoices' WHEN 2 THEN 'telemetry'
                                      WHEN 3 THEN 'both' END AS source,
           count(*) AS contracts
    FROM (SELECT * FROM fixed UNION ALL SELECT * FROM metered) AS p
    LEFT JOIN rates r ON r.month = p.month AND r.currency = p.currency
    GROUP BY p.month, p.account_id, p.product_line, p.currency, r.rate
), converted AS (
    SELECT l.*,
           round(l.fixed_local * l.rate, 2) AS fixed_mrr,
           round(l.metered_local * l.rate, 2) AS metered_mrr
    FROM lines l
)
INSERT INTO mrr_ledger (month, account_id, product_line, currency, fixed_mrr_local,
                        metered_mrr_local, mrr_local, rate, fixed_mrr, metered_mrr, mrr,
                        metered_source, contracts)
SELECT month, account_id, product_line, currency, fixed_local, metered_local,
       fixed_local + metered_local, rate, fixed_mrr, metered_mrr, fixed_mrr + metered_mrr,
       source, contracts
FROM converted
ORDER BY month
"""
).format(**_FORMAT)

_MISSING_RATES = sql.SQL(
    """
WITH {months}
SELECT DISTINCT m.month, coalesce(i.currency, c.currency) AS currency
FROM contracts c
{contract_months}
LEFT JOIN invoice_lines i ON c.kind = 'metered' AND i.recurring AND i.kind = 'metered'
                         AND i.contract_id = c.contract_id AND i.period = m.month
WHERE coalesce(i.currency, c.currency) <> %(reporting)s
  AND NOT EXISTS (SELECT 1 FROM fx_rates f
                  WHERE f.month = m.month AND f.currency = coalesce(i.currency, c.currency))
ORDER BY 1, 2
"""
).format(**_FORMAT)


# Whole micro-units in a bigint: the largest monthly local MRR of one ledger part.
MAX_LOCAL_MRR = 9.2e12
_LARGEST = """
WITH amounts AS (
    SELECT contract_id, account_id, currency, 'fee per month' AS what,
           fee / CASE billing_period WHEN 'month' THEN 1 WHEN 'quarter' THEN 3
                                     WHEN 'year' THEN 12 ELSE term_months END AS amount
    FROM contracts WHERE kind <> 'metered'
    UNION ALL
    SELECT contract_id, account_id, currency, 'monthly minimum', monthly_minimum
    FROM contracts WHERE monthly_minimum IS NOT NULL
    UNION ALL
    SELECT contract_id, account_id, currency, 'unit price', unit_price
    FROM contracts WHERE kind = 'metered'
    UNION ALL
    SELECT contract_id, account_id, currency,
           'metered invoice lines of ' || to_char(period, 'YYYY-MM'), sum(amount)
    FROM invoice_lines WHERE recurring AND kind = 'metered'
    GROUP BY contract_id, account_id, currency, period
)
SELECT a.contract_id, a.account_id, a.what, a.amount, a.currency,
       a.amount * CASE WHEN a.currency = %(reporting)s THEN 1
                       ELSE (SELECT max(rate) FROM fx_rates f WHERE f.currency = a.currency) END
           AS largest
FROM amounts a
ORDER BY abs(a.amount * coalesce((SELECT max(rate) FROM fx_rates f
                                  WHERE f.currency = a.currency), 1)) DESC NULLS LAST
LIMIT 3
"""


@dataclass(frozen=True)
class LedgerState:
    """What the stored ledger holds (``mrr_ledger_state``)."""

    reporting_currency: str
    first_month: dt.date
    last_month: dt.date
    stale_since: dt.date | None
    rebuilt_at: dt.datetime


@dataclass(frozen=True)
class RebuildResult:
    """What a rebuild did: months since .. through recomputed (none when up to date)."""

    full: bool
    first_month: dt.date | None
    since: dt.date | None
    through: dt.date | None
    ledger_rows: int
    movement_rows: int
    metered_from_invoices: int  # metered contract months billed from invoices
    metered_from_telemetry: int  # ... and from telemetry (usage_daily)
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for benchmarks
    asked_since: dt.date | None = None  # the ``since`` asked for (``since`` may be earlier)

    def document(self) -> dict[str, Any]:
        def month(value: dt.date | None) -> str | None:
            return format_month(value) if value else None

        return {
            "full": self.full,
            "first_month": month(self.first_month),
            "rebuilt_from": month(self.since),
            "asked_from": month(self.asked_since),
            "rebuilt_through": month(self.through),
            "ledger_rows": self.ledger_rows,
            "movement_rows": self.movement_rows,
            "metered_months_from_invoices": self.metered_from_invoices,
            "metered_months_from_telemetry": self.metered_from_telemetry,
            "seconds": round(self.seconds, 3),
            "phases_seconds": {name: round(value, 3) for name, value in self.phases.items()},
        }


def set_batch_memory(conn: psycopg.Connection[TupleRow]) -> None:
    """Raise work_mem to BATCH_WORK_MEM until the end of the current transaction."""
    conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(BATCH_WORK_MEM)))


@contextmanager
def read_settings(conn: psycopg.Connection[TupleRow]) -> Iterator[None]:
    """For a batch of reads (the report, the headline): when ``conn`` is not in a transaction,
    open one with work_mem BATCH_WORK_MEM (sorts and hashes in memory, not temporary files) and
    JIT off (compiling each statement cost more than it saved on these few-hundred-thousand-row
    queries); inside the caller's transaction, change nothing."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        yield
        return
    with conn.transaction():
        set_batch_memory(conn)
        conn.execute("SET LOCAL jit = off")
        yield


def ledger_state(conn: psycopg.Connection[TupleRow]) -> LedgerState | None:
    row = conn.execute(
        "SELECT reporting_currency, first_month, last_month, stale_since, rebuilt_at"
        " FROM mrr_ledger_state"
    ).fetchone()
    return LedgerState(*row) if row else None


def default_first_month(conn: psycopg.Connection[TupleRow]) -> dt.date:
    """The first month with a recurring invoice line, else the earliest contract's start month."""
    row = conn.execute(
        "SELECT coalesce((SELECT min(period) FROM invoice_lines WHERE recurring),"
        " (SELECT date_trunc('month', min(start_date)::timestamp)::date FROM contracts))"
    ).fetchone()
    if row is None or row[0] is None:
        raise NotFound("no contracts imported: run basewatch import contracts FILE first")
    first: dt.date = row[0]
    return first


def rebuild(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    *,
    since: dt.date | None = None,
    through: dt.date | None = None,
    full: bool = False,
    today: dt.date | None = None,
) -> RebuildResult:
    """Recompute the ledger and movements of months ``since`` .. ``through`` (default: the last
    complete month before ``today``) and drop any later months; one transaction. Without
    ``full``, the rebuild starts at the earliest of ``since``, the month after the ledger's
    last and the earliest month imports changed (``stale_since``), so that clearing the stale
    marker never leaves a changed month unbuilt; :attr:`RebuildResult.asked_since` keeps what
    was asked."""
    started = time.perf_counter()
    asked_since = since
    through = through or previous_complete_month(today or dt.datetime.now(dt.UTC).date())
    state = ledger_state(conn)
    if full or state is None or state.reporting_currency != reporting_currency:
        full = True
        since = since or default_first_month(conn)
        first = since
    else:
        # Never leave a month unbuilt: not the months an import changed (stale_since, kept even
        # when ``since`` asks for a later month), nor any after the ledger's last month.
        next_month = add_months(state.last_month, 1)
        since = min(since or next_month, next_month, state.stale_since or next_month)
        first = min(state.first_month, since)
    if since > through and not full:
        return RebuildResult(
            False, first, None, None, 0, 0, 0, 0, time.perf_counter() - started, {}, asked_since
        )
    outer_idle = conn.info.transaction_status == TransactionStatus.IDLE
    try:
        counts, movement_rows, phases = _rebuild_months(
            conn, reporting_currency, since, through, first, full=full, outer_idle=outer_idle
        )
    except psycopg.errors.NumericValueOutOfRange as exc:
        raise InputError(_too_large(conn, reporting_currency, exc)) from exc
    ledger_rows, from_invoices, from_telemetry = counts
    seconds = time.perf_counter() - started
    log.info(
        "MRR ledger rebuilt %s..%s: %d ledger rows, %d movements in %.1f s",
        format_month(since),
        format_month(through),
        ledger_rows,
        movement_rows,
        seconds,
    )
    return RebuildResult(
        full,
        first,
        since,
        through,
        ledger_rows,
        movement_rows,
        from_invoices,
        from_telemetry,
        seconds,
        phases,
        asked_since,
    )


def _too_large(
    conn: psycopg.Connection[TupleRow], reporting_currency: str, exc: psycopg.Error
) -> str:
    """The message for a rebuild stopped by a figure too large for its arithmetic (possible
    only with rows written past the import's ranges, or with many huge contracts on one
    account): the largest monthly amounts, each at the highest rate of its currency."""
    rows = conn.execute(_LARGEST, {"reporting": reporting_currency}).fetchall()
    shown = "; ".join(
        f"contract {contract!r} (account {account!r}): {what} {amount:.6g} {currency}"
        + (
            ""
            if currency == reporting_currency
            else f" (at most {largest:.6g} {reporting_currency})"
        )
        for contract, account, what, amount, currency, largest in rows
    )
    return (
        f"the MRR ledger cannot hold these figures ({str(exc).strip().splitlines()[0]}): "
        f"MRR must stay below {MAX_LOCAL_MRR:.1e} a month per contract in its currency and "
        f"below 1e16 {reporting_currency} per account; the largest amounts are: {shown}; "
        "correct the contracts or invoices and import them again"
    )


def _rebuild_months(
    conn: psycopg.Connection[TupleRow],
    reporting_currency: str,
    since: dt.date,
    through: dt.date,
    first: dt.date,
    *,
    full: bool,
    outer_idle: bool,
) -> tuple[tuple[int, int, int], int, dict[str, float]]:
    """Replace months ``since`` .. ``through`` of the ledger and the movements, in one
    transaction (a savepoint inside the caller's)."""
    with conn.transaction():
        set_batch_memory(conn)
        if full:
            conn.execute("TRUNCATE mrr_ledger, mrr_movements")
        else:
            conn.execute("DELETE FROM mrr_ledger WHERE month >= %s", (since,))
            conn.execute("DELETE FROM mrr_movements WHERE month >= %s", (since,))
        params = {
            "since": since,
            "through": through,
            "month_count": months_between(since, through) + 1,
            "reporting": reporting_currency,
            "average_month_days": AVERAGE_MONTH_DAYS,
        }
        phases: dict[str, float] = {}
        # the telemetry may be read on a second connection in this transaction's snapshot,
        # unless the caller's own uncommitted writes (which it could not see) preceded it
        snapshot = None
        if outer_idle:
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snapshot = str(row[0]) if row else None
        counts = _insert_ledger(conn, params, phases, snapshot) if since <= through else (0, 0, 0)
        # the movements read the ledger by month: summarise its new BRIN ranges first
        conn.execute("SELECT brin_summarize_new_values('mrr_ledger_month_brin'::regclass)")
        mark = time.perf_counter()
        movement_rows = rebuild_movements(
            conn, reporting_currency, max(since, add_months(first, 1)), through
        )
        phases["movements"] = time.perf_counter() - mark
        # BRIN ranges written in this transaction are not summarised yet (every read would scan
        # them all): summarise them now, as autovacuum would later.
        conn.execute("SELECT brin_summarize_new_values('mrr_movements_month_brin'::regclass)")
        conn.execute(
            "INSERT INTO mrr_ledger_state (reporting_currency, first_month, last_month)"
            " VALUES (%s, %s, %s) ON CONFLICT (singleton) DO UPDATE SET"
            " reporting_currency = EXCLUDED.reporting_currency,"
            " first_month = EXCLUDED.first_month, last_month = EXCLUDED.last_month,"
            " stale_since = NULL, rebuilt_at = now()",
            (reporting_currency, first, through),
        )
    return counts, movement_rows, phases


class _UsageReader:
    """Runs ``_USAGE`` on a second connection, in ``snapshot`` (so it sees exactly what the
    rebuild's transaction saw), in a thread; :meth:`result` waits for its rows. Any failure to
    connect or read leaves the result None and the caller reads on its own connection."""

    def __init__(
        self, conn: psycopg.Connection[TupleRow], snapshot: str, params: dict[str, Any]
    ) -> None:
        self._rows: list[tuple[Any, ...]] | None = None
        self._info = conn.info
        self._snapshot = snapshot
        self._params = params
        self._thread = threading.Thread(target=self._read, name="nrr-usage", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with psycopg.connect(self._info.dsn, password=self._info.password) as other:
                other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                other.execute(
                    sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self._snapshot))
                )
                self._rows = other.execute(_USAGE, self._params).fetchall()
                other.rollback()
        except psycopg.Error as exc:
            log.warning("reading telemetry usage on a second connection failed: %s", exc)

    def result(self) -> list[tuple[Any, ...]] | None:
        self._thread.join()
        return self._rows


def _insert_ledger(
    conn: psycopg.Connection[TupleRow],
    params: dict[str, Any],
    phases: dict[str, float],
    snapshot: str | None,
) -> tuple[int, int, int]:
    """Insert months since .. through; returns (ledger lines, metered contract months billed
    from invoices, metered contract months billed from telemetry). With ``snapshot`` (exported
    by this transaction) the telemetry is read on a second connection in that snapshot while
    this one builds the metered months."""
    mark = time.perf_counter()
    conn.execute("DROP TABLE IF EXISTS nrr_metered, nrr_usage")
    # Telemetry is read only for the assets of metered contract months without invoices, and
    # only for the months rebuilt (usage_daily_between filters telemetry by time).
    assets = [str(a) for (a,) in conn.execute(_GAP_ASSETS, params)]
    usage_params = {**params, "assets": assets, "through_day": last_day(params["through"])}
    reader = _UsageReader(conn, snapshot, usage_params) if assets and snapshot else None
    conn.execute(_METERED_MONTHS, params)
    conn.execute("ANALYZE nrr_metered")
    phases["metered_months"] = time.perf_counter() - mark
    mark = time.perf_counter()
    conn.execute(
        "CREATE TEMP TABLE nrr_usage (account_id text, month date, volume_m3 numeric)"
        " ON COMMIT DROP"
    )
    usage = reader.result() if reader else None
    if usage is None and assets:
        usage = conn.execute(_USAGE, usage_params).fetchall()
    if usage:
        with conn.cursor().copy("COPY nrr_usage (account_id, month, volume_m3) FROM STDIN") as copy:
            for line in usage:
                copy.write_row(line)
        conn.execute("ANALYZE nrr_usage")
    phases["telemetry_usage"] = time.perf_counter() - mark
    mark = time.perf_counter()
    try:
        with conn.transaction():
            lines = conn.execute(_INSERT, params).rowcount
    except psycopg.errors.NotNullViolation as exc:
        missing = conn.execute(_MISSING_RATES, params).fetchall()
        if not missing:
            raise
        shown = ", ".join(f"{c} {format_month(m)}" for m, c in missing[:MAX_MISSING_RATES_LISTED])
        more = len(missing) - MAX_MISSING_RATES_LISTED
        raise InputError(
            f"no exchange rate for {len(missing)} month(s) and currency(ies) in use: {shown}"
            + (f" and {more} more" if more > 0 else "")
            + "; import them with basewatch import fx FILE"
        ) from exc
    phases["ledger_lines"] = time.perf_counter() - mark
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE invoiced IS NOT NULL),"
        " count(*) FILTER (WHERE invoiced IS NULL) FROM nrr_metered"
    ).fetchone()
    assert row is not None
    return lines, int(row[0]), int(row[1])
