"""The pure layer of nrr, without any service: contract rules, movement classification, the
bridge, retention formulas and their identities (hand-worked figures and hypothesis)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contracts import Contract, in_force_in_month, last_month, monthly_fee
from core.money import percent_text, ratio
from core.months import add_months, month_range, months_between, parse_month
from nrr.bridge import Bridge
from nrr.charts import bar_chart, heat_map, line_chart, nice_ticks, waterfall
from nrr.metrics import MonthOverMonth, net_and_gross, trailing_from_pairs
from nrr.mrr_rules import metered_mrr, run_rate, usage_charge
from nrr.report_html import display
from tests.nrr.oracle import (
    LedgerLine,
    Rates,
    bridge_of,
    classify,
    ledger_movements,
    series_kinds,
)

D = Decimal
JAN = dt.date(2024, 1, 1)


# -- DESIGN.md check figures -------------------------------------------------------------------


def test_design_check_figures() -> None:
    nrr, grr = net_and_gross(D(1_000_000), D(200_000), D(50_000), D(75_000))
    assert nrr == D("1.075")
    assert grr == D("0.875")
    assert percent_text(nrr, 1) == "107.5"
    assert percent_text(grr, 1) == "87.5"


def test_design_check_figures_from_a_bridge() -> None:
    bridge = Bridge(
        JAN,
        start=D(1_000_000),
        new=D(30_000),
        expansion=D(200_000),
        contraction=D(50_000),
        churn=D(75_000),
        end=D(1_105_000),
        cohort_size=100,
        retained_logos=90,
    )
    assert bridge.reconciles()
    mom = MonthOverMonth.from_bridge(bridge)
    assert (mom.nrr, mom.grr, mom.logo_retention) == (D("1.075"), D("0.875"), D("0.9"))


# -- movements ---------------------------------------------------------------------------------


def test_design_example_series() -> None:
    series = [D(v) for v in (100, 100, 0, 0, 120, 150, 0)]
    assert series_kinds(series) == [
        "new",
        "none",
        "churn",
        "none",
        "reactivation",
        "expansion",
        "churn",
    ]


def test_contraction_keeps_the_account() -> None:
    assert series_kinds([D(100), D(60), D("0.01")]) == ["new", "contraction", "contraction"]


@pytest.mark.parametrize(
    ("previous", "current", "constant", "before", "kind", "amount", "fx"),
    [
        ("0", "100", "100", False, "new", "100", "0"),
        ("0", "100", "100", True, "reactivation", "100", "0"),
        ("100", "150", "150", True, "expansion", "50", "0"),
        ("100", "70", "70", True, "contraction", "30", "0"),
        ("100", "0", "0", True, "churn", "100", "0"),
        ("100", "100", "100", True, "none", "0", "0"),
        # GBP 100 at 1.10 -> 1.20 with no change in GBP: no expansion, all fx
        ("110.00", "120.00", "110.00", True, "none", "0", "10.00"),
        # GBP 100 -> 90 while the rate rises 1.10 -> 1.25: contraction 11.00, fx +13.50
        ("110.00", "112.50", "99.00", True, "contraction", "11.00", "13.50"),
        # new account at this month's rate 1.25, last month's 1.10: new 110.00, fx 15.00
        ("0", "125.00", "110.00", False, "new", "110.00", "15.00"),
    ],
)
def test_classify_each_kind(
    previous: str, current: str, constant: str, before: bool, kind: str, amount: str, fx: str
) -> None:
    movement = classify(D(previous), D(current), D(constant), before)
    assert (movement.kind, movement.amount, movement.fx) == (kind, D(amount), D(fx))
    assert movement.previous_mrr + movement.signed_amount + movement.fx == movement.mrr


def test_currency_change_is_a_movement_plus_fx() -> None:
    """GBP 100 in Jan (1.10) ends; EUR 120 starts in Feb. GBP's Feb rate is 1.20 but no GBP is
    left, so Feb at Jan's rates is EUR 120 at 1: expansion 10.00, fx 0."""
    rates = Rates(
        {(JAN, "GBP"): D("1.10"), (add_months(JAN, 1), "GBP"): D("1.20")}, reporting="EUR"
    )
    feb = add_months(JAN, 1)
    lines = [
        LedgerLine("a", JAN, "GBP", D(100), D(0)),
        LedgerLine("a", feb, "EUR", D(120), D(0)),
    ]
    movement = ledger_movements(lines, rates, JAN, feb)[("a", feb)]
    assert (movement.previous_mrr, movement.mrr) == (D("110.00"), D("120.00"))
    assert (movement.kind, movement.amount, movement.fx) == ("expansion", D("10.00"), D(0))


