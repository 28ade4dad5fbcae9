"""Alerts worth reading (issue 13 item 4) on a real database: the precision gate, the weekly
budget per CSM, unmeasured kinds, the measured precision stored by the backtest, and the
weekly digest that lists the alerts held for it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from basewatch.alerts_commands import register as register_alerts
from basewatch.commands import Commands
from basewatch.signals_commands import register as register_signals
from core.settings import Settings
from signals.alerts import (
    ApplyResult,
    alert_history,
    apply_findings,
    get_alert,
    list_alerts,
    snooze,
)
from signals.backtest import BacktestResult, KindResult
from signals.digest import enqueue_digests, period_key
from signals.findings import Finding
from signals.routing import (
    DIGEST,
    IMMEDIATE,
    Budget,
    Candidate,
    Routing,
    delivery_load,
    latest_precision,
    load_routing,
    record_precision,
    route,
    route_in_order,
)
from tests.signals.test_alerts import REGISTRY

T0 = dt.datetime(2025, 6, 2, 10, 0, tzinfo=dt.UTC)  # a Monday
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
KINDS = {"capacity_saturation", "usage_decline", "service_due", "heat_recovery"}
# capacity_saturation and usage_decline proven, heat_recovery measured poor, the rest unmeasured
MEASURED: dict[str, float | None] = {
    "capacity_saturation": 0.8,
    "usage_decline": 0.6,
    "heat_recovery": 0.2,
}


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox, kind_precision")
        connection.execute(REGISTRY)
        connection.execute(
            "INSERT INTO accounts (account_id, name, csm_id) VALUES ('acct-4', 'Delta Dairy',"
            " 'csm-a') ON CONFLICT DO NOTHING"
        )
        yield connection


def finding(kind: str, account: str = "acct-1", subject: str = "asset-7", ev: int = 500) -> Finding:
    return Finding(account, kind, subject, 0.5, Decimal(2 * ev), 30, (f"{kind} holds",))


def apply(
    conn: psycopg.Connection,
    findings: list[Finding],
    now: dt.datetime,
    routing: Routing | None = None,
) -> ApplyResult:
    return apply_findings(
        conn,
        findings,
        now=now,
        kinds_scored=KINDS,
        currency="EUR",
        routing=routing or Routing(MEASURED),
    )


def opened_messages(conn: psycopg.Connection) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT DISTINCT alert_id FROM outbox WHERE dedup_key LIKE 'alert:%:opened:%'"
            " ORDER BY 1"
        )
    ]


# -- pure rules -------------------------------------------------------------------------------


def test_route_gate_budget_and_order_by_hand() -> None:
    routing = Routing({"a": 0.9, "b": 0.49, "c": None}, min_precision=0.5, weekly_budget=2)
    budget = Budget(2, {"csm-x": [T0 - 6 * DAY, T0 - 8 * DAY]})  # one inside the 7 days
    candidates = [
        Candidate(1, "a", "csm-x", Decimal(100)),
        Candidate(2, "a", "csm-x", Decimal(900)),
        Candidate(3, "b", "csm-x", Decimal(5000)),  # below the precision: digest
        Candidate(4, "c", "csm-x", Decimal(5000)),  # measured without truth: unmeasured
        Candidate(5, "d", "csm-x", Decimal(5000)),  # never measured
        Candidate(6, "a", None, Decimal(1)),  # no CSM: no budget
        Candidate(7, "a", "csm-y", Decimal(1)),
    ]
    routes = route(candidates, routing, budget, T0)
    assert {k: r.delivery for k, r in routes.items()} == {
        1: DIGEST,  # the budget's second place went to #2, the larger expected value
        2: IMMEDIATE,
        3: DIGEST,
        4: DIGEST,
        5: DIGEST,
        6: IMMEDIATE,
        7: IMMEDIATE,
    }
    assert "weekly budget used" in routes[1].reason
    assert "49% is below 50%" in routes[3].reason
    assert "no measured precision" in routes[4].reason
    assert "no measured precision" in routes[5].reason
    assert routes[2].reason.endswith("immediate alert 2 of 2 in 7 days")
    assert budget.used("csm-x", T0) == 2
    assert budget.used("csm-x", T0 + 6 * DAY) == 1  # the one 6 days before T0 has left
    assert budget.used("csm-x", T0 + 7 * DAY) == 0


def test_a_replay_is_routed_pass_by_pass_with_a_rolling_budget() -> None:
    """What the backtest's replay calls to count immediate and digest alerts per CSM."""
    routing = Routing({"a": 0.9, "b": 0.1}, weekly_budget=2)
    raised = [
        (T0 + 3 * DAY, Candidate(1, "a", "x", Decimal(10))),
        (T0, Candidate(2, "a", "x", Decimal(10))),
        (T0, Candidate(3, "a", "x", Decimal(50))),  # same pass as #2, larger: first
        (T0 + 3 * DAY, Candidate(4, "b", "x", Decimal(10))),
        (T0 + 7 * DAY, Candidate(5, "a", "x", Decimal(10))),  # the budget is free again
        (T0 + 8 * DAY, Candidate(6, "a", "x", Decimal(10))),
        (T0 + 8 * DAY, Candidate(7, "a", None, Decimal(10))),
    ]
    routes = route_in_order(raised, routing)
    immediate = sorted(k for k, r in routes.items() if r.delivery == IMMEDIATE)
    assert immediate == [2, 3, 5, 6, 7]
    assert delivery_load(raised, routes) == {
        "(no CSM)": {IMMEDIATE: 1, DIGEST: 0, "max_7_days": 1},
        "x": {IMMEDIATE: 4, DIGEST: 2, "max_7_days": 2},
    }
    # without the budget, the three of x's first 7 days would have been immediate
    loose = route_in_order(raised, Routing({"a": 0.9, "b": 0.1}, weekly_budget=10))
    assert delivery_load(raised, loose)["x"]["max_7_days"] == 3


