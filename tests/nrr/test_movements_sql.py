"""Movements in SQL against the pure classification, hand-worked and over random histories."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings

from core.months import add_months, month_range
from nrr.bridge import bridges, rebuild_movements
from nrr.ledger import rebuild
from nrr.metrics import trailing_from_pairs
from nrr.retention import trailing_series
from tests.nrr import fix_nrr as fx
from tests.nrr.oracle import LedgerLine, Rates, ledger_movements
from tests.nrr.test_pure import JAN, ledgers

D = Decimal


@pytest.fixture(scope="module")
def module_conn(db_url: str) -> Iterator[fx.Conn]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def conn(module_conn: fx.Conn) -> fx.Conn:
    fx.reset(module_conn)
    fx.account(module_conn, "acme")
    return module_conn


def test_design_example_series_in_sql(conn: fx.Conn) -> None:
    """MRR 100, 100, 0, 0, 120, 150, 0 from February (January is the opening month, 0)."""
    fx.contract(conn, "a", "acme", "2024-02-01", "2024-03-31", fee="100")
    fx.contract(conn, "b", "acme", "2024-06-01", "2024-06-30", fee="120")
    fx.contract(conn, "c", "acme", "2024-07-01", "2024-07-31", fee="150")
    rebuild(conn, "EUR", since=fx.month("2024-01"), through=fx.month("2024-08"), full=True)
    assert fx.movements(conn, "acme") == {
        "2024-02": ("new", D(100), D(0)),
        "2024-03": ("none", D(0), D(0)),
        "2024-04": ("churn", D(100), D(0)),
        # 2024-05: 0 -> 0, no row
        "2024-06": ("reactivation", D(120), D(0)),
        "2024-07": ("expansion", D(30), D(0)),
        "2024-08": ("churn", D(150), D(0)),
    }


def test_contract_that_changes_currency(conn: fx.Conn) -> None:
    """GBP 1,000 a month to the end of March, then EUR 1,250 from April.

    Feb: GBP 1.10 -> 1.20: MRR 1,100.00 -> 1,200.00, no change in GBP: none, fx +100.00.
    Mar: GBP 1.20 -> 1.15: 1,150.00, none, fx -50.00.
    Apr: EUR 1,250 at March's rates is 1,250.00 against 1,150.00: expansion 100.00, fx 0
    (the GBP rate of April, 1.30, touches nothing: no GBP is left).
    """
    fx.contract(conn, "gbp", "acme", "2024-01-01", "2024-03-31", currency="GBP", fee="1000")
    fx.contract(conn, "eur", "acme", "2024-04-01", fee="1250")
    for month, value in (("2024-01", "1.10"), ("2024-02", "1.20"), ("2024-03", "1.15")):
        fx.rate(conn, month, "GBP", value)
    fx.rate(conn, "2024-04", "GBP", "1.30")
    rebuild(conn, "EUR", since=fx.month("2024-01"), through=fx.month("2024-04"), full=True)
    assert fx.ledger(conn, "acme") == {
        "2024-01": D("1100.00"),
        "2024-02": D("1200.00"),
        "2024-03": D("1150.00"),
        "2024-04": D("1250.00"),
    }
    assert fx.movements(conn, "acme") == {
        "2024-02": ("none", D(0), D(100)),
        "2024-03": ("none", D(0), D(-50)),
        "2024-04": ("expansion", D(100), D(0)),
    }
    april = bridges(conn, fx.month("2024-04"), fx.month("2024-04"))[0]
    assert (april.start, april.expansion, april.fx, april.end) == (
        D("1150.00"),
        D("100.00"),
        D("0.00"),
        D("1250.00"),
    )


def _load(conn: fx.Conn, lines: list[LedgerLine], rates: Rates) -> None:
    for (month, currency), value in rates.rates.items():
        conn.execute(
            "INSERT INTO fx_rates (month, currency, rate) VALUES (%s, %s, %s)",
            (month, currency, value),
        )
    seen: dict[tuple[str, object, str], int] = {}
    for line in lines:
        key = (line.account_id, line.month, line.currency)
        seen[key] = seen.get(key, 0) + 1
        rate = rates.of(line.month, line.currency)
        conn.execute(
            "INSERT INTO mrr_ledger (account_id, month, product_line, currency,"
            " fixed_mrr_local, metered_mrr_local, mrr_local, rate, fixed_mrr, metered_mrr, mrr,"
            " contracts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, round(%s * %s, 2),"
            " round(%s * %s, 2), round(%s * %s, 2) + round(%s * %s, 2), 1)",
            (
                line.account_id,
                line.month,
                f"p{seen[key]}",
                line.currency,
                line.fixed_local,
                line.metered_local,
                line.fixed_local + line.metered_local,
                rate,
                line.fixed_local,
                rate,
                line.metered_local,
                rate,
                line.fixed_local,
                rate,
                line.metered_local,
                rate,
            ),
        )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=ledgers())
def test_sql_movements_equal_pure_movements(
    module_conn: fx.Conn, case: tuple[list[LedgerLine], Rates, int]
) -> None:
    lines, rates, months = case
    last = add_months(JAN, months - 1)
    expected = ledger_movements(lines, rates, JAN, last)
    with module_conn.transaction(force_rollback=True):
        module_conn.execute("TRUNCATE mrr_ledger, mrr_movements, mrr_ledger_state, fx_rates")
        _load(module_conn, lines, rates)
        module_conn.execute(
            "INSERT INTO mrr_ledger_state (reporting_currency, first_month, last_month)"
            " VALUES ('EUR', %s, %s)",
            (JAN, last),
        )
        rebuild_movements(module_conn, "EUR", add_months(JAN, 1), last)
        rows = module_conn.execute(
            "SELECT account_id, month, kind, amount, fx, previous_mrr, mrr,"
            " constant_currency_mrr FROM mrr_movements"
        ).fetchall()
        found = {
            (a, m): (k, D(amount), D(f), D(p), D(c), D(cc)) for a, m, k, amount, f, p, c, cc in rows
        }
        assert len(found) == len(rows)  # one row per account and month
        month_bridges = bridges(module_conn, add_months(JAN, 1), last)
        # recomputing the later months alone (an incremental rebuild) gives the same rows
        since = add_months(JAN, min(3, months - 1))
        module_conn.execute("DELETE FROM mrr_movements WHERE month >= %s", (since,))
        rebuild_movements(module_conn, "EUR", since, last)
        again = module_conn.execute(
            "SELECT account_id, month, kind, amount, fx, previous_mrr, mrr,"
            " constant_currency_mrr FROM mrr_movements"
        ).fetchall()
        assert sorted(again) == sorted(rows)
        t3 = trailing_series(module_conn, "EUR", add_months(JAN, 3), last, 3) if months > 3 else {}
    assert found == {
        key: (v.kind, v.amount, v.fx, v.previous_mrr, v.mrr, v.constant_currency_mrr)
        for key, v in expected.items()
    }
    for bridge in month_bridges:
        assert bridge.reconciles()
    # trailing 3 months in SQL == the pure formula on (MRR_{t-3}, MRR_t at t-3's rates)
    for month in month_range(add_months(JAN, 3), last) if months > 3 else []:
        base = add_months(month, -3)
        accounts = {x.account_id for x in lines}
        pairs = []
        for account in accounts:
            then = sum(
                (
                    x.at(rates.of(base, x.currency))
                    for x in lines
                    if x.account_id == account and x.month == base
                ),
                D(0),
            )
            now = sum(
                (
                    x.at(rates.earlier_or_same(base, month, x.currency))
                    for x in lines
                    if x.account_id == account and x.month == month
                ),
                D(0),
            )
            actual = sum(
                (
                    x.at(rates.of(month, x.currency))
                    for x in lines
                    if x.account_id == account and x.month == month
                ),
                D(0),
            )
            pairs.append((then, now if actual > 0 else D(0)))
        pure = trailing_from_pairs(month, 3, pairs)
        if pure.cohort_size == 0:
            assert month not in t3
            continue
        sql_figures = t3[month]
        assert (sql_figures.cohort_size, sql_figures.start_mrr, sql_figures.end_mrr) == (
            pure.cohort_size,
            pure.start_mrr,
            pure.end_mrr,
        )
        assert sql_figures.retained_mrr == pure.retained_mrr
        assert (sql_figures.nrr, sql_figures.grr) == (pure.nrr, pure.grr)
