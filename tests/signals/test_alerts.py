"""The alert lifecycle on a real database: dedup, update, expiry, cooldown, snooze, the CSM's
transitions, feedback, the messages enqueued, the digest, and the ``alerts`` commands."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from basewatch.alerts_commands import register
from basewatch.commands import Commands
from core.errors import InputError, NotFound
from core.settings import Settings
from signals.alerts import (
    AlertStateError,
    ApplyResult,
    acknowledge,
    alert_history,
    apply_findings,
    due_for,
    feedback,
    get_alert,
    list_alerts,
    priority_for,
    resolve,
    snooze,
)
from signals.catalogue import PriceBook
from signals.delivery import SmtpTransport, deliver_due
from signals.digest import enqueue_digests
from signals.findings import Finding, merge_components
from signals.scoring import score
from signals.wear_findings import wear_findings
from tests.fix_db import needs_rollup_tables
from tests.fix_smtp import SmtpServer, running_smtp_server

T0 = dt.datetime(2025, 6, 2, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
ALL_KINDS = {"capacity_saturation", "usage_decline", "service_due"}

REGISTRY = """
INSERT INTO csms (csm_id, name, email, webhook_url) VALUES
    ('csm-a', 'Ada Alvarez', 'ada@example.test', NULL),
    ('csm-b', 'Ben Brook', 'ben@example.test', 'http://127.0.0.1:9/hook'),
    ('csm-c', 'Cy Cole', NULL, NULL)
ON CONFLICT DO NOTHING;
INSERT INTO accounts (account_id, name, csm_id) VALUES
    ('acct-1', 'Acme Air', 'csm-a'),
    ('acct-2', 'Brio Foods', 'csm-b'),
    ('acct-3', 'Cobalt Metal', 'csm-c')