def test_bridge_of_movements_reconciles_to_the_cent() -> None:
    moves = [
        classify(D("0"), D("125.00"), D("110.00"), False),
        classify(D("110.00"), D("112.50"), D("99.00"), True),
        classify(D("50.00"), D("0"), D("0"), True),
        classify(D("80.00"), D("95.55"), D("95.55"), True),
    ]
    bridge = bridge_of(JAN, moves)
    assert bridge.start == D("240.00")
    assert (bridge.new, bridge.expansion, bridge.contraction, bridge.churn, bridge.fx) == (
        D("110.00"),
        D("15.55"),
        D("11.00"),
        D("50.00"),
        D("28.50"),
    )
    assert bridge.end == D("333.05")
    assert bridge.reconciles()
    assert (bridge.cohort_size, bridge.retained_logos, bridge.churned_logos) == (3, 2, 1)


# -- contract rules ----------------------------------------------------------------------------


def _contract(**changes: object) -> Contract:
    base: dict[str, object] = {
        "contract_id": "k",
        "account_id": "a",
        "product_line": "maintenance",
        "kind": "fixed",
        "currency": "EUR",
        "start_date": dt.date(2024, 1, 1),
    }
    base.update(changes)
    return Contract(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("period", "fee", "term", "monthly"),
    [
        ("month", "250", None, "250.000000"),
        ("quarter", "300", None, "100.000000"),
        ("year", "1200", None, "100.000000"),
        ("year", "1000", None, "83.333333"),
        ("multi_year", "7200", 36, "200.000000"),
    ],
)
def test_fixed_fee_normalised_to_a_month(
    period: str, fee: str, term: int | None, monthly: str
) -> None:
    assert monthly_fee(_contract(billing_period=period, fee=D(fee), term_months=term)) == D(monthly)


def test_metered_mrr_is_a_run_rate_with_the_minimum_as_its_floor() -> None:
    assert usage_charge(D("1234.5"), D("0.0199")) == D("24.57")  # 24.56655 -> .57
    march, february = dt.date(2025, 3, 1), dt.date(2025, 2, 1)
    # the same 20 a day: 620 in March, 560 in February, both 608.75 an average month
    assert run_rate(D(620), march) == run_rate(D(560), february) == D("608.750000")
    assert run_rate(D(-5), march) == 0  # a net credit counts 0
    assert metered_mrr(D(20), march, D(50)) == D(50)  # 19.64 -> the minimum
    assert metered_mrr(D(100), march, D(50)) == D("98.185484")  # 100 / 31 × 30.4375
    assert metered_mrr(D(50), february, D(50)) == D("54.352679")  # the minimum billed in Feb
    assert metered_mrr(D(100), march, None) == D("98.185484")


