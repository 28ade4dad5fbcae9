"""nrr fixtures: small writers for accounts, contracts, invoice lines, rates and usage (the
database is ``db_url``'s, migrated with every package), and a generated revenue history.

The writers insert rows directly (the importers have their own tests); telemetry is written as
pairs of readings whose integral in ``usage_daily`` is exactly the volume asked for.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from core.months import add_months

Conn = psycopg.Connection[TupleRow]


def reset(conn: Conn) -> None:
    """Empty every table the nrr tests write (between tests of one module)."""
    conn.execute(
        "TRUNCATE mrr_ledger, mrr_movements, mrr_ledger_state, fx_rates, invoice_lines,"
        " contracts, telemetry, assets, accounts, csms, alerts, alert_history, outbox CASCADE"
    )


def alert(
    conn: Conn,
    account_id: str,
    family: str,
    opened: str,
    *,
    status: str = "open",
    acknowledged: str | None = None,
    closed: str | None = None,
    kind: str | None = None,
) -> int:
    """An ``alerts`` row as signals would leave it (plain SQL: nrr never imports signals);
    times are ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` in UTC. Returns its id."""

    def at(text: str | None) -> dt.datetime | None:
        if text is None:
            return None
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)

    opened_at = at(opened)
    row = conn.execute(
        "INSERT INTO alerts (account_id, kind, family, subject, status, score, horizon_days,"
        " reasons, opened_at, updated_at, last_seen_at, due_at, acknowledged_at,"
        " acknowledged_by, closed_at, closed_by)"
        " VALUES (%s, %s, %s, %s, %s, 0.8, 30, '[]', %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING alert_id",
        (
            account_id,
            kind or ("heat_recovery" if family == "expansion" else "usage_decline"),
            family,
            opened,  # one alert per (account, kind, subject) may be active
            status,
            opened_at,
            opened_at,
            opened_at,
            opened_at,
            at(acknowledged),
            "csm-1" if acknowledged else None,
            at(closed),
            "csm-1" if closed else None,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def account(
    conn: Conn,
    account_id: str,
    industry: str | None = None,
    region: str | None = None,
    csm_id: str | None = None,
) -> None:
    if csm_id:
        conn.execute(
            "INSERT INTO csms (csm_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (csm_id, csm_id),
        )
    conn.execute(
        "INSERT INTO accounts (account_id, name, industry, region, csm_id)"
        " VALUES (%s, %s, %s, %s, %s)",
        (account_id, f"{account_id} Ltd", industry, region, csm_id),
    )


def contract(
    conn: Conn,
    contract_id: str,
    account_id: str,
    start: str,
    end: str | None = None,
    *,
    kind: str = "fixed",
    product_line: str = "maintenance",
    currency: str = "EUR",
    billing_period: str = "month",
    fee: str | None = None,
    unit_price: str | None = None,
    monthly_minimum: str | None = None,
    term_months: int | None = None,
    unit: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO contracts (contract_id, account_id, product_line, kind, currency,"
        " start_date, end_date, billing_period, fee, unit_price, unit, monthly_minimum,"
        " term_months) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            contract_id,
            account_id,
            product_line,
            kind,
            currency,
            dt.date.fromisoformat(start),
            dt.date.fromisoformat(end) if end else None,
            billing_period,
            Decimal(fee) if fee is not None else None,
            Decimal(unit_price) if unit_price is not None else None,
            unit if unit is not None else ("m3" if kind == "metered" else None),
            Decimal(monthly_minimum) if monthly_minimum is not None else None,
            term_months,
        ),
    )


def invoice_line(
    conn: Conn,
    invoice_id: str,
    line_no: int,
    account_id: str,
    period: str,
    amount: str,
    *,
    kind: str = "metered",
    recurring: bool = True,
    contract_id: str | None = None,
    currency: str = "EUR",
) -> None:
    conn.execute(
        "INSERT INTO invoice_lines (invoice_id, line_no, account_id, contract_id, period,"
        " amount, currency, recurring, kind) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            invoice_id,
            line_no,
            account_id,
            contract_id,
            dt.date.fromisoformat(period + "-01"),
            Decimal(amount),
            currency,
            recurring,
            kind,
        ),
    )


def rate(conn: Conn, month: str, currency: str, value: str) -> None:
    conn.execute(
        "INSERT INTO fx_rates (month, currency, rate) VALUES (%s, %s, %s)",
        (dt.date.fromisoformat(month + "-01"), currency, Decimal(value)),
    )


def asset(conn: Conn, asset_id: str, account_id: str) -> None:
    conn.execute(
        "INSERT INTO assets (asset_id, account_id) VALUES (%s, %s)", (asset_id, account_id)
    )


def usage(conn: Conn, asset_id: str, day: str, volume_m3: int) -> None:
    """Telemetry whose ``usage_daily`` volume on ``day`` is ``volume_m3``: a reading of flow
    volume/100 m³/min followed 100 minutes later by one of flow 0."""
    start = dt.datetime.fromisoformat(day + "T06:00:00+00:00")
    for offset, flow in ((0, volume_m3 / 100), (100, 0.0)):
        conn.execute(
            "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
            " VALUES (%s, %s, %s, jsonb_build_object('flow_m3_min', %s::float8))",
            (asset_id, start + dt.timedelta(minutes=offset), start, flow),
        )


def ledger(conn: Conn, account_id: str) -> dict[str, Decimal]:
    """An account's MRR by month ``YYYY-MM`` (Σ over product lines)."""
    rows = conn.execute(
        "SELECT to_char(month, 'YYYY-MM'), sum(mrr) FROM mrr_ledger WHERE account_id = %s"
        " GROUP BY month ORDER BY month",
        (account_id,),
    )
    return {str(m): Decimal(v) for m, v in rows}


def movements(conn: Conn, account_id: str) -> dict[str, tuple[str, Decimal, Decimal]]:
    """An account's movements by month: (kind, amount, fx)."""
    rows = conn.execute(
        "SELECT to_char(month, 'YYYY-MM'), kind, amount, fx FROM mrr_movements"
        " WHERE account_id = %s ORDER BY month",
        (account_id,),
    )
    return {str(m): (str(k), Decimal(a), Decimal(f)) for m, k, a, f in rows}


def month(text: str) -> dt.date:
    return dt.date.fromisoformat(text + "-01")


# -- a generated revenue history, written as the CSV files the importers read -------------------

CONTRACT_COLUMNS = (
    "contract_id,account_id,product_line,kind,currency,start_date,end_date,billing_period,fee,"
    "unit_price,unit,monthly_minimum,renewal,notice_days,term_months"
)
INVOICE_COLUMNS = (
    "invoice_id,line_no,account_id,contract_id,period,issue_date,amount,currency,recurring,kind,"
    "quantity,unit,description"
)
PERIOD_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def history_files(
    conn: Conn, folder: Path, seed: int = 7, accounts: int = 30, months: int = 30
) -> dict[str, Path]:
    """Register ``accounts`` accounts and write contracts.csv, invoices.csv and fx.csv for
    ``months`` months from 2022-01: fixed fees billed monthly, quarterly or yearly, metered
    contracts invoiced most months (the others fall back to telemetry, here none: the minimum),
    add-ons bought mid-way, churn, returns, and one account that moves from GBP to EUR."""
    rng = random.Random(seed)
    first = dt.date(2022, 1, 1)
    contracts: list[str] = [CONTRACT_COLUMNS]
    invoices: list[str] = [INVOICE_COLUMNS]
    for number in range(accounts):
        account_id = f"acc-{number:02d}"
        account(
            conn,
            account_id,
            rng.choice(["food", "auto", "pharma"]),
            rng.choice(["north", "south"]),
            rng.choice(["csm-1", "csm-2", "csm-3"]),
        )
        currency = "GBP" if number == 0 else rng.choice(["EUR", "EUR", "EUR", "GBP", "USD"])
        start = rng.choice([0, 0, 0, rng.randint(1, 14)])
        end = rng.randint(start + 3, months + 6) if rng.random() < 0.3 else None
        back = rng.randint(end + 1, end + 6) if end is not None and rng.random() < 0.5 else None
        spans = [(start, end)] + ([(back, None)] if back is not None else [])
        if number == 0:  # the currency change: GBP until month 11, EUR from month 12
            spans, end = [(0, 12)], None
            contracts.append(_fixed(account_id, "K-0-eur", "EUR", first, 12, None, "month", 900))
            invoices += _fixed_invoices(
                account_id, "K-0-eur", "EUR", first, 12, months, "month", 900
            )
        for part, (begin, stop) in enumerate(spans):
            period = rng.choice(["month", "month", "quarter", "year"])
            fee = rng.randint(100, 2000) * PERIOD_MONTHS[period]
            cid = f"K-{number}-{part}"
            contracts.append(
                _fixed(account_id, cid + "-m", currency, first, begin, stop, period, fee)
            )
            invoices += _fixed_invoices(
                account_id, cid + "-m", currency, first, begin, stop or months, period, fee
            )
            price = Decimal(rng.randint(150, 250)) / 10_000
            minimum = Decimal(rng.randint(50, 300))
            contracts.append(
                f"{cid}-aas,{account_id},aas,metered,{currency},{add_months(first, begin)},"
                f"{_end(first, stop)},month,,{price},m3,{minimum},auto,90,"
            )
            level = rng.randint(2_000, 50_000)
            for m in range(begin, min(stop or months, months)):
                if rng.random() < 0.1:
                    continue  # no invoice: telemetry (none here) bills the minimum
                level = max(0, int(level * rng.uniform(0.85, 1.2)))
                amount = max((level * price).quantize(Decimal("0.01")), minimum)
                period_text = f"{add_months(first, m):%Y-%m}"
                invoices.append(
                    f"INV-{account_id}-{period_text}-{part},1,{account_id},{cid}-aas,"
                    f"{period_text},,{amount},{currency},true,metered,{level},m3,air"
                )
                invoices.append(
                    f"INV-{account_id}-{period_text}-{part},2,{account_id},,{period_text},,"
                    f"{(amount * Decimal('0.2')).quantize(Decimal('0.01'))},{currency},false,"
                    "tax,,,VAT"
                )
            if rng.random() < 0.25:
                bought = rng.randint(begin, (stop or months) - 1)
                contracts.append(
                    _fixed(
                        account_id,
                        cid + "-hr",
                        currency,
                        first,
                        bought,
                        stop,
                        "month",
                        650,
                        "addon",
                    )
                )
    fx_rows = ["month,currency,rate"]
    levels = {"GBP": 1.17, "USD": 0.92}
    for m in range(months):
        fx_rows.append(f"{add_months(first, m):%Y-%m},EUR,1")
        for name, rate_level in list(levels.items()):
            levels[name] = rate_level * (1 + rng.gauss(0, 0.02))
            fx_rows.append(f"{add_months(first, m):%Y-%m},{name},{levels[name]:.6f}")
    files = {}
    for kind, rows in (("contracts", contracts), ("invoices", invoices), ("fx", fx_rows)):
        files[kind] = folder / f"{kind}.csv"
        files[kind].write_text("\n".join(rows) + "\n")
    return files


def _end(first: dt.date, stop: int | None) -> str:
    return "" if stop is None else str(add_months(first, stop) - dt.timedelta(days=1))


def _fixed(
    account_id: str,
    contract_id: str,
    currency: str,
    first: dt.date,
    begin: int,
    stop: int | None,
    period: str,
    fee: int,
    kind: str = "fixed",
) -> str:
    line = "maintenance" if kind == "fixed" else "heat_recovery"
    return (
        f"{contract_id},{account_id},{line},{kind},{currency},{add_months(first, begin)},"
        f"{_end(first, stop)},{period},{fee},,,,manual,60,"
    )


def _fixed_invoices(
    account_id: str,
    contract_id: str,
    currency: str,
    first: dt.date,
    begin: int,
    stop: int,
    period: str,
    fee: int,
) -> list[str]:
    lines = []
    for m in range(begin, stop, PERIOD_MONTHS[period]):
        text = f"{add_months(first, m):%Y-%m}"
        lines.append(
            f"FIX-{contract_id}-{text},1,{account_id},{contract_id},{text},,{fee},{currency},"
            f"true,fixed,,,{period} fee"
        )
    return lines
