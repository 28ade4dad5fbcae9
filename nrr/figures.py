"""Monthly figures read from the ledger, movements and invoices: MRR totals (fixed, metered,
usage-inclusive total), top movers, and the reconciliation of a month's invoices to its MRR.
Money in the reporting currency.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg.rows import TupleRow

from core.money import ZERO
from core.months import month_range


@dataclass(frozen=True)
class MrrTotals:
    """Σ MRR of a month: fixed (fees and add-ons), metered, usage-inclusive total, accounts."""

    month: dt.date
    fixed: Decimal = ZERO
    metered: Decimal = ZERO
    total: Decimal = ZERO
    accounts: int = 0


def mrr_totals(
    conn: psycopg.Connection[TupleRow], first: dt.date, last: dt.date
) -> list[MrrTotals]:
    # From the movements (one row per account and month with MRR), but for the ledger's opening
    # month, which has none.
    rows = conn.execute(
        "SELECT month, sum(fixed_mrr), sum(metered_mrr), sum(mrr), count(*) FILTER (WHERE mrr > 0)"
        " FROM mrr_movements WHERE month BETWEEN %(first)s AND %(last)s GROUP BY month"
        " UNION ALL"
        " SELECT l.month, sum(l.fixed_mrr), sum(l.metered_mrr), sum(l.mrr),"
        " count(DISTINCT l.account_id) FILTER (WHERE l.mrr > 0)"
        " FROM mrr_ledger l JOIN mrr_ledger_state s ON l.month = s.first_month"
        " WHERE l.month BETWEEN %(first)s AND %(last)s GROUP BY l.month",
        {"first": first, "last": last},
    )
    found = {m: MrrTotals(m, Decimal(f), Decimal(v), Decimal(t), int(n)) for m, f, v, t, n in rows}
    return [found.get(m, MrrTotals(m)) for m in month_range(first, last)]


@dataclass(frozen=True)
class Mover:
    account_id: str
    name: str
    kind: str
    amount: Decimal  # signed: + new, reactivation, expansion; - contraction, churn
    previous_mrr: Decimal
    mrr: Decimal


def top_movers(
    conn: psycopg.Connection[TupleRow], month: dt.date, limit: int = 10
) -> tuple[list[Mover], list[Mover]]:
    """The ``limit`` largest gains and the ``limit`` largest losses of ``month``."""
    query = (
        "SELECT m.account_id, coalesce(a.name, m.account_id), m.kind,"
        " CASE WHEN m.kind IN ('contraction', 'churn') THEN -m.amount ELSE m.amount END,"
        " m.previous_mrr, m.mrr"
        " FROM mrr_movements m LEFT JOIN accounts a ON a.account_id = m.account_id"
        " WHERE m.month = %s AND m.kind = ANY(%s) AND m.amount > 0"
        " ORDER BY m.amount DESC, m.account_id LIMIT %s"
    )
    gains = conn.execute(query, (month, ["new", "reactivation", "expansion"], limit)).fetchall()
    losses = conn.execute(query, (month, ["contraction", "churn"], limit)).fetchall()

    def movers(rows: list[tuple[object, ...]]) -> list[Mover]:
        return [
            Mover(str(a), str(n), str(k), Decimal(str(v)), Decimal(str(p)), Decimal(str(m)))
            for a, n, k, v, p, m in rows
        ]

    return movers(gains), movers(losses)


@dataclass(frozen=True)
class ReconciliationLine:
    """Invoice lines of the month by kind and recurrence, and what MRR does with them."""

    item: str
    lines: int
    amount: Decimal | None  # reporting currency at the month's rate; None when a rate is missing
    treatment: str


def _invoiced_item(kind: str, recurring: bool) -> str:
    """The reconciliation's name for invoice lines of ``kind``: tax is tax, never "one-off"."""
    if kind == "tax":
        return "invoiced tax"
    if kind == "one_off":
        return "invoiced one-off charges"
    return f"invoiced {kind} ({'recurring' if recurring else 'not recurring'})"


_TREATMENT = {
    ("metered", True): "metered MRR (wins over telemetry)",
    ("fixed", True): "billing of fixed fees; MRR takes the contract's fee per month",
    ("addon", True): "billing of add-on fees; MRR takes the contract's fee per month",
    ("one_off", False): "excluded from MRR (one-off)",
    ("tax", False): "excluded from MRR (tax)",
}