def test_in_force_on_the_last_day_of_the_month() -> None:
    june = dt.date(2024, 6, 1)
    assert in_force_in_month(_contract(start_date=dt.date(2024, 6, 20)), june)
    assert not in_force_in_month(_contract(end_date=dt.date(2024, 6, 20)), june)
    assert in_force_in_month(_contract(end_date=dt.date(2024, 6, 30)), june)
    ends_july_first = _contract(end_date=dt.date(2024, 7, 1))
    assert in_force_in_month(ends_july_first, june)
    assert not in_force_in_month(ends_july_first, dt.date(2024, 7, 1))
    assert last_month(ends_july_first) == june
    assert last_month(_contract(end_date=dt.date(2024, 6, 30))) == june
    assert last_month(_contract(end_date=dt.date(2024, 6, 29))) == dt.date(2024, 5, 1)


# -- trailing retention ------------------------------------------------------------------------


def test_trailing_cohort_rules() -> None:
    pairs = [
        (D(100), D(120)),  # expanded
        (D(200), D(0)),  # churned
        (D(50), D(40)),  # churned and came back inside the window: counts at MRR_t
        (D(0), D(500)),  # zero at the start: not in the cohort
    ]
    figures = trailing_from_pairs(JAN, 12, pairs)
    assert figures.cohort_size == 3
    assert (figures.start_mrr, figures.end_mrr, figures.retained_mrr) == (D(350), D(160), D(140))
    assert figures.nrr == D(160) / D(350)
    assert figures.grr == D(140) / D(350)
    assert figures.logo_retention == D(2) / D(3)


def test_empty_cohort_has_no_figure() -> None:
    figures = trailing_from_pairs(JAN, 12, [(D(0), D(100))])
    assert (figures.nrr, figures.grr, figures.logo_retention) == (None, None, None)
    mom = MonthOverMonth.from_bridge(Bridge(JAN, new=D(10), end=D(10)))
    assert (mom.nrr, mom.grr, mom.logo_retention) == (None, None, None)
    assert ratio(D(1), D(0)) is None
    assert percent_text(None) == ""


# -- hypothesis: identities over random revenue histories --------------------------------------