ON CONFLICT DO NOTHING;
"""


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox RESTART IDENTITY")
        connection.execute(REGISTRY)
        yield connection


def saturation(account: str = "acct-1", score: float = 0.8, value: str = "1200") -> Finding:
    return Finding(
        account_id=account,
        kind="capacity_saturation",
        subject="asset-7",
        score=score,
        value=Decimal(value),
        horizon_days=30,
        reasons=(
            "load above 95% in 61% of production hours over 28 days",
            "pressure below set point 7% of the time",
        ),
        figures={"load_high_share": 0.61, "pressure_sag_share": 0.07},
    )


def apply(
    conn: psycopg.Connection, findings: list[Finding], now: dt.datetime, **kw: object
) -> ApplyResult:
    kw.setdefault("kinds_scored", ALL_KINDS)
    kw.setdefault("currency", "EUR")
    return apply_findings(conn, findings, now=now, **kw)  # type: ignore[arg-type]


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def outbox(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT dedup_key, channel, recipient, subject, body, payload FROM outbox"
        " ORDER BY outbox_id"
    ).fetchall()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


def actions(conn: psycopg.Connection, alert_id: int) -> list[tuple[str, str]]:
    return [(h["action"], h["actor"]) for h in alert_history(conn, alert_id)]


# -- pure rules -------------------------------------------------------------------------------


def test_priority_from_expected_value_and_due_date_rules() -> None:
    # the expected value alone sets the priority: 1 from 1,000, 2 from 400, 3 from 150, 4
    # from 50, 5 below; overdue escalates one level, never past 1
    assert [priority_for(Decimal(v)) for v in ("1500", "1000", "999.99", "400", "150")] == [
        1, 1, 2, 2, 3,
    ]  # fmt: skip
    assert [priority_for(Decimal(v)) for v in ("149.99", "50", "49.99", "0")] == [4, 4, 5, 5]
    assert priority_for(Decimal("10"), overdue=True) == 4
    assert priority_for(Decimal("1500"), overdue=True) == 1
    assert due_for(T0, 0) == T0 + DAY
    assert due_for(T0, 5) == T0 + 5 * DAY
    assert due_for(T0, 90) == T0 + 14 * DAY


# -- one scoring pass -------------------------------------------------------------------------


def test_same_finding_twice_is_one_alert_and_one_delivery(conn: psycopg.Connection) -> None:
    first = apply(conn, [saturation()], T0)
    second = apply(conn, [saturation()], T0 + HOUR)

    assert len(first.opened) == 1
    assert (second.opened, second.updated, second.messages) == ((), 1, 0)
    alert_id = first.opened[0]
    assert count(conn, "alerts") == 1
    [(key, channel, recipient, subject, body, _)] = outbox(conn)
    assert (key, channel, recipient) == (
        f"alert:{alert_id}:opened:email",
        "email",
        "ada@example.test",
    )
    assert subject == "[basewatch] P2 capacity_saturation: Acme Air / asset-7"
    for text in (
        "capacity_saturation (expansion), priority 2 of 5",
        "Account: Acme Air (acct-1)",
        "load above 95% in 61% of production hours over 28 days",
        "load_high_share=0.61",
        "Score 0.80 · value 1,200.00 EUR per month · expected value 960.00 EUR per month",
        "due 2025-06-16",
        f"basewatch alerts ack {alert_id}",
        "Promise: the account buys an expansion within 180 days of the alert",
    ):
        assert text in body
    alert = get_alert(conn, alert_id)
    assert alert["promise"] == "the account buys an expansion within 180 days of the alert"
    assert alert["status"] == "open"
    assert alert["owner_csm_id"] == "csm-a"
    assert alert["opened_at"] == T0.isoformat()
    assert alert["last_seen_at"] == (T0 + HOUR).isoformat()
    # an unchanged finding confirms the alert without a history row
    assert actions(conn, alert_id) == [("opened", "system")]


def test_messages_write_amounts_in_the_currency_they_are_given(conn: psycopg.Connection) -> None:
    """The reporting currency is an argument, not module state: two passes in one process
    with different currencies each write their own."""
    apply(conn, [saturation("acct-1")], T0, currency="CHF")
    apply(conn, [saturation("acct-2")], T0, currency="USD")
    bodies = {row[3]: row[4] for row in outbox(conn)}
    assert len(bodies) == 2
    [chf] = [b for s, b in bodies.items() if "Acme Air" in s]
    [usd] = [b for s, b in bodies.items() if "Acme Air" not in s]
    assert "value 1,200.00 CHF per month · expected value 960.00 CHF per month" in chf
    assert "value 1,200.00 USD per month · expected value 960.00 USD per month" in usd


def test_new_figures_update_the_alert_without_a_delivery(conn: psycopg.Connection) -> None:
    [alert_id] = apply(conn, [saturation(score=0.5)], T0).opened
    result = apply(conn, [saturation(score=0.9, value="2000")], T0 + 2 * HOUR)

    assert (result.opened, result.updated, result.messages) == ((), 1, 0)
    alert = get_alert(conn, alert_id)
    assert (alert["score"], alert["value"], alert["expected_value"]) == (0.9, "2000.00", "1800.00")
    assert alert["priority"] == 1  # expected value 1,800
    assert alert["due_at"] == (T0 + 14 * DAY).isoformat()  # never moves later
    assert count(conn, "outbox") == 1
    [_, updated] = alert_history(conn, alert_id)
    assert updated["action"] == "updated"
    assert updated["detail"]["score"] == [0.5, 0.9]
    assert updated["detail"]["priority"] == [2, 1]  # from an expected value of 600 to 1,800


def component_overdue(hours_left: float, score: float = 1.0, value: str = "120") -> Finding:
    """A component past its limit, as ``signals.wear_findings`` reports it day by day."""
    return Finding(
        account_id="acct-1",
        kind="service_due",
        subject="asset-7/oil_filter",
        score=score,
        value=Decimal(value),
        horizon_days=1,
        reasons=(f"oil_filter of asset-7: overdue by {-hours_left:,.0f} running hours",),
        figures={"hours_left": hours_left},
        overdue=hours_left < 0,
    )


def test_an_overdue_alert_escalates_once_and_records_only_what_a_person_cares_about(
    conn: psycopg.Connection,
) -> None:
    """Issue 14 item 10: an overdue component sat at the same due date for two months
    without escalation and collected 60 "updated" history entries (its hours and reasons
    change every day)."""
    # a component still ahead of its limit: 60 h left, expected value 108 -> P4
    ahead = Finding(
        "acct-1", "service_due", "asset-7/oil_filter", 0.9, Decimal(120), 3,
        ("oil_filter of asset-7: about 60 running hours left",), {"hours_left": 60.0},
    )  # fmt: skip
    [alert_id] = apply(conn, [ahead], T0).opened
    assert get_alert(conn, alert_id)["priority"] == 4
    # then overdue, deeper every day for 60 days: hours, score and reasons change each pass
    for day in range(1, 61):
        overdue = component_overdue(-20.0 * day, score=min(1.0, 0.9 + day / 1000))
        apply(conn, [overdue], T0 + day * DAY)
    alert = get_alert(conn, alert_id)
    assert alert["reasons"] == ["oil_filter of asset-7: overdue by 1,200 running hours"]
    # the first overdue pass (horizon 1 day) moved the due date a day earlier; since then it
    # stays the date the CSM was asked to act by
    assert alert["due_at"] == (T0 + 2 * DAY).isoformat()
    assert alert["priority"] == 3  # escalated one level, not one per pass
    history = alert_history(conn, alert_id)
    assert [h["action"] for h in history] == ["opened", "updated"]
    assert history[1]["at"] == (T0 + DAY).isoformat()  # the finding turned overdue
    assert history[1]["detail"]["changed"] == ["priority"]
    assert history[1]["detail"]["priority"] == [4, 3]

    # a material change of the money at stake is recorded; a small one is not
    apply(conn, [component_overdue(-1200.0, value="125")], T0 + 61 * DAY)
    apply(conn, [component_overdue(-1220.0, value="140")], T0 + 62 * DAY)  # same priority
    last = alert_history(conn, alert_id)[-1]
    assert (len(alert_history(conn, alert_id)), last["detail"]["changed"]) == (3, ["value"])
    assert last["detail"]["value"] == [125, 140]


def test_an_alert_past_its_due_date_escalates_one_level(conn: psycopg.Connection) -> None:
    [alert_id] = apply(conn, [saturation()], T0).opened  # P2 (expected value 960), due in 14 d
    apply(conn, [saturation()], T0 + 13 * DAY)
    assert get_alert(conn, alert_id)["priority"] == 2
    for day in (15, 16, 40):
        apply(conn, [saturation()], T0 + day * DAY)
    assert get_alert(conn, alert_id)["priority"] == 1
    assert [h["action"] for h in alert_history(conn, alert_id)] == ["opened", "updated"]


def test_strongest_of_duplicate_findings_in_one_pass_wins(conn: psycopg.Connection) -> None:
    result = apply(conn, [saturation(score=0.3), saturation(score=0.7)], T0)
    assert get_alert(conn, result.opened[0])["score"] == 0.7
    assert result.cooldown == 0


def test_alert_expires_once_the_condition_cleared_for_clear_after(
    conn: psycopg.Connection,
) -> None:
    [alert_id] = apply(conn, [saturation()], T0).opened
    acknowledge(conn, alert_id, "ada", now=T0 + HOUR)

    assert apply(conn, [], T0 + 47 * HOUR).expired == 0
    # kinds the pass did not score, and accounts outside it, never expire
    assert apply(conn, [], T0 + 49 * HOUR, kinds_scored={"usage_decline"}).expired == 0
    assert apply(conn, [], T0 + 49 * HOUR, accounts_scored={"acct-2"}).expired == 0
    assert get_alert(conn, alert_id)["status"] == "acknowledged"

    assert apply(conn, [], T0 + 49 * HOUR).expired == 1
    alert = get_alert(conn, alert_id)
    assert (alert["status"], alert["closed_by"]) == ("expired", "system")
    assert alert["closed_at"] == (T0 + 49 * HOUR).isoformat()
    assert actions(conn, alert_id)[-1] == ("expired", "system")
    assert count(conn, "outbox") == 1


def test_custom_clear_after(conn: psycopg.Connection) -> None:
    apply(conn, [saturation()], T0)
    assert apply(conn, [], T0 + 3 * HOUR, clear_after=2 * HOUR).expired == 1


def test_dismissed_alert_is_not_reopened_within_the_cooldown(conn: psycopg.Connection) -> None:
    [first] = apply(conn, [saturation()], T0).opened
    resolve(conn, first, "dismissed", "ada", "customer is replacing the line", now=T0 + HOUR)

    held = apply(conn, [saturation()], T0 + 2 * HOUR)
    assert (held.opened, held.cooldown) == ((), 1)
    assert apply(conn, [saturation()], T0 + HOUR + 7 * DAY - HOUR).opened == ()

    reopened = apply(conn, [saturation()], T0 + HOUR + 7 * DAY + HOUR)
    [second] = reopened.opened
    assert second != first
    assert [k for k, *_ in outbox(conn)] == [
        f"alert:{first}:opened:email",
        f"alert:{second}:opened:email",
    ]


def test_expired_alert_also_starts_a_cooldown(conn: psycopg.Connection) -> None:
    apply(conn, [saturation()], T0)
    apply(conn, [], T0 + 50 * HOUR)
    assert apply(conn, [saturation()], T0 + 60 * HOUR).cooldown == 1
    assert apply(conn, [saturation()], T0 + 60 * HOUR, cooldown=HOUR).opened != ()


def test_snooze_holds_messages_then_reminds(conn: psycopg.Connection, smtp: SmtpServer) -> None:
    transport = SmtpTransport(smtp.host, smtp.port, sender="bw@example.test")
    # alert 1's first message goes out before its snooze; alert 2 is snoozed before delivery
    [sent_first] = apply(conn, [saturation()], T0).opened
    assert deliver_due(conn, transport, now=T0).sent == 1
    [held_back] = apply(conn, [saturation("acct-2")], T0).opened
    until = T0 + 3 * DAY
    snooze(conn, sent_first, until, "on holiday", "ada", now=T0 + HOUR)
    snooze(conn, held_back, until, "customer visit planned", "ben", now=T0 + HOUR)

    during = apply(conn, [saturation(score=0.9), saturation("acct-2", score=0.9)], T0 + DAY)
    result = deliver_due(conn, transport, now=T0 + DAY)
    assert (during.updated, during.messages, during.reminded) == (2, 0, 0)
    assert (result.sent, result.deferred) == (0, 2)  # ben's email and webhook wait
    assert count(conn, "outbox WHERE sent_at IS NULL") == 2
    assert get_alert(conn, held_back)["score"] == 0.9

    after = apply(conn, [saturation(), saturation("acct-2")], until + HOUR)
    assert after.reminded == 1  # alert 2's own first message is still to go: no reminder
    keys = {k for k, *_ in outbox(conn)}
    assert f"alert:{sent_first}:reminder:20250605T100000Z:email" in keys
    assert not any(k.startswith(f"alert:{held_back}:reminder") for k in keys)
    for alert_id in (sent_first, held_back):
        alert = get_alert(conn, alert_id)
        assert (alert["snoozed_until"], alert["snooze_reason"]) == (None, None)
        assert "snooze_ended" in [a for a, _ in actions(conn, alert_id)]
    # the next pass does not remind again
    assert apply(conn, [saturation(), saturation("acct-2")], until + 2 * HOUR).reminded == 0

    deliver_due(conn, transport, now=until + HOUR)
    subjects = [m["Subject"] for m in smtp.messages]
    assert subjects == [
        "[basewatch] P2 capacity_saturation: Acme Air / asset-7",
        "[basewatch] P2 capacity_saturation: Brio Foods / asset-7",
        "[basewatch] P2 capacity_saturation: Acme Air / asset-7 (reminder)",
    ]
    history = alert_history(conn, held_back)
    snoozed = next(h for h in history if h["action"] == "snoozed")
    assert snoozed["actor"] == "ben"
    assert snoozed["detail"] == {"until": until.isoformat(), "reason": "customer visit planned"}


def test_owner_with_email_and_webhook_gets_both(conn: psycopg.Connection) -> None:
    [alert_id] = apply(conn, [saturation("acct-2")], T0).opened
    rows = outbox(conn)
    assert [(k, c, r) for k, c, r, *_ in rows] == [
        (f"alert:{alert_id}:opened:email", "email", "ben@example.test"),
        (f"alert:{alert_id}:opened:webhook", "webhook", "http://127.0.0.1:9/hook"),
    ]
    payload = rows[1][5]
    assert "load above 95%" in payload["text"]
    assert payload["blocks"][0]["type"] == "header"
    fields = {
        f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in payload["blocks"][2]["fields"]
    }
    assert fields["*Expected value / month*"] == "960.00 EUR"
    assert fields["*Owner*"] == "Ben Brook"


def test_owner_without_contact_opens_the_alert_and_warns(
    conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="signals.alerts"):
        result = apply(conn, [saturation("acct-3")], T0)
    assert len(result.opened) == 1
    assert result.messages == 0
    assert "owner csm-c has no email or webhook" in caplog.text


def test_unknown_account_opens_an_alert_without_owner(conn: psycopg.Connection) -> None:
    [alert_id] = apply(conn, [saturation("acct-unknown")], T0).opened
    assert get_alert(conn, alert_id)["owner_csm_id"] is None


def test_apply_inside_the_callers_transaction_commits_with_it(db_url: str) -> None:
    with psycopg.connect(db_url) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox")
        connection.execute(REGISTRY)
        connection.commit()
        connection.execute("SELECT 1")  # a transaction is open
        apply(connection, [saturation()], T0)
        connection.rollback()
        assert count(connection, "alerts") == 0
        apply(connection, [saturation()], T0)
        apply(connection, [saturation()], T0 + HOUR)  # same transaction, twice
        connection.commit()
        assert count(connection, "alerts") == 1


# -- the CSM's changes ------------------------------------------------------------------------


def test_lifecycle_keeps_who_and_when_and_rejects_invalid_changes(
    conn: psycopg.Connection,
) -> None:
    [alert_id] = apply(conn, [saturation()], T0).opened

    acked = acknowledge(conn, alert_id, "ada", now=T0 + HOUR)
    assert (acked["status"], acked["acknowledged_by"]) == ("acknowledged", "ada")
    assert acked["acknowledged_at"] == (T0 + HOUR).isoformat()
    with pytest.raises(AlertStateError, match="is acknowledged: cannot acknowledge"):
        acknowledge(conn, alert_id, "ada")

    won = resolve(conn, alert_id, "won", "ada", "sold a second compressor", now=T0 + 2 * DAY)
    assert (won["status"], won["closed_by"], won["note"]) == (
        "won",
        "ada",
        "sold a second compressor",
    )
    assert won["closed_at"] == (T0 + 2 * DAY).isoformat()
    with pytest.raises(AlertStateError, match="is won: cannot resolve"):
        resolve(conn, alert_id, "lost", "ada")
    with pytest.raises(AlertStateError, match="cannot snooze"):
        snooze(conn, alert_id, T0 + 5 * DAY, "later", "ada", now=T0 + 3 * DAY)
    with pytest.raises(AlertStateError, match="cannot acknowledge"):
        acknowledge(conn, alert_id, "ada")
    assert actions(conn, alert_id) == [
        ("opened", "system"),
        ("acknowledged", "ada"),
        ("won", "ada"),
    ]


def test_open_alert_can_be_resolved_directly_and_bad_input_is_refused(
    conn: psycopg.Connection,
) -> None:
    [alert_id] = apply(conn, [saturation()], T0).opened
    with pytest.raises(NotFound, match="no alert #999"):
        acknowledge(conn, 999, "ada")
    with pytest.raises(InputError, match="outcome must be one of won, lost, dismissed"):
        resolve(conn, alert_id, "expired", "ada")  # not a CSM outcome
    with pytest.raises(InputError, match="not in the future"):
        snooze(conn, alert_id, T0 - HOUR, "past", "ada", now=T0)
    with pytest.raises(InputError, match="needs a reason"):
        snooze(conn, alert_id, T0 + DAY, "  ", "ada", now=T0)
    with pytest.raises(InputError, match="who makes the change"):
        acknowledge(conn, alert_id, " ")
    assert resolve(conn, alert_id, "lost", "ada", now=T0 + HOUR)["status"] == "lost"


def test_feedback_is_kept_with_who_and_when(conn: psycopg.Connection) -> None:
    [alert_id] = apply(conn, [saturation()], T0).opened
    resolve(conn, alert_id, "won", "ada", now=T0 + DAY)
    feedback(conn, alert_id, True, "ada", now=T0 + DAY)
    alert = feedback(conn, alert_id, False, "ben", now=T0 + 2 * DAY)
    assert (alert["feedback"], alert["feedback_by"]) == ("not_useful", "ben")
    assert alert["feedback_at"] == (T0 + 2 * DAY).isoformat()
    given = [h["detail"] for h in alert_history(conn, alert_id) if h["action"] == "feedback"]
    assert given == [{"feedback": "useful"}, {"feedback": "not_useful"}]


def test_list_alerts_filters_and_is_json_ready(conn: psycopg.Connection) -> None:
    [a1] = apply(conn, [saturation()], T0).opened
    [a2] = apply(conn, [saturation("acct-2", score=0.2)], T0).opened
    resolve(conn, a2, "dismissed", "ben", now=T0 + HOUR)

    everything = list_alerts(conn)
    json.dumps(everything)  # no default= needed
    assert [a["alert_id"] for a in everything] == [a1, a2]  # active first
    assert [a["alert_id"] for a in list_alerts(conn, status="active")] == [a1]
    assert [a["alert_id"] for a in list_alerts(conn, status="closed")] == [a2]
    assert [a["alert_id"] for a in list_alerts(conn, owner="csm-b")] == [a2]
    assert list_alerts(conn, kind="usage_decline") == []
    assert [a["alert_id"] for a in list_alerts(conn, account="acct-1")] == [a1]
    assert len(list_alerts(conn, limit=1)) == 1
    first = everything[0]
    assert first["reasons"][0].startswith("load above 95%")
    assert first["figures"] == {"load_high_share": 0.61, "pressure_sag_share": 0.07}
    assert (first["value"], first["expected_value"], first["score"]) == ("1200.00", "960.00", 0.8)
    assert "owner_email" not in first


def test_daily_digest_once_per_csm_and_day(conn: psycopg.Connection) -> None:
    apply(conn, [saturation(), saturation("acct-2"), saturation("acct-3")], T0)
    before = count(conn, "outbox")
    assert (
        enqueue_digests(conn, now=T0 + HOUR, currency="CHF", period="day") == 2
    )  # csm-c: no email
    assert enqueue_digests(conn, now=T0 + 2 * HOUR, currency="CHF", period="day") == 0
    rows = conn.execute(
        "SELECT dedup_key, recipient, subject, body FROM outbox WHERE dedup_key LIKE 'digest:%'"
        " ORDER BY dedup_key"
    ).fetchall()
    assert [r[:2] for r in rows] == [
        ("digest:csm-a:2025-06-02", "ada@example.test"),
        ("digest:csm-b:2025-06-02", "ben@example.test"),
    ]
    assert rows[0][2] == (
        "[basewatch] 2025-06-02: 1 active alerts, expected value 960.00 CHF per month"
    )
    assert "capacity_saturation" in rows[0][3]
    assert count(conn, "outbox") == before + 2


# -- the commands -----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="basewatch")
    register(Commands(parser.add_subparsers(dest="command", required=True)))
    return parser.parse_args(list(argv))


def test_alert_commands_in_process(
    conn: psycopg.Connection, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # the alerts are dated T0 (2025): expiry by age would give their emails up, not defer them
    settings = Settings(database_url=db_url, alert_email_max_age_hours=0)
    [alert_id] = apply(conn, [saturation()], T0).opened

    args = parse("alerts", "list", "--json")
    assert args.handler(settings, args) == 0
    [listed] = json.loads(capsys.readouterr().out)["alerts"]
    assert listed["alert_id"] == alert_id

    args = parse("alerts", "ack", str(alert_id), "--by", "ada", "--json")
    assert args.handler(settings, args) == 0
    assert json.loads(capsys.readouterr().out)["acknowledged_by"] == "ada"

    args = parse(
        "alerts", "snooze", str(alert_id), "--hours", "24", "--reason", "trip", "--by", "ada"
    )
    assert args.handler(settings, args) == 0
    assert f"alert #{alert_id} snoozed until" in capsys.readouterr().out

    args = parse("alerts", "feedback", str(alert_id), "--not-useful", "--by", "ada", "--json")
    assert args.handler(settings, args) == 0
    assert json.loads(capsys.readouterr().out)["feedback"] == "not_useful"

    args = parse("alerts", "resolve", str(alert_id), "--outcome", "won", "--note", "sold", "--json")
    assert args.handler(settings, args) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "won"

    args = parse("alerts", "ack", str(alert_id))
    with pytest.raises(AlertStateError):
        args.handler(settings, args)

    args = parse("alerts", "deliver", "--json")
    assert args.handler(settings, args) == 0
    document = json.loads(capsys.readouterr().out)
    # the alert's email waits for the snooze's end (and no SMTP host is configured anyway)
    assert (document["sent"], document["deferred"], document["waiting"]) == (0, 1, 0)


def run_cli(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    environ["BASEWATCH_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "basewatch", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_alerts_list_json_is_one_document(conn: psycopg.Connection, db_url: str) -> None:
    [alert_id] = apply(conn, [saturation()], T0).opened
    result = run_cli("alerts", "list", "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    [listed] = json.loads(result.stdout)["alerts"]
    assert listed["alert_id"] == alert_id

    missing = run_cli("alerts", "ack", "99999", db_url=db_url)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.strip().splitlines() == ["basewatch: error: no alert #99999"]

    assert run_cli("alerts", "snooze", str(alert_id), db_url=db_url).returncode == 2


def test_alerts_list_says_how_many_it_left_out_and_money_carries_its_currency(
    conn: psycopg.Connection,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14 item 11: ``alerts list`` stopped at 100 of 133 without a word, and its
    expected values had no currency."""
    apply(conn, [saturation(a) for a in ("acct-1", "acct-2", "acct-3")], T0)
    settings = Settings(database_url=db_url, reporting_currency="CHF")

    args = parse("alerts", "list", "--limit", "2")
    assert args.handler(settings, args) == 0
    out, err = capsys.readouterr()
    assert err.strip() == ("showing 2 of 3 alerts (the most urgent first); --limit N shows more")
    assert out.count("EV 960.00 CHF/month") == 2

    args = parse("alerts", "list", "--limit", "2", "--json")
    assert args.handler(settings, args) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert (len(document["alerts"]), document["total"], document["limit"]) == (2, 3, 2)
    assert {"alert_id", "expected_value", "reasons"} <= document["alerts"][0].keys()
    assert err == ""

    args = parse("alerts", "list")
    assert args.handler(settings, args) == 0
    out, err = capsys.readouterr()
    assert (out.count("#"), err) == (3, "")