# Recurring metered lines of the month that bill no MRR (the decisions in ``nrr``'s docstring):
# those of a contract not in force on the month's last day, and the net credits of a contract
# month billed below 0.
_METERED_NOT_MRR = """
WITH billed AS (
    SELECT contract_id, currency, count(*) AS lines, sum(amount) AS amount
    FROM invoice_lines
    WHERE period = %(month)s AND recurring AND kind = 'metered'
    GROUP BY contract_id, currency
), classified AS (
    SELECT CASE WHEN c.start_date > (%(month)s::date + interval '1 month - 1 day')::date
                  OR c.end_date < (%(month)s::date + interval '1 month - 1 day')::date
                THEN 'not_in_force'
                WHEN b.amount < 0 THEN 'net_credit' END AS what,
           b.lines, b.amount, b.currency, f.rate
    FROM billed b
    JOIN contracts c ON c.contract_id = b.contract_id
    LEFT JOIN fx_rates f ON f.month = %(month)s AND f.currency = b.currency
)
SELECT what, sum(lines),
       CASE WHEN bool_and(currency = %(rep)s OR rate IS NOT NULL)
            THEN sum(round(amount * CASE WHEN currency = %(rep)s THEN 1 ELSE rate END, 2)) END
FROM classified
WHERE what IS NOT NULL
GROUP BY what
ORDER BY what DESC
"""
_NOT_MRR = {
    "not_in_force": (
        "of which metered, contract not in force at month end",
        "not MRR: the contract ended before the month's last day (or starts after it), so its "
        "MRR ended that month (churn or contraction); the last usage is billed, not recurring",
    ),
    "net_credit": (
        "of which metered, contract months billed at a net credit",
        "counted 0 (then the monthly minimum): a credit larger than the month's usage; an "
        "account left with no MRR churns this month and reactivates with its next billed month",
    ),
}


def reconciliation(
    conn: psycopg.Connection[TupleRow], month: dt.date, reporting_currency: str
) -> list[ReconciliationLine]:
    """The month's invoice lines by kind, then the ledger's MRR lines by source (counts are
    invoice lines, then ledger lines: account × product line × currency)."""
    rows = conn.execute(
        "SELECT i.kind, i.recurring, count(*),"
        " CASE WHEN bool_and(i.currency = %(rep)s OR f.rate IS NOT NULL)"
        " THEN sum(round(i.amount * CASE WHEN i.currency = %(rep)s THEN 1 ELSE f.rate END, 2))"
        " END"
        " FROM invoice_lines i LEFT JOIN fx_rates f"
        " ON f.month = i.period AND f.currency = i.currency"
        " WHERE i.period = %(month)s GROUP BY i.kind, i.recurring"
        " ORDER BY i.recurring DESC, i.kind",
        {"month": month, "rep": reporting_currency},
    ).fetchall()
    lines = [
        ReconciliationLine(
            _invoiced_item(str(kind), bool(recurring)),
            int(count),
            None if amount is None else Decimal(amount),
            _TREATMENT.get((str(kind), bool(recurring)), "excluded from MRR (not recurring)"),
        )
        for kind, recurring, count, amount in rows
    ]
    for what, count, amount in conn.execute(
        _METERED_NOT_MRR, {"month": month, "rep": reporting_currency}
    ):
        item, treatment = _NOT_MRR[str(what)]
        lines.append(
            ReconciliationLine(
                item, int(count), None if amount is None else Decimal(amount), treatment
            )
        )
    ledger = conn.execute(
        "SELECT count(*) FILTER (WHERE metered_source = 'invoices'),"
        " coalesce(sum(metered_mrr) FILTER (WHERE metered_source = 'invoices'), 0),"
        " count(*) FILTER (WHERE metered_source = 'telemetry'),"
        " coalesce(sum(metered_mrr) FILTER (WHERE metered_source = 'telemetry'), 0),"
        " count(*) FILTER (WHERE metered_source = 'both'),"
        " coalesce(sum(metered_mrr) FILTER (WHERE metered_source = 'both'), 0),"
        " count(*) FILTER (WHERE fixed_mrr > 0), coalesce(sum(fixed_mrr), 0)"
        " FROM mrr_ledger WHERE month = %s",
        (month,),
    ).fetchone()
    assert ledger is not None
    n_inv, inv, n_tel, tel, n_both, both, n_fixed, fixed = ledger
    run_rate = "ledger: MRR, a run rate of an average month (billed ÷ days × 30.4375)"
    lines += [
        ReconciliationLine("metered MRR from invoices", int(n_inv), Decimal(inv), run_rate),
        ReconciliationLine("metered MRR from telemetry", int(n_tel), Decimal(tel), run_rate),
        ReconciliationLine(
            "metered MRR from invoices and telemetry", int(n_both), Decimal(both), run_rate
        ),
        ReconciliationLine("fixed MRR (fees / month)", int(n_fixed), Decimal(fixed), "ledger: MRR"),
    ]
    return lines
