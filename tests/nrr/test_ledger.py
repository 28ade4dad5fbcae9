"""The MRR ledger in SQL: hand-worked cases with the expected figures written out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.contracts import Contract
from core.errors import InputError, NotFound
from core.months import add_months
from nrr.figures import reconciliation
from nrr.ledger import ledger_state, rebuild
from nrr.mrr_rules import InvoiceLine, ledger_lines
from tests.nrr import fix_nrr as fx

D = Decimal


@pytest.fixture
def conn(db_url: str) -> Iterator[fx.Conn]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        fx.reset(connection)
        fx.account(connection, "acme")
        yield connection


def build(conn: fx.Conn, since: str, through: str) -> None:
    rebuild(conn, "EUR", since=fx.month(since), through=fx.month(through), full=True)


def test_fees_are_normalised_to_a_month(conn: fx.Conn) -> None:
    fx.contract(conn, "m", "acme", "2024-01-01", fee="250")
    fx.contract(conn, "q", "acme", "2024-01-01", billing_period="quarter", fee="300")
    fx.contract(conn, "y", "acme", "2024-01-01", billing_period="year", fee="1000")
    fx.contract(
        conn, "k", "acme", "2024-01-01", billing_period="multi_year", fee="7200", term_months=36
    )
    fx.contract(conn, "hr", "acme", "2024-01-01", kind="addon", product_line="hr", fee="650")
    build(conn, "2024-01", "2024-02")
    # 250 + 100 + 83.333333 + 200 = 633.333333 -> 633.33; add-on 650 on its own line
    rows = conn.execute(
        "SELECT product_line, fixed_mrr_local, fixed_mrr, metered_mrr, mrr, contracts"
        " FROM mrr_ledger WHERE month = '2024-02-01' ORDER BY product_line"
    ).fetchall()
    assert rows == [
        ("hr", D("650.000000"), D("650.00"), D("0.00"), D("650.00"), 1),
        ("maintenance", D("633.333333"), D("633.33"), D("0.00"), D("633.33"), 4),
    ]


def test_months_in_force_follow_the_last_day_rule(conn: fx.Conn) -> None:
    fx.contract(conn, "a", "acme", "2024-01-20", "2024-03-31", fee="100")  # Jan..Mar
    fx.contract(conn, "b", "acme", "2024-02-01", "2024-04-01", fee="10")  # Feb..Mar (1 Apr only)
    fx.contract(conn, "c", "acme", "2024-02-01", "2024-04-15", fee="1")  # Feb..Mar
    build(conn, "2024-01", "2024-05")
    assert fx.ledger(conn, "acme") == {
        "2024-01": D("100.00"),
        "2024-02": D("111.00"),
        "2024-03": D("111.00"),
    }


def test_metered_minimum_true_up_from_telemetry(conn: fx.Conn) -> None:
    fx.asset(conn, "acme-1", "acme")
    fx.asset(conn, "acme-2", "acme")
    fx.contract(
        conn,
        "aas",
        "acme",
        "2024-01-01",
        kind="metered",
        product_line="aas",
        unit_price="0.02",
        monthly_minimum="50",
    )
    fx.usage(conn, "acme-1", "2024-01-10", 600)
    fx.usage(conn, "acme-2", "2024-01-11", 400)  # January: 1,000 m³ × 0.02 = 20 -> minimum 50
    fx.usage(conn, "acme-1", "2024-02-03", 3000)
    fx.usage(conn, "acme-2", "2024-02-28", 2500)  # February: 5,500 m³ × 0.02 = 110
    build(conn, "2024-01", "2024-03")  # March: no telemetry -> the minimum
    assert fx.ledger(conn, "acme") == {
        "2024-01": D("50.00"),  # run rate 20 / 31 × 30.4375 = 19.64: the minimum
        "2024-02": D("115.45"),  # 110 / 29 × 30.4375 = 115.452586
        "2024-03": D("50.00"),
    }
    sources = conn.execute("SELECT DISTINCT metered_source FROM mrr_ledger").fetchall()
    assert sources == [("telemetry",)]


def test_invoices_win_over_telemetry_and_one_offs_and_tax_are_excluded(conn: fx.Conn) -> None:
    fx.asset(conn, "acme-1", "acme")
    fx.contract(
        conn, "aas", "acme", "2024-01-01", kind="metered", unit_price="0.02", monthly_minimum="50"
    )
    fx.contract(conn, "maint", "acme", "2024-01-01", billing_period="year", fee="1200")
    fx.usage(conn, "acme-1", "2024-01-10", 10_000)  # telemetry says 200.00 in January
    fx.usage(conn, "acme-1", "2024-02-10", 10_000)  # and 200.00 in February
    fx.invoice_line(conn, "I-1", 1, "acme", "2024-01", "123.45", contract_id="aas")
    fx.invoice_line(conn, "I-1", 2, "acme", "2024-01", "1200", kind="fixed", contract_id="maint")
    fx.invoice_line(conn, "I-1", 3, "acme", "2024-01", "2500", kind="one_off", recurring=False)
    fx.invoice_line(conn, "I-1", 4, "acme", "2024-01", "764.69", kind="tax", recurring=False)
    build(conn, "2024-01", "2024-02")
    rows = conn.execute(
        "SELECT to_char(month, 'YYYY-MM'), fixed_mrr, metered_mrr, mrr, metered_source"
        " FROM mrr_ledger ORDER BY month"
    ).fetchall()
    assert rows == [
        # the invoice's 123.45 wins over telemetry's 200.00, as a run rate: 123.45 / 31 ×
        # 30.4375 = 121.21; the annual fee is 100 a month, not the 1,200 invoiced; one-off and
        # tax: 0. February from telemetry: 200.00 / 29 × 30.4375 = 209.91
        ("2024-01", D("100.00"), D("121.21"), D("221.21"), "invoices"),
        ("2024-02", D("100.00"), D("209.91"), D("309.91"), "telemetry"),
    ]


def test_flat_daily_usage_is_flat_mrr_from_telemetry_and_from_invoices(conn: fx.Conn) -> None:
    """Issue 14.1: 1,000 m³ every day of January..April 2025 (31, 28, 31, 30 days) bills 620,
    560, 620 and 600 at 0.02, the same run rate every month (20 × 30.4375 = 608.75): no
    expansion, no contraction, from telemetry as from invoices."""
    fx.account(conn, "billed")
    fx.asset(conn, "acme-1", "acme")
    for name in ("acme", "billed"):
        fx.contract(
            conn,
            f"aas-{name}",
            name,
            "2025-01-01",
            kind="metered",
            unit_price="0.02",
            monthly_minimum="100",
        )
    day = dt.date(2025, 1, 1)
    while day < dt.date(2025, 5, 1):
        fx.usage(conn, "acme-1", day.isoformat(), 1000)
        day += dt.timedelta(days=1)
    for month, amount in (("2025-01", "620"), ("2025-02", "560"), ("2025-03", "620"),
                          ("2025-04", "600")):  # fmt: skip
        fx.invoice_line(conn, f"I-{month}", 1, "billed", month, amount, contract_id="aas-billed")
    build(conn, "2025-01", "2025-04")
    flat = {f"2025-{m:02d}": D("608.75") for m in range(1, 5)}
    assert fx.ledger(conn, "acme") == flat
    assert fx.ledger(conn, "billed") == flat
    for name in ("acme", "billed"):
        assert fx.movements(conn, name) == {
            f"2025-{m:02d}": ("none", D(0), D(0)) for m in range(2, 5)
        }


def test_the_minimum_is_a_floor_on_the_run_rate_of_invoices_too(conn: fx.Conn) -> None:
    """Issue 14.7: an invoice below the monthly minimum counts at the minimum (DESIGN: the
    minimum is a floor on the run rate), and one at the minimum in February is a run rate
    above it (the invoice does not say which part was usage)."""
    fx.contract(
        conn, "aas", "acme", "2024-01-01", kind="metered", unit_price="0.02", monthly_minimum="150"
    )
    fx.invoice_line(conn, "I-1", 1, "acme", "2024-01", "90.00", contract_id="aas")
    fx.invoice_line(conn, "I-2", 1, "acme", "2024-02", "150.00", contract_id="aas")
    fx.invoice_line(conn, "I-3", 1, "acme", "2024-03", "300.00", contract_id="aas")
    fx.invoice_line(conn, "I-3", 2, "acme", "2024-03", "-400.00", contract_id="aas")  # credit
    build(conn, "2024-01", "2024-03")
    assert fx.ledger(conn, "acme") == {
        "2024-01": D("150.00"),  # 90 / 31 × 30.4375 = 88.37: the minimum
        "2024-02": D("157.44"),  # 150 / 29 × 30.4375 = 157.435345
        "2024-03": D("150.00"),  # net credit -100 counts 0: the minimum
    }


def test_conversion_at_each_months_rate(conn: fx.Conn) -> None:
    fx.contract(conn, "gbp", "acme", "2024-01-01", currency="GBP", fee="1000")
    fx.rate(conn, "2024-01", "GBP", "1.17")
    fx.rate(conn, "2024-02", "GBP", "1.1543")
    build(conn, "2024-01", "2024-02")
    rows = conn.execute(
        "SELECT currency, mrr_local, rate, mrr FROM mrr_ledger ORDER BY month"
    ).fetchall()
    assert rows == [
        ("GBP", D("1000.000000"), D("1.17"), D("1170.00")),
        ("GBP", D("1000.000000"), D("1.1543"), D("1154.30")),
    ]


def test_a_missing_rate_stops_the_rebuild_and_writes_nothing(conn: fx.Conn) -> None:
    fx.contract(conn, "eur", "acme", "2024-01-01", fee="10")
    build(conn, "2024-01", "2024-02")
    fx.contract(conn, "usd", "acme", "2024-01-01", currency="USD", fee="1000")
    fx.rate(conn, "2024-01", "USD", "0.92")
    with pytest.raises(InputError, match=r"no exchange rate for 1 .*: USD 2024-02"):
        build(conn, "2024-01", "2024-02")
    assert fx.ledger(conn, "acme") == {"2024-01": D("10.00"), "2024-02": D("10.00")}


def test_incremental_rebuild_equals_full_rebuild(conn: fx.Conn) -> None:
    fx.contract(conn, "a", "acme", "2023-10-01", fee="100")
    fx.invoice_line(conn, "I-0", 1, "acme", "2023-10", "100", kind="fixed", contract_id="a")
    state = rebuild(conn, "EUR", through=fx.month("2024-03"))
    assert (state.full, state.first_month, state.through) == (
        True,
        fx.month("2023-10"),
        fx.month("2024-03"),
    )
    # a price rise from February, marked stale by hand as an import would
    conn.execute("UPDATE contracts SET end_date = '2024-01-31' WHERE contract_id = 'a'")
    fx.contract(conn, "b", "acme", "2024-02-01", fee="130")
    conn.execute("UPDATE mrr_ledger_state SET stale_since = '2024-02-01'")
    result = rebuild(conn, "EUR", through=fx.month("2024-04"))
    assert (result.full, result.since) == (False, fx.month("2024-02"))
    incremental = _snapshot(conn)
    rebuild(conn, "EUR", through=fx.month("2024-04"), full=True)
    assert _snapshot(conn) == incremental
    assert fx.movements(conn, "acme")["2024-02"] == ("expansion", D("30.00"), D("0.00"))
    state_after = ledger_state(conn)
    assert state_after is not None
    assert state_after.stale_since is None
    # nothing stale and nothing new: up to date
    assert rebuild(conn, "EUR", through=fx.month("2024-04")).since is None


def test_nothing_to_build_is_a_clear_error(conn: fx.Conn) -> None:
    with pytest.raises(NotFound, match="import contracts"):
        rebuild(conn, "EUR", through=dt.date(2024, 1, 1))


def _snapshot(conn: fx.Conn) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    ledger = conn.execute("SELECT * FROM mrr_ledger ORDER BY 1, 2, 3, 4").fetchall()
    moves = conn.execute("SELECT * FROM mrr_movements ORDER BY 1, 2").fetchall()
    return ledger, moves


def test_mid_month_ends_and_large_credits_follow_the_definitions(conn: fx.Conn) -> None:
    """Issue 14.6, decided by the documented definitions (``nrr`` docstring): usage billed for
    the month a contract ends mid-month is not MRR (not in force on the last day: the churn is
    that month), and a credit larger than the month's usage counts 0, so an account with
    nothing else churns and then reactivates. Neither is silent: reconciliation.csv lists both."""
    fx.account(conn, "brio")
    fx.contract(conn, "ends", "acme", "2024-01-01", "2024-02-15", kind="metered",
                unit_price="0.02")  # fmt: skip
    fx.contract(conn, "credit", "brio", "2024-01-01", kind="metered", unit_price="0.02")
    for month, amount in (("2024-01", "310.00"), ("2024-02", "145.00")):
        fx.invoice_line(conn, f"E-{month}", 1, "acme", month, amount, contract_id="ends")
    for month, amount in (("2024-01", "310.00"), ("2024-02", "290.00"), ("2024-03", "310.00"),
                          ("2024-04", "300.00")):  # fmt: skip
        fx.invoice_line(conn, f"C-{month}", 1, "brio", month, amount, contract_id="credit")
    fx.invoice_line(conn, "C-2024-03", 2, "brio", "2024-03", "-500.00", contract_id="credit")
    build(conn, "2024-01", "2024-04")
    assert fx.ledger(conn, "acme") == {"2024-01": D("304.38")}  # 310 / 31 × 30.4375
    assert fx.movements(conn, "acme") == {"2024-02": ("churn", D("304.38"), D(0))}
    assert fx.movements(conn, "brio") == {
        "2024-02": ("none", D(0), D(0)),  # 290 / 29 = 310 / 31 = 10 a day
        "2024-03": ("churn", D("304.38"), D(0)),  # 310 - 500 = -190: counts 0
        "2024-04": ("reactivation", D("304.38"), D(0)),
    }
    february = {r.item: r for r in reconciliation(conn, fx.month("2024-02"), "EUR")}
    ended = february["of which metered, contract not in force at month end"]
    assert (ended.lines, ended.amount) == (1, D("145.00"))
    assert "not MRR" in ended.treatment
    march = {r.item: r for r in reconciliation(conn, fx.month("2024-03"), "EUR")}
    credit = march["of which metered, contract months billed at a net credit"]
    assert (credit.lines, credit.amount) == (2, D("-190.00"))
    assert "of which metered, contract not in force at month end" not in march


# -- the SQL ledger against the pure one (nrr.mrr_rules.ledger_lines) on random contracts ------

FIRST = dt.date(2024, 11, 1)  # through 2025-04: a 28-day February, months of 30 and 31 days
MONTHS = 6


@st.composite
def contract_books(draw: st.DrawFn) -> tuple[list[Contract], list[InvoiceLine]]:
    contracts: list[Contract] = []
    invoices: list[InvoiceLine] = []
    for number in range(draw(st.integers(min_value=1, max_value=6))):
        account = f"a{draw(st.integers(min_value=0, max_value=2))}"
        start = FIRST + dt.timedelta(days=draw(st.integers(min_value=-40, max_value=150)))
        end = None
        if draw(st.booleans()):
            end = start + dt.timedelta(days=draw(st.integers(min_value=0, max_value=150)))
        currency = draw(st.sampled_from(["EUR", "GBP"]))
        if draw(st.booleans()):
            period = draw(st.sampled_from(["month", "quarter", "year"]))
            contracts.append(
                Contract(f"k{number}", account, "maintenance", "fixed", currency, start, end,
                         period, fee=draw(st.decimals(min_value=0, max_value=90_000, places=2)))
            )  # fmt: skip
            continue
        minimum = draw(st.none() | st.decimals(min_value=0, max_value=500, places=2))
        contract = Contract(f"k{number}", account, "aas", "metered", currency, start, end,
                            unit_price=Decimal("0.02"), monthly_minimum=minimum)  # fmt: skip
        contracts.append(contract)
        for month in range(-1, MONTHS):  # some billed outside the months in force
            for _ in range(draw(st.integers(min_value=0, max_value=2))):
                amount = draw(st.decimals(min_value=-300, max_value=3000, places=2))
                invoices.append(
                    InvoiceLine(contract.contract_id, add_months(FIRST, month), currency, amount)
                )
    return contracts, invoices


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(book=contract_books())
def test_sql_ledger_equals_the_pure_ledger(
    conn: fx.Conn, book: tuple[list[Contract], list[InvoiceLine]]
) -> None:
    contracts, invoices = book
    last = add_months(FIRST, MONTHS - 1)
    expected = ledger_lines(contracts, invoices, {}, FIRST, last)
    with conn.transaction(force_rollback=True):
        conn.execute("TRUNCATE mrr_ledger, mrr_movements, mrr_ledger_state")
        for name in ("a0", "a1", "a2"):
            fx.account(conn, name)
        for month in range(-1, MONTHS):
            fx.rate(conn, f"{add_months(FIRST, month):%Y-%m}", "GBP", "1.17")
        for c in contracts:
            fx.contract(conn, c.contract_id, c.account_id, c.start_date.isoformat(),
                        c.end_date.isoformat() if c.end_date else None, kind=c.kind,
                        product_line=c.product_line, currency=c.currency,
                        billing_period=c.billing_period, fee=None if c.fee is None else str(c.fee),
                        unit_price=None if c.unit_price is None else str(c.unit_price),
                        monthly_minimum=None if c.monthly_minimum is None
                        else str(c.monthly_minimum))  # fmt: skip
        for number, line in enumerate(invoices):
            account = next(c.account_id for c in contracts if c.contract_id == line.contract_id)
            fx.invoice_line(conn, f"I-{number}", 1, account, f"{line.period:%Y-%m}",
                            str(line.amount), contract_id=line.contract_id,
                            currency=line.currency)  # fmt: skip
        rebuild(conn, "EUR", since=FIRST, through=last, full=True)
        rows = conn.execute(
            "SELECT account_id, month, product_line, currency, fixed_mrr_local,"
            " metered_mrr_local FROM mrr_ledger"
        ).fetchall()
    found = {(a, m, p, c): (Decimal(f), Decimal(v)) for a, m, p, c, f, v in rows}
    assert len(found) == len(rows)
    assert found == expected