# -- the gate in the lifecycle ----------------------------------------------------------------


def test_a_kind_below_the_precision_goes_to_the_digest_not_the_outbox(
    conn: psycopg.Connection,
) -> None:
    result = apply(conn, [finding("heat_recovery"), finding("capacity_saturation", "acct-2")], T0)
    by_kind = {get_alert(conn, i)["kind"]: get_alert(conn, i) for i in result.opened}
    poor, good = by_kind["heat_recovery"], by_kind["capacity_saturation"]
    assert (poor["status"], poor["delivery"]) == ("open", DIGEST)  # opened all the same
    assert "measured precision 20% is below 50%" in poor["delivery_reason"]
    assert good["delivery"] == IMMEDIATE
    assert result.held == (poor["alert_id"],)
    assert opened_messages(conn) == [good["alert_id"]]
    assert result.messages == 2  # csm-b's email and webhook
    # visible wherever alerts are listed
    listed = {a["alert_id"]: a["delivery"] for a in list_alerts(conn, status="active")}
    assert listed == {poor["alert_id"]: DIGEST, good["alert_id"]: IMMEDIATE}
    # the same kind passes a lower bar
    later = apply(conn, [finding("heat_recovery", "acct-2")], T0 + HOUR, Routing(MEASURED, 0.1))
    assert get_alert(conn, later.opened[0])["delivery"] == IMMEDIATE


def test_an_unmeasured_kind_is_held_until_a_backtest_measures_it(
    conn: psycopg.Connection,
) -> None:
    stored = load_routing(conn)  # nothing measured yet
    assert stored.precision == {}
    [held] = apply(conn, [finding("service_due")], T0, stored).opened
    alert = get_alert(conn, held)
    assert alert["delivery"] == DIGEST
    assert "no measured precision yet" in alert["delivery_reason"]
    assert opened_messages(conn) == []
    record_precision(conn, backtest_result({"service_due": (10, 7)}), T0)
    [sent] = apply(conn, [finding("service_due", "acct-2")], T0 + HOUR, load_routing(conn)).opened
    assert get_alert(conn, sent)["delivery"] == IMMEDIATE
    assert opened_messages(conn) == [sent]


