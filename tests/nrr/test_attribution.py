"""Attribution of expansion and churn to alerts, hand-worked.

April 2024 (fixed monthly fees in EUR; each month's MRR is its run rate on the last day):

  account  March  April   movement            alerts
  a        1000   1500    expansion 500       expansion alert acknowledged 2024-04-01, 30 days
                                              before April's end (2024-05-01): influenced
  b        1000   1300    expansion 300       acknowledged 2023-10-14, 200 days before: not
  c        1000   1200    expansion 200       acknowledged then dismissed; another only open:
                                              not
  d         800      0    churn 800           risk alert open since 2024-02-15: flagged
  e         400      0    churn 400           risk alert opened in April (too late) and one
                                              expired in February: unflagged
  f        1000    900    contraction 100
  g        1000   1000    (June: +100, alert won on 2024-05-20 without acknowledgement)

  start 6,200; expansion 1,000 (3 accounts), influenced 500 (1); contraction 100;
  churn 1,200 (2): flagged 800 (1), unflagged 400 (1).
  NRR (6,200 + 1,000 - 100 - 1,200) / 6,200 = 95.16 %;
  NRR without influenced expansion (6,200 + 1,000 - 500 - 100 - 1,200) / 6,200 = 87.10 %.
  June: start 5,900 (a 1,500, b 1,300, c 1,200, f 900, g 1,000), expansion 100 (g,
  influenced): NRR 6,000 / 5,900 = 101.69 %, without 5,900 / 5,900 = 100.00 %.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from nrr.attribution import (
    NOT_MEASURED,
    PARTLY,
    AlertFacts,
    attribution,
    nrr_without,
    summary_line,
)
from nrr.headline import headline
from nrr.ledger import rebuild
from tests.nrr import fix_nrr as fx

D = Decimal
UTC = dt.UTC


@pytest.fixture(scope="module")
def module_conn(db_url: str) -> Iterator[fx.Conn]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def conn(module_conn: fx.Conn) -> fx.Conn:
    fx.reset(module_conn)
    return module_conn


def _accounts(conn: fx.Conn) -> None:
    for name in "abcdefg":
        fx.account(conn, name)
    fx.contract(conn, "a1", "a", "2024-01-01", fee="1000")
    fx.contract(conn, "a2", "a", "2024-04-01", fee="500", kind="addon", product_line="hr")
    fx.contract(conn, "b1", "b", "2024-01-01", fee="1000")
    fx.contract(conn, "b2", "b", "2024-04-01", fee="300", kind="addon", product_line="hr")
    fx.contract(conn, "c1", "c", "2024-01-01", fee="1000")
    fx.contract(conn, "c2", "c", "2024-04-01", fee="200", kind="addon", product_line="hr")
    fx.contract(conn, "d1", "d", "2024-01-01", "2024-03-31", fee="800")
    fx.contract(conn, "e1", "e", "2024-01-01", "2024-03-31", fee="400")
    fx.contract(conn, "f1", "f", "2024-01-01", "2024-03-31", fee="1000")
    fx.contract(conn, "f2", "f", "2024-04-01", fee="900")
    fx.contract(conn, "g1", "g", "2024-01-01", fee="1000")
    fx.contract(conn, "g2", "g", "2024-06-01", fee="100", kind="addon", product_line="hr")
    rebuild(conn, "EUR", through=fx.month("2024-06"), full=True)


def _alerts(conn: fx.Conn) -> None:
    fx.alert(conn, "a", "expansion", "2024-03-20", status="acknowledged", acknowledged="2024-04-01")
    fx.alert(conn, "b", "expansion", "2023-10-01", status="won", acknowledged="2023-10-14",
             closed="2023-11-01")  # fmt: skip
    fx.alert(conn, "c", "expansion", "2024-04-01", status="dismissed", acknowledged="2024-04-10",
             closed="2024-04-12")  # fmt: skip
    fx.alert(conn, "c", "expansion", "2024-04-15", kind="capacity_saturation")  # open only
    fx.alert(conn, "d", "risk", "2024-02-15")
    fx.alert(conn, "e", "risk", "2024-04-05")
    fx.alert(conn, "e", "risk", "2024-01-10", status="expired", closed="2024-02-20",
             kind="silent_assets")  # fmt: skip
    fx.alert(conn, "g", "expansion", "2024-05-02", status="won", closed="2024-05-20")
    # a risk alert on an account that did not churn changes nothing
    fx.alert(conn, "f", "risk", "2024-02-01")


def test_april_influenced_expansion_flagged_churn_and_nrr_without(conn: fx.Conn) -> None:
    _accounts(conn)
    _alerts(conn)
    april = attribution(conn, "EUR", fx.month("2024-04"), 90).month
    assert april.status == "measured"
    assert (april.start_mrr, april.cohort_size) == (D("6200.00"), 7)
    assert (april.expansion, april.expansion_accounts) == (D("1000.00"), 3)
    assert (april.influenced_expansion, april.influenced_accounts) == (D("500.00"), 1)
    assert (april.churn, april.churn_accounts) == (D("1200.00"), 2)
    assert (april.flagged_churn, april.flagged_accounts) == (D("800.00"), 1)
    assert (april.unflagged_churn, april.unflagged_accounts) == (D("400.00"), 1)
    document = april.document()
    assert (document["nrr_pct"], document["nrr_without_influenced_pct"]) == (95.16, 87.10)
    assert document["influenced_expansion"] == "500.00"


def test_june_counts_a_won_alert_and_the_window_sums_the_months(conn: fx.Conn) -> None:
    _accounts(conn)
    _alerts(conn)
    found = attribution(conn, "EUR", fx.month("2024-06"), 90)
    june = found.month.document()
    assert (june["expansion"], june["influenced_expansion"], june["influenced_accounts"]) == (
        "100.00",
        "100.00",
        1,
    )
    assert (june["nrr_pct"], june["nrr_without_influenced_pct"]) == (101.69, 100.0)
    assert [m.label for m in found.months] == [
        "2024-02",
        "2024-03",
        "2024-04",
        "2024-05",
        "2024-06",
    ]
    window = found.trailing.document()
    assert window["period"] == "2024-02..2024-06"
    assert (window["expansion"], window["expansion_accounts"]) == ("1100.00", 4)
    assert (window["influenced_expansion"], window["influenced_accounts"]) == ("600.00", 2)
    assert (window["flagged_churn"], window["unflagged_churn"]) == ("800.00", "400.00")
    # no account had MRR twelve months before: no T12M cohort, no NRR either way
    assert (window["nrr_pct"], window["nrr_without_influenced_pct"], window["cohort_size"]) == (
        None,
        None,
        0,
    )


def test_a_shorter_window_leaves_the_30_day_acknowledgement_out(conn: fx.Conn) -> None:
    _accounts(conn)
    _alerts(conn)
    april = attribution(conn, "EUR", fx.month("2024-04"), 20).month
    assert (april.influenced_expansion, april.influenced_accounts) == (D("0.00"), 0)
    assert april.nrr_without_influenced == april.nrr
    # ... and 30 days is inside a 30-day window (end - 30 days <= acknowledged < end)
    assert attribution(conn, "EUR", fx.month("2024-04"), 30).month.influenced_accounts == 1


def test_trailing_nrr_without_caps_each_account_at_its_window_expansion(conn: fx.Conn) -> None:
    """x: 1,000 from 2022-12, +500 add-on June-September 2023 (influenced: acknowledged
    2023-05-20), so 1,000 again in December; y: 1,000, +200 from August 2023 (acknowledged
    2023-07-15). T12M at 2023-12: cohort x, y; start 2,000, end 2,200, NRR 110 %.
    Influenced in the window 700 (2 accounts), but x gave its expansion back: removed
    min(500, 0) + min(200, 200) = 200, NRR without (2,200 - 200) / 2,000 = 100 % (= GRR)."""
    fx.account(conn, "x")
    fx.account(conn, "y")
    fx.contract(conn, "x1", "x", "2022-12-01", fee="1000")
    fx.contract(conn, "x2", "x", "2023-06-01", "2023-09-30", fee="500", kind="addon",
                product_line="hr")  # fmt: skip
    fx.contract(conn, "y1", "y", "2022-12-01", fee="1000")
    fx.contract(conn, "y2", "y", "2023-08-01", fee="200", kind="addon", product_line="hr")
    rebuild(conn, "EUR", through=fx.month("2023-12"), full=True)
    fx.alert(conn, "x", "expansion", "2023-05-01", status="won", acknowledged="2023-05-20",
             closed="2023-06-10")  # fmt: skip
    fx.alert(conn, "y", "expansion", "2023-07-01", status="acknowledged", acknowledged="2023-07-15")
    top = headline(conn, "EUR", fx.month("2023-12"), attribution_window_days=90)
    window = top.attribution.trailing
    assert window.label == "2023-01..2023-12"
    assert window.status == PARTLY  # the first alert was opened inside the window
    assert (window.influenced_expansion, window.influenced_accounts) == (D("700.00"), 2)
    assert (window.start_mrr, window.cohort_size) == (D("2000.00"), 2)
    assert window.removed_expansion == D("200.00")
    assert (window.nrr, window.nrr_without_influenced) == (D("1.1"), D("1"))
    assert top.document()["attribution"]["trailing_12_months"]["nrr_pct"] == 110.0
    assert summary_line(top.attribution, "EUR") == (
        "Signal attribution 2023-05..2023-12: 700.00 of 700.00 EUR expansion (100%, 2 of 2 "
        "accounts) followed an expansion alert acted on within 90 days; churn 0.00 EUR: flagged "
        "by an open risk alert 0.00 (0 accounts), unflagged 0.00 (0); T12M NRR 110.0%, 100.0% "
        "without the influenced expansion. Association, not causation. [partly measured: "
        "alerts recorded since 2023-05-01; expansion and churn summed from 2023-05]"
    )


def test_no_alerts_is_absent_not_zero(conn: fx.Conn) -> None:
    _accounts(conn)
    april = attribution(conn, "EUR", fx.month("2024-04"), 90).month
    assert (april.status, april.note) == (NOT_MEASURED, "no alerts recorded")
    assert (april.expansion, april.churn) == (D("1000.00"), D("1200.00"))  # still measured
    document = april.document()
    for name in (
        "influenced_expansion",
        "influenced_accounts",
        "flagged_churn",
        "unflagged_churn",
        "nrr_without_influenced_pct",
    ):
        assert document[name] is None, name
    top = headline(conn, "EUR", fx.month("2024-04"))
    assert summary_line(top.attribution, "EUR") == (
        "Signal attribution 2024-02..2024-04: not measured (no alerts recorded)."
    )
    text = top.text()
    assert "signal attribution: not measured (no alerts recorded)" in text


def test_no_alerts_table_is_absent_not_zero(conn: fx.Conn) -> None:
    _accounts(conn)
    with conn.transaction():
        conn.execute("DROP TABLE alerts CASCADE")
        found = attribution(conn, "EUR", fx.month("2024-04"), 90)
        assert not found.coverage.table_exists
        assert found.month.note.startswith("no alerts table")
        assert found.trailing.influenced_expansion is None
        raise psycopg.Rollback()


def test_months_that_ended_before_the_first_alert_are_not_measured(conn: fx.Conn) -> None:
    _accounts(conn)
    fx.alert(conn, "d", "risk", "2024-05-03")
    found = attribution(conn, "EUR", fx.month("2024-06"), 90)
    by_month = {m.label: m for m in found.months}
    assert by_month["2024-04"].status == NOT_MEASURED
    assert by_month["2024-04"].note == "ended before the first alert (2024-05-03)"
    assert by_month["2024-04"].flagged_churn is None
    assert by_month["2024-05"].status == "measured"
    window = found.trailing
    assert window.status == PARTLY
    # summed from May on: April's churn (d 800, e 400) was not measured, so it is not counted
    # as unflagged; May and June have one expansion (g, +100 in June) and no churn
    assert window.note == (
        "alerts recorded since 2024-05-03; expansion and churn summed from 2024-05"
    )
    assert (window.expansion, window.expansion_accounts) == (D("100.00"), 1)
    assert (window.churn, window.flagged_churn, window.unflagged_churn) == (D(0), D(0), D(0))
    assert (window.influenced_expansion, window.influenced_accounts) == (D(0), 0)


def test_pure_rules_match_the_hand_worked_cases() -> None:
    def at(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)

    april = fx.month("2024-04")
    acked = AlertFacts("expansion", "acknowledged", at("2024-03-20"), at("2024-04-01"))
    assert acked.influences(april, 90)
    assert acked.influences(april, 30)
    assert not acked.influences(april, 29)
    assert not acked.influences(fx.month("2024-03"), 90)  # acknowledged after March ended
    old = AlertFacts("expansion", "won", at("2023-10-01"), at("2023-10-14"), at("2023-11-01"))
    assert not old.influences(april, 90)
    assert old.influences(april, 200)  # exactly 200 days before 2024-05-01
    dismissed = AlertFacts("expansion", "dismissed", at("2024-04-01"), at("2024-04-10"))
    assert not dismissed.influences(april, 90)
    won = AlertFacts("expansion", "won", at("2024-05-02"), None, at("2024-05-20"))
    assert won.influences(fx.month("2024-06"), 90)
    assert not AlertFacts("expansion", "open", at("2024-04-15")).influences(april, 90)
    assert not AlertFacts("risk", "acknowledged", at("2024-04-01"), at("2024-04-02")).influences(
        april, 90
    )
    assert AlertFacts("risk", "open", at("2024-02-15")).flags(april)
    assert not AlertFacts("risk", "open", at("2024-04-05")).flags(april)
    expired = AlertFacts("risk", "expired", at("2024-01-10"), None, at("2024-02-20"))
    assert not expired.flags(april)
    assert AlertFacts("risk", "lost", at("2024-03-01"), None, at("2024-04-01")).flags(april)
    assert nrr_without(D(6200), D(1000), D(500), D(100), D(1200)) == D(5400) / D(6200)
    assert nrr_without(D(0), D(0), D(0), D(0), D(0)) is None