# -- one alert per asset and promise ----------------------------------------------------------


def component(
    name: str, hours_left: float, score: float, horizon: int, kind: str = "service_due"
) -> Finding:
    return Finding(
        "acct-1", kind, f"asset-7/{name}", score, Decimal(120), horizon,
        (f"{name} of asset-7: about {hours_left:,.0f} running hours left",),
        {"hours_left": hours_left}, overdue=hours_left < 0,
    )  # fmt: skip


def test_component_findings_of_one_asset_merge_into_one_finding() -> None:
    other_asset = Finding("acct-1", "service_due", "asset-8/bearing", 0.4, Decimal(120), 20, ("b",))
    account = saturation()
    found = merge_components(
        [
            account,
            component("oil_filter", 200, 0.5, 10),
            other_asset,
            component("separator", -30, 0.9, 1),
            component("separator", -10, 0.3, 1),  # the same subject twice: the stronger kept
            component("bearing", 400, 0.3, 25, kind="third_party_parts"),  # another promise
        ]
    )
    assert [(f.kind, f.subject) for f in found] == [
        ("capacity_saturation", "asset-7"),  # not a component subject: untouched
        ("service_due", "asset-7"),  # in the place of its group's first finding
        ("service_due", "asset-8"),
        ("third_party_parts", "asset-7"),
    ]
    assert found[0] is account
    merged = found[1]
    assert (merged.score, merged.value, merged.horizon_days, merged.overdue) == (
        0.9,  # the largest score
        Decimal(240),  # the sum of the values
        1,  # the shortest horizon: the earliest due date
        True,
    )
    assert merged.expected_value == Decimal("216.00")
    assert merged.reasons == (
        "2 components of asset-7: separator, oil_filter (soonest first)",
        "separator of asset-7: about -30 running hours left",
        "oil_filter of asset-7: about 200 running hours left",
    )
    assert merged.figures == {
        "components": 2.0,
        "separator.hours_left": -30,
        "oil_filter.hours_left": 200,
    }
    assert found[2].reasons == ("1 component of asset-8: bearing", "b")
    assert merge_components([account]) == [account]