def test_the_budget_cuts_the_third_immediate_alert_of_a_csm_in_a_week(
    conn: psycopg.Connection,
) -> None:
    # csm-a owns acct-1 and acct-4: three proven alerts in one pass, the smallest is held
    result = apply(
        conn,
        [
            finding("capacity_saturation", "acct-1", ev=300),
            finding("usage_decline", "acct-1", "", ev=900),
            finding("capacity_saturation", "acct-4", ev=600),
        ],
        T0,
    )
    delivery = {get_alert(conn, i)["expected_value"]: get_alert(conn, i) for i in result.opened}
    assert delivery["900.00"]["delivery"] == IMMEDIATE
    assert delivery["600.00"]["delivery"] == IMMEDIATE
    assert delivery["300.00"]["delivery"] == DIGEST
    assert "weekly budget used" in delivery["300.00"]["delivery_reason"]
    [opened] = alert_history(conn, delivery["300.00"]["alert_id"])
    assert opened["detail"]["delivery"] == DIGEST
    assert opened["detail"]["delivery_reason"] == delivery["300.00"]["delivery_reason"]
    assert sorted(opened_messages(conn)) == sorted(
        [delivery["900.00"]["alert_id"], delivery["600.00"]["alert_id"]]
    )
    # a later pass in the same 7 days: the budget is still used, even for a larger value
    [later] = apply(conn, [finding("usage_decline", "acct-4", "", ev=5000)], T0 + 6 * DAY).opened
    assert get_alert(conn, later)["delivery"] == DIGEST
    # another CSM has a budget of its own
    [other] = apply(conn, [finding("usage_decline", "acct-2", "")], T0 + 6 * DAY).opened
    assert get_alert(conn, other)["delivery"] == IMMEDIATE
    # 7 days after the first two, the budget is free again
    [free] = apply(conn, [finding("capacity_saturation", "acct-1", "asset-9")], T0 + 7 * DAY).opened
    assert get_alert(conn, free)["delivery"] == IMMEDIATE
    assert len(opened_messages(conn)) == 4


def test_without_routing_every_alert_is_immediate(conn: psycopg.Connection) -> None:
    result = apply_findings(
        conn, [finding("heat_recovery")], now=T0, kinds_scored=KINDS, currency="EUR"
    )
    assert get_alert(conn, result.opened[0])["delivery"] == IMMEDIATE
    assert opened_messages(conn) == list(result.opened)


def test_a_held_alert_gets_no_reminder_when_its_snooze_ends(conn: psycopg.Connection) -> None:
    [held] = apply(conn, [finding("heat_recovery")], T0).opened
    snooze(conn, held, T0 + DAY, "on holiday", "ada", now=T0 + HOUR)
    result = apply(conn, [finding("heat_recovery")], T0 + 2 * DAY)
    assert (result.reminded, result.messages) == (0, 0)
    assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


# -- measured precision -----------------------------------------------------------------------


def backtest_result(
    kinds: dict[str, tuple[int, int | None]], pending: dict[str, int] | None = None
) -> BacktestResult:
    return BacktestResult(
        start=T0 - 90 * DAY,
        end=T0,
        step=DAY,
        passes=90,
        trainings=3,
        alerts=[],
        kinds=[
            KindResult(
                kind,
                alerts,
                true,
                None,
                None,
                None,
                0.1,
                None,
                "truth",
                0.05,
                pending_alerts=(pending or {}).get(kind, 0),
            )
            for kind, (alerts, true) in kinds.items()
        ],
        operating_hours=1000,
        csms=2,
        truth_events={},
        seconds=1.0,
    )


