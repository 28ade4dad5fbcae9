"""The MRR ledger in SQL: hand-worked cases with the expected figures written out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from core.errors import InputError, NotFound
from nrr.ledger import ledger_state, rebuild
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
        "2024-01": D("50.00"),
        "2024-02": D("110.00"),
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
        # the invoice's 123.45 wins over telemetry's 200.00 (even below the minimum: billed is
        # billed); the annual fee is 100 a month, not the 1,200 invoiced; one-off and tax: 0
        ("2024-01", D("100.00"), D("123.45"), D("223.45"), "invoices"),
        ("2024-02", D("100.00"), D("200.00"), D("300.00"), "telemetry"),
    ]


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