def test_an_asset_level_finding_joins_the_components_of_its_asset() -> None:
    """A finding about the asset as a whole of the same kind is one more entry of its alert
    (the merge goes by subject, whatever the kind)."""
    whole = Finding(
        "acct-1", "service_due", "asset-7", 0.6, Decimal(120), 3, ("fails in 72 h",),
        {"probability": 0.6},
    )  # fmt: skip
    [merged] = merge_components([whole, component("oil_filter", 200, 0.5, 10)])
    assert merged.subject == "asset-7"
    assert merged.reasons[0] == (
        "1 component of asset-7: the asset as a whole, oil_filter (soonest first)"
    )
    assert merged.figures == {"components": 1.0, "probability": 0.6, "oil_filter.hours_left": 200}
    assert merge_components([whole]) == [whole]  # no component: nothing to merge


def test_merged_component_findings_are_one_alert_and_one_message(
    conn: psycopg.Connection,
) -> None:
    findings = [component("oil_filter", 200, 0.5, 10), component("separator", 50, 0.8, 3)]
    result = apply(conn, merge_components(findings), T0)
    [alert_id] = result.opened
    alert = get_alert(conn, alert_id)
    assert (alert["subject"], alert["value"], alert["horizon_days"]) == ("asset-7", "240.00", 3)
    assert alert["reasons"][0] == "2 components of asset-7: separator, oil_filter (soonest first)"
    assert result.messages == 1  # one email to csm-a, not one per component
    # a third component joins the same alert: an update, no new alert or message
    more = [*findings, component("bearing", 300, 0.4, 12)]
    again = apply(conn, merge_components(more), T0 + HOUR)
    assert (again.opened, again.updated, again.messages) == ((), 1, 0)
    assert get_alert(conn, alert_id)["figures"]["components"] == 3


