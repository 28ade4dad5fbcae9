"""Retention from the database: DESIGN.md's check figures, the edge cases with their figures
written out, breakdowns with cohort sizes, and a generated history whose bridge reconciles."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from core.months import add_months, month_range
from nrr.bridge import bridges
from nrr.figures import mrr_totals
from nrr.headline import headline
from nrr.imports import import_file
from nrr.ledger import rebuild
from nrr.metrics import trailing_from_pairs
from nrr.retention import breakdown, month_over_month, trailing_series
from tests.nrr import fix_nrr as fx

D = Decimal


@pytest.fixture(scope="module")
def module_conn(db_url: str) -> Iterator[fx.Conn]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def conn(module_conn: fx.Conn) -> fx.Conn:
    fx.reset(module_conn)
    return module_conn


def _design_accounts(conn: fx.Conn) -> None:
    """Start 1,000,000 in January 2023; from February: A +200,000 (expansion), B -50,000
    (contraction), C -75,000 (churn), D unchanged, E new with 300,000 (outside the cohort)."""
    for account_id, industry in (("A", "food"), ("B", "food"), ("C", "auto"), ("D", "auto")):
        fx.account(conn, account_id, industry, "north", "csm-1")
    fx.account(conn, "E", "food", "south", "csm-2")
    fx.contract(conn, "A1", "A", "2023-01-01", "2023-01-31", fee="500000")
    fx.contract(conn, "A2", "A", "2023-02-01", fee="700000")
    fx.contract(conn, "B1", "B", "2023-01-01", "2023-01-31", fee="200000")
    fx.contract(conn, "B2", "B", "2023-02-01", fee="150000")
    fx.contract(conn, "C1", "C", "2023-01-01", "2023-01-31", fee="75000")
    fx.contract(conn, "D1", "D", "2023-01-01", fee="225000")
    fx.contract(conn, "E1", "E", "2023-02-01", fee="300000")
    rebuild(conn, "EUR", since=fx.month("2023-01"), through=fx.month("2024-01"), full=True)


def test_design_check_figures_month_over_month_and_trailing(conn: fx.Conn) -> None:
    _design_accounts(conn)
    february = month_over_month(conn, fx.month("2023-02"), fx.month("2023-02"))[0]
    assert (february.start, february.expansion, february.contraction, february.churn) == (
        D("1000000.00"),
        D("200000.00"),
        D("50000.00"),
        D("75000.00"),
    )
    assert (february.nrr, february.grr, february.cohort_size) == (D("1.075"), D("0.875"), 4)
    assert february.logo_retention == D("0.75")
    year = trailing_series(conn, "EUR", fx.month("2024-01"), fx.month("2024-01"))
    figures = year[fx.month("2024-01")]
    assert (figures.nrr, figures.grr, figures.logo_retention) == (D("1.075"), D("0.875"), D("0.75"))
    assert (figures.cohort_size, figures.start_mrr, figures.end_mrr) == (
        4,
        D("1000000.00"),
        D("1075000.00"),
    )
    document = headline(conn, "EUR", fx.month("2024-01")).document()
    assert document["trailing_12_months"]["nrr_pct"] == 107.5
    assert document["trailing_12_months"]["grr_pct"] == 87.5
    assert document["trailing_12_months"]["cohort_size"] == 4
    assert document["mrr"]["total"] == "1375000.00"


def test_breakdowns_place_accounts_at_the_start_and_show_cohort_sizes(conn: fx.Conn) -> None:
    _design_accounts(conn)
    month = fx.month("2024-01")
    by_industry = dict(breakdown(conn, "EUR", month, "industry"))
    # food: A 500,000 -> 700,000, B 200,000 -> 150,000 (E is new: not in the cohort)
    assert by_industry["food"].cohort_size == 2
    assert by_industry["food"].nrr == D("850000") / D("700000")
    assert by_industry["food"].grr == D("650000") / D("700000")
    # auto: C churned, D flat: 225,000 / 300,000
    assert (by_industry["auto"].cohort_size, by_industry["auto"].nrr) == (2, D("0.75"))
    by_size = {name: f.cohort_size for name, f in breakdown(conn, "EUR", month, "size")}
    assert by_size == {">= 20k": 4}
    by_csm = {name: f.cohort_size for name, f in breakdown(conn, "EUR", month, "csm")}
    assert by_csm == {"csm-1": 4}  # E (csm-2) is not in the cohort
    lines = breakdown(conn, "EUR", month, "product_line")
    assert [(name, f.cohort_size, f.nrr) for name, f in lines] == [("maintenance", 4, D("1.075"))]


def test_churn_and_return_zero_at_start_and_empty_cohort(conn: fx.Conn) -> None:
    """Cohort of January 2023: F 1,000 (churned March-May, back from June at 800) and G 500.
    H (new in April) and I (a contract at 0 in January, 400 from February) are not in it.
    T12M at January 2024: NRR = GRR = (800 + 500) / 1,500 = 86.67 %, logos 2/2."""
    for account_id in "FGHI":
        fx.account(conn, account_id)
    fx.contract(conn, "F1", "F", "2023-01-01", "2023-02-28", fee="1000")
    fx.contract(conn, "F2", "F", "2023-06-01", fee="800")
    fx.contract(conn, "G1", "G", "2023-01-01", fee="500")
    fx.contract(conn, "H1", "H", "2023-04-01", fee="2000")
    fx.contract(conn, "I0", "I", "2023-01-01", "2023-01-31", fee="0")
    fx.contract(conn, "I1", "I", "2023-02-01", fee="400")
    rebuild(conn, "EUR", since=fx.month("2023-01"), through=fx.month("2024-01"), full=True)
    assert {m: v for m, v in fx.movements(conn, "F").items() if v[0] != "none"} == {
        "2023-03": ("churn", D(1000), D(0)),
        "2023-06": ("reactivation", D(800), D(0)),
    }
    assert fx.movements(conn, "I")["2023-02"] == ("new", D(400), D(0))
    figures = trailing_series(conn, "EUR", fx.month("2024-01"), fx.month("2024-01"))[
        fx.month("2024-01")
    ]
    assert (figures.cohort_size, figures.start_mrr, figures.end_mrr) == (2, D(1500), D(1300))
    assert figures.nrr == figures.grr == D(1300) / D(1500)
    assert figures.logo_retention == D(1)
    # twelve months before June 2023 nobody had MRR: no figure, in Python and in JSON
    assert trailing_series(conn, "EUR", fx.month("2023-06"), fx.month("2023-06")) == {}
    document = headline(conn, "EUR", fx.month("2023-06")).document()
    assert document["trailing_12_months"]["nrr_pct"] is None
    assert document["trailing_12_months"]["cohort_size"] == 0


def test_generated_history_reconciles_every_month(conn: fx.Conn, tmp_path: Path) -> None:
    files = fx.history_files(conn, tmp_path)
    for kind in ("contracts", "invoices", "fx"):
        import_file(conn, kind, files[kind])
    result = rebuild(conn, "EUR", through=fx.month("2024-06"))
    assert result.first_month == fx.month("2022-01")
    assert result.metered_from_invoices > 0
    assert result.metered_from_telemetry > 0
    # the keys the tables do not enforce (see the migration) are unique
    for key, table in (
        ("month, account_id, product_line, currency", "mrr_ledger"),
        ("month, account_id", "mrr_movements"),
    ):
        duplicates = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY {key} HAVING count(*) > 1) d"
        ).fetchone()
        assert duplicates == (0,), table
    months = month_range(fx.month("2022-02"), fx.month("2024-06"))
    totals = {
        m: D(v) for m, v in conn.execute("SELECT month, sum(mrr) FROM mrr_ledger GROUP BY month")
    }
    kinds = {
        str(k)
        for (k,) in conn.execute("SELECT DISTINCT kind FROM mrr_movements WHERE kind <> 'none'")
    }
    assert kinds == {"new", "reactivation", "expansion", "contraction", "churn"}
    for bridge in bridges(conn, months[0], months[-1]):
        assert bridge.reconciles(), bridge
        assert bridge.start == totals.get(add_months(bridge.month, -1), D(0))
        assert bridge.end == totals.get(bridge.month, D(0))
    assert any(b.fx != 0 for b in bridges(conn, months[0], months[-1]))
    # monthly totals (read from the movements, the opening month from the ledger) == the ledger
    by_month = {
        m: (D(f), D(v), D(t), int(n))
        for m, f, v, t, n in conn.execute(
            "SELECT month, sum(fixed_mrr), sum(metered_mrr), sum(mrr),"
            " count(DISTINCT account_id) FILTER (WHERE mrr > 0) FROM mrr_ledger GROUP BY month"
        )
    }
    for total in mrr_totals(conn, fx.month("2022-01"), fx.month("2024-06")):
        assert (total.fixed, total.metered, total.total, total.accounts) == by_month[total.month]
    # NRR from the bridge == NRR from the ledger (accounts with MRR last month, this month's
    # ledger lines at last month's rates)
    for mom in month_over_month(conn, months[0], months[-1]):
        row = conn.execute(
            """
            WITH prev AS (SELECT account_id, sum(mrr) AS mrr FROM mrr_ledger
                          WHERE month = %(prev)s GROUP BY account_id HAVING sum(mrr) > 0),
                 cur AS (SELECT l.account_id, sum(l.mrr) AS mrr,
                                sum(round(l.fixed_mrr_local * coalesce(f.rate, 1), 2)
                                    + round(l.metered_mrr_local * coalesce(f.rate, 1), 2)) AS cc
                         FROM mrr_ledger l LEFT JOIN fx_rates f
                           ON f.month = %(prev)s AND f.currency = l.currency
                         WHERE l.month = %(month)s GROUP BY l.account_id)
            SELECT sum(CASE WHEN c.mrr > 0 THEN c.cc ELSE 0 END), sum(p.mrr)
            FROM prev p LEFT JOIN cur c USING (account_id)
            """,
            {"prev": add_months(mom.month, -1), "month": mom.month},
        ).fetchone()
        assert row is not None
        if row[1] is None:
            assert mom.nrr is None
            continue
        assert mom.nrr == D(row[0] or 0) / D(row[1])
    # T12M from SQL == the pure formula over the ledger read back (constant currency)
    last = fx.month("2024-06")
    base = add_months(last, -12)
    rates = {(m, c): D(r) for m, c, r in conn.execute("SELECT month, currency, rate FROM fx_rates")}
    per_account: dict[str, list[D]] = {}  # MRR then, MRR now at then's rates, MRR now
    for account_id, month, currency, fixed, metered, mrr in conn.execute(
        "SELECT account_id, month, currency, fixed_mrr_local, metered_mrr_local, mrr"
        " FROM mrr_ledger WHERE month IN (%s, %s)",
        (base, last),
    ):
        pair = per_account.setdefault(account_id, [D(0), D(0), D(0)])
        if month == base:
            pair[0] += mrr
        else:
            rate = rates[(base, currency)]
            pair[1] += (fixed * rate).quantize(D("0.01")) + (metered * rate).quantize(D("0.01"))
            pair[2] += mrr
    pure = trailing_from_pairs(
        last, 12, [(a, b if now > 0 else D(0)) for a, b, now in per_account.values()]
    )
    sql_figures = trailing_series(conn, "EUR", last, last)[last]
    assert (sql_figures.nrr, sql_figures.grr, sql_figures.cohort_size) == (
        pure.nrr,
        pure.grr,
        pure.cohort_size,
    )