money = st.decimals(min_value=0, max_value=100_000, places=2).map(lambda d: d if d >= 1 else D(0))
histories = st.lists(st.lists(money, min_size=13, max_size=13), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(histories)
def test_trailing_identities(history: list[list[Decimal]]) -> None:
    figures = trailing_from_pairs(JAN, 12, [(series[0], series[12]) for series in history])
    if figures.nrr is None:
        assert figures.cohort_size == 0 or figures.start_mrr == 0
        return
    assert figures.grr is not None
    assert close(figures.nrr, figures.grr + figures.expansion / figures.start_mrr)
    assert 0 <= figures.grr <= 1
    # new accounts (zero at the start) change nothing
    grown = trailing_from_pairs(
        JAN, 12, [(s[0], s[12]) for s in history] + [(D(0), D(999)), (D(0), D(5))]
    )
    assert (grown.nrr, grown.grr, grown.cohort_size) == (
        figures.nrr,
        figures.grr,
        figures.cohort_size,
    )


def close(a: Decimal, b: Decimal) -> bool:
    """Equal up to Decimal's 28-digit division rounding."""
    return abs(a - b) <= D("1e-20") * max(abs(a), D(1))


currencies = st.sampled_from(["EUR", "GBP", "USD"])
rate_values = st.decimals(min_value=D("0.5"), max_value=D("2"), places=4)


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[list[LedgerLine], Rates, int]:
    months = draw(st.integers(min_value=2, max_value=8))
    rates = {
        (add_months(JAN, m), c): draw(rate_values) for m in range(months) for c in ("GBP", "USD")
    }
    lines = []
    for number in range(draw(st.integers(min_value=1, max_value=6))):
        for m in range(months):
            for product in range(draw(st.integers(min_value=0, max_value=2))):
                lines.append(
                    LedgerLine(
                        f"a{number}",
                        add_months(JAN, m),
                        draw(currencies),
                        draw(st.decimals(min_value=0, max_value=5000, places=6)),
                        draw(money) if product else D(0),
                    )
                )
    return lines, Rates(rates, "EUR"), months


@settings(max_examples=200, deadline=None)
@given(ledgers())
def test_bridge_reconciles_and_mom_identities(case: tuple[list[LedgerLine], Rates, int]) -> None:
    lines, rates, months = case
    last = add_months(JAN, months - 1)
    moves = ledger_movements(lines, rates, JAN, last)
    totals = {
        m: sum((x.at(rates.of(m, x.currency)) for x in lines if x.month == m), D(0))
        for m in month_range(JAN, last)
    }
    for month in month_range(add_months(JAN, 1), last):
        bridge = bridge_of(month, [v for (_, m), v in moves.items() if m == month])
        assert bridge.reconciles()
        assert bridge.start == totals[add_months(month, -1)]
        assert bridge.end == totals[month]
        mom = MonthOverMonth.from_bridge(bridge)
        if mom.nrr is None:
            assert bridge.start == 0
            continue
        assert mom.grr is not None
        assert close(mom.nrr, mom.grr + bridge.expansion / bridge.start)
        assert mom.grr <= 1
        # NRR from the ledger lines at last month's rates == NRR from the bridge (an account
        # whose MRR_t rounds to 0 has churned, whatever sub-cent amounts it has left)
        retained = [
            a for (a, m), v in moves.items() if m == month and v.previous_mrr > 0 and v.mrr > 0
        ]
        constant = sum(
            (
                x.at(rates.earlier_or_same(add_months(month, -1), month, x.currency))
                for x in lines
                if x.month == month and x.account_id in retained
            ),
            D(0),
        )
        assert mom.nrr == constant / bridge.start


# -- months, charts, display -------------------------------------------------------------------


def test_months() -> None:
    assert parse_month("2024-02") == dt.date(2024, 2, 1)
    for bad in ("2024-13", "2024-2", "24-02", "2024-02-01"):
        with pytest.raises(ValueError, match="YYYY-MM"):
            parse_month(bad)
    assert add_months(dt.date(2024, 11, 1), 3) == dt.date(2025, 2, 1)
    assert months_between(dt.date(2023, 11, 1), dt.date(2024, 2, 1)) == 3


def test_charts_are_well_formed_svg_and_leave_gaps_for_absent_figures() -> None:
    svgs = [
        waterfall("bridge <&>", [("start", D(100)), ("churn", D(-30)), ("end", D(70))]),
        line_chart("trend", ["a", "b", "c", "d"], [("NRR", [D(101), None, D(99), D(98)])]),
        heat_map("cohorts", ["2024-01"], ["+0", "+1"], [[D(1), None]]),
        bar_chart("movers", [("x & co", D(10)), ("y", D(-5))]),
        line_chart("empty", [], []),
    ]
    for svg in svgs:
        ET.fromstring(svg)
    assert "bridge &lt;&amp;&gt;" in svgs[0]
    assert svgs[1].count("<polyline") == 1  # the gap splits a 1-point segment off
    assert nice_ticks(0, 95) == [0, 25, 50, 75, 100]
    assert nice_ticks(80, 112) == [80, 90, 100, 110, 120]


def test_the_waterfall_axis_starts_at_zero() -> None:
    """Issue 14.8: a bridge of 1,000,000 with a 5,000 step used to start its axis near 992,500,
    making the step look as big as the levels."""
    svg = waterfall("bridge", [("start", D(1_000_000)), ("expansion", D(5000)),
                               ("end", D(1_005_000))])  # fmt: skip
    root = ET.fromstring(svg)
    ticks = [
        t.text
        for t in root.iter("{http://www.w3.org/2000/svg}text")
        if t.get("text-anchor") == "end"
    ]
    assert ticks[0] == "0"


def test_display_groups_thousands_without_changing_the_figure() -> None:
    assert display("1234567.50") == "1,234,567.50"
    assert display("-1234.5") == "-1,234.5"
    assert display("107.50") == "107.50"
    assert display("2024-05") == "2024-05"