def test_record_and_read_the_latest_precision_per_kind(conn: psycopg.Connection) -> None:
    assert latest_precision(conn) == {}
    record_precision(
        conn, backtest_result({"usage_decline": (10, 3), "heat_recovery": (4, None)}), T0
    )
    assert latest_precision(conn) == {"usage_decline": 0.3, "heat_recovery": None}
    # a later backtest of one kind replaces that kind's figure only
    record_precision(conn, backtest_result({"usage_decline": (8, 6)}), T0 + DAY)
    assert latest_precision(conn) == {"usage_decline": 0.75, "heat_recovery": None}
    row = conn.execute(
        "SELECT alerts, true_alerts, period_from, period_to, step_hours, chance_precision, truth"
        " FROM kind_precision WHERE kind = 'usage_decline' ORDER BY measured_at DESC LIMIT 1"
    ).fetchone()
    assert row == (8, 6, T0 - 90 * DAY, T0, 24.0, 0.05, "truth")
    routing = load_routing(conn, 0.7, 5)
    assert (routing.min_precision, routing.weekly_budget) == (0.7, 5)


def test_the_gate_reads_the_precision_over_decided_alerts(conn: psycopg.Connection) -> None:
    # 10 alerts, 3 confirmed, 4 still pending at the data's end: 3 of 6 decided, not 3 of 10
    record_precision(
        conn,
        backtest_result(
            {"failure_risk": (10, 3), "service_due": (5, 0), "usage_decline": (4, 4)},
            pending={"failure_risk": 4, "service_due": 5},
        ),
        T0,
    )
    assert latest_precision(conn) == {
        "failure_risk": 0.5,
        "service_due": None,  # every alert pending: unmeasured, not 0 %
        "usage_decline": 1.0,
    }
    row = conn.execute(
        "SELECT precision, decided_alerts, precision_decided FROM kind_precision"
        " WHERE kind = 'failure_risk'"
    ).fetchone()
    assert row == (0.3, 6, 0.5)
    routes = route(
        [
            Candidate(1, "failure_risk", "csm-x", Decimal(10)),
            Candidate(2, "service_due", None, Decimal(9)),
        ],
        load_routing(conn, 0.5, 2),
        Budget(2),
        T0,
    )
    assert routes[1].delivery == IMMEDIATE  # 3 of 10 overall would have held it back
    assert routes[2].delivery == DIGEST
    assert "no measured precision" in routes[2].reason
    # a row recorded before the decided figures existed keeps its precision over all alerts
    conn.execute(
        "INSERT INTO kind_precision (kind, measured_at, period_from, period_to, step_hours,"
        " alerts, true_alerts, precision) VALUES ('heat_recovery', %s, %s, %s, 24, 5, 2, 0.4)",
        (T0, T0 - DAY, T0),
    )
    assert latest_precision(conn)["heat_recovery"] == 0.4


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="basewatch")
    commands = Commands(parser.add_subparsers(dest="command", required=True))
    register_alerts(commands)
    register_signals(commands)
    return parser.parse_args(list(argv))


def test_signals_backtest_records_its_precision_unless_told_not_to(
    conn: psycopg.Connection, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=db_url)
    window = ("--from", "2025-05-01", "--to", "2025-05-03", "--step", "1d", "--json")
    args = parse("signals", "backtest", *window, "--no-record", "--kind", "usage_decline")
    assert args.handler(settings, args) == 0
    assert conn.execute("SELECT count(*) FROM kind_precision").fetchone() == (0,)
    capsys.readouterr()
    args = parse("signals", "backtest", *window, "--kind", "usage_decline")
    assert args.handler(settings, args) == 0
    document = json.loads(capsys.readouterr().out)
    [kind] = document["by_kind"]
    assert "data_end" in document
    decided = {"pending_alerts", "false_alerts", "decided_alerts", "precision_decided"}
    assert decided | {"chance_precision_decided", "refuted_per_1000_operating_hours"} <= set(kind)
    rows = conn.execute("SELECT kind, alerts, precision FROM kind_precision").fetchall()
    assert rows == [("usage_decline", kind["alerts"], kind["precision"])]
    assert latest_precision(conn) == {"usage_decline": kind["precision_decided"]}