def test_stored_per_component_alerts_expire_once_their_condition_clears(
    conn: psycopg.Connection,
) -> None:
    """Alerts opened before the merge keep their asset/component subject; no finding carries
    it any more, so they expire after clear_after while the asset's alert carries on."""
    findings = [component("oil_filter", 200, 0.5, 10), component("separator", 50, 0.8, 3)]
    old = apply(conn, findings, T0).opened  # as stored before the merge
    assert len(old) == 2
    [merged] = apply(conn, merge_components(findings), T0 + HOUR).opened
    apply(conn, merge_components(findings), T0 + 47 * HOUR)
    assert {get_alert(conn, i)["status"] for i in old} == {"open"}  # not yet 48 h clear
    result = apply(conn, merge_components(findings), T0 + 50 * HOUR)
    assert result.expired == 2
    assert {get_alert(conn, i)["status"] for i in old} == {"expired"}
    assert get_alert(conn, merged)["status"] == "open"


def test_the_scoring_pass_merges_the_components_of_an_asset(db_url: str) -> None:
    """Two catalogued components of one machine both due: one service_due finding, subject
    the asset, from ``signals.scoring.score`` (which the backtest's replay calls too)."""
    as_of = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with psycopg.connect(db_url) as conn:
        needs_rollup_tables(conn)
        conn.execute("INSERT INTO accounts (account_id, name) VALUES ('acc-m', 'Merge')")
        conn.execute("INSERT INTO assets (asset_id, account_id) VALUES ('m-1', 'acc-m')")
        # 20 running hours a day, 9,980 h on the counter at the end: 220 h and 480 h left
        conn.execute(
            "INSERT INTO components (asset_id, kind, rated_life_hours,"
            " installed_at_running_hours) VALUES ('m-1', 'inlet_valve', 1500, 8700),"
            " ('m-1', 'motor_bearing', 1000, 9460)"
        )
        for day in range(70, 0, -1):
            hours = 10_000.0 - day * 20.0
            conn.execute(
                "INSERT INTO rollup_daily (asset_id, bucket, samples, stats)"
                " VALUES ('m-1', %s, 24, %s)",
                (as_of - day * DAY, Jsonb({"running_hours": [hours, hours, hours, hours, 1]})),
            )
        wear = [f for f in wear_findings(conn, as_of, PriceBook()) if f.kind == "service_due"]
        assert sorted(f.subject for f in wear) == ["m-1/inlet_valve", "m-1/motor_bearing"]
        scored = [f for f in score(conn, as_of, PriceBook(), models={}) if f.account_id == "acc-m"]
        conn.rollback()
    [merged] = [f for f in scored if f.kind == "service_due"]
    assert merged.subject == "m-1"
    assert merged.value == 2 * PriceBook().component_service
    assert merged.reasons[0] == "2 components of m-1: inlet_valve, motor_bearing (soonest first)"