def test_alerts_list_says_how_each_alert_reached_its_csm(
    conn: psycopg.Connection, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    [held] = apply(conn, [finding("heat_recovery")], T0).opened
    [sent] = apply(conn, [finding("capacity_saturation", "acct-2")], T0).opened
    settings = Settings(database_url=db_url)
    args = parse("alerts", "list", "--json")
    assert args.handler(settings, args) == 0
    listed = {a["alert_id"]: a for a in json.loads(capsys.readouterr().out)["alerts"]}
    assert (listed[held]["delivery"], listed[sent]["delivery"]) == (DIGEST, IMMEDIATE)
    assert "below 50%" in listed[held]["delivery_reason"]
    args = parse("alerts", "list")
    assert args.handler(settings, args) == 0
    text = capsys.readouterr().out
    [held_line] = [line for line in text.splitlines() if line.startswith(f"#{held} ")]
    assert held_line.endswith("delivery digest")
    assert "    delivery: heat_recovery's measured precision 20% is below 50%" in text


# -- the weekly digest ------------------------------------------------------------------------


def digest_bodies(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    return {
        str(k): (str(s), str(b))
        for k, s, b in conn.execute(
            "SELECT dedup_key, subject, body FROM outbox WHERE dedup_key LIKE 'digest:%'"
        )
    }


def test_the_weekly_digest_lists_the_held_alerts_first(conn: psycopg.Connection) -> None:
    [sent] = apply(conn, [finding("capacity_saturation", ev=900)], T0).opened
    [held] = apply(conn, [finding("heat_recovery", "acct-4", ev=100)], T0 + HOUR).opened
    [unheld_csm] = apply(conn, [finding("capacity_saturation", "acct-2")], T0).opened
    assert period_key(T0) == "2025-W23"
    # only csm-a has a held alert: without "everyone" only csm-a gets the digest
    assert enqueue_digests(conn, now=T0 + 2 * HOUR, currency="EUR", everyone=False) == 1
    [(key, (subject, body))] = digest_bodies(conn).items()
    assert key == "digest:csm-a:2025-W23"
    assert subject == (
        "[basewatch] 2025-W23: 2 active alerts (1 new in this digest), expected value "
        "1,000.00 EUR per month"
    )
    assert body.index(f"#{held} ") < body.index(f"#{sent} ")  # held first, though less urgent
    assert "New in this digest (1)" in body
    assert "Your other active alerts (1)" in body
    assert "why in the digest: heat_recovery's measured precision 20% is below 50%" in body
    assert get_alert(conn, held)["digested_at"] == (T0 + 2 * HOUR).isoformat()
    # once per CSM and ISO week: later the same week nothing more, not even with "everyone"
    # for csm-a (csm-b, with no held alert, gets its first digest now)
    assert enqueue_digests(conn, now=T0 + 3 * DAY, currency="EUR") == 1
    assert set(digest_bodies(conn)) == {"digest:csm-a:2025-W23", "digest:csm-b:2025-W23"}
    assert unheld_csm in [a["alert_id"] for a in list_alerts(conn, owner="csm-b")]
    # next week: the held alert was listed, nothing new is held: no digest without "everyone"
    assert enqueue_digests(conn, now=T0 + 7 * DAY, currency="EUR", everyone=False) == 0
    still = [finding("capacity_saturation", ev=900), finding("heat_recovery", "acct-4", ev=100)]
    again_finding = finding("heat_recovery", "acct-1", "asset-8")
    [again] = apply(conn, [*still, again_finding], T0 + 7 * DAY).opened
    assert enqueue_digests(conn, now=T0 + 7 * DAY + HOUR, currency="EUR", everyone=False) == 1
    _, body = digest_bodies(conn)["digest:csm-a:2025-W24"]
    assert "New in this digest (1)" in body
    new_part, old_part = body.split("Your other active alerts")
    assert f"#{again} " in new_part
    assert f"#{held} " in old_part


def test_a_held_alert_that_closed_before_the_digest_is_not_listed(
    conn: psycopg.Connection,
) -> None:
    [held] = apply(conn, [finding("heat_recovery")], T0).opened
    apply(conn, [], T0 + 3 * DAY)  # cleared for more than 48 h: expired
    assert get_alert(conn, held)["status"] == "expired"
    assert enqueue_digests(conn, now=T0 + 4 * DAY, currency="EUR", everyone=False) == 0
