"""Alert messages, reminders and the digest link to the alert on its CSM's page when the API's
public URL is given (``signals.alerts.alert_url``), and say where to answer without it; through
the real lifecycle and outbox on a real database, and the pure renderers for what the
database cannot hold (a CSM id that needs quoting)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from signals.alerts import (
    _select,  # the row the renderers get
    alert_url,
    apply_findings,
    list_alerts,
    render_messages,
    snooze,
)
from signals.digest import enqueue_digests, render_digest
from tests.signals.test_alerts import ALL_KINDS, REGISTRY, T0, saturation

PUBLIC = "https://basewatch.example.test/"  # the trailing slash is dropped
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox RESTART IDENTITY")
        connection.execute(REGISTRY)
        yield connection


def outbox(conn: psycopg.Connection, like: str = "%") -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT dedup_key, channel, body, payload FROM outbox WHERE dedup_key LIKE %s"
        " ORDER BY outbox_id",
        (like,),
    ).fetchall()


def test_alert_url_quotes_the_csm_and_drops_a_trailing_slash() -> None:
    assert alert_url(PUBLIC, "csm-a", 7) == "https://basewatch.example.test/csm/csm-a#alert-7"
    assert (
        alert_url(" https://h/base// ", "csm a/ü", 8)
        == "https://h/base/csm/csm%20a%2F%C3%BC#alert-8"
    )
    assert alert_url("", "csm-a", 7) is None
    assert alert_url(PUBLIC, None, 7) is None


def test_email_and_webhook_link_to_the_alert_with_the_public_url(
    conn: psycopg.Connection,
) -> None:
    [alert_id] = apply_findings(
        conn,
        [saturation("acct-2")],  # csm-b: email and webhook
        now=T0,
        kinds_scored=ALL_KINDS,
        currency="EUR",
        public_url=PUBLIC,
    ).opened
    link = f"https://basewatch.example.test/csm/csm-b#alert-{alert_id}"
    [(_, _, email, _), (_, _, text, payload)] = outbox(conn)
    for body in (email, text, payload["text"]):
        assert f"Open it to acknowledge, snooze, resolve or give feedback: {link}" in body
        assert "Sign in to basewatch" in body
        assert "basewatch alerts ack" not in body  # a field CSM has no shell
    [actions] = [b for b in payload["blocks"] if b["type"] == "actions"]
    [button] = actions["elements"]
    assert (button["type"], button["url"], button["text"]["text"]) == (
        "button",
        link,
        f"Open alert #{alert_id}",
    )


def test_without_the_public_url_the_message_says_whom_to_ask(conn: psycopg.Connection) -> None:
    [alert_id] = apply_findings(
        conn, [saturation("acct-2")], now=T0, kinds_scored=ALL_KINDS, currency="EUR"
    ).opened
    [(_, _, email, _), (_, _, _, payload)] = outbox(conn)
    assert f"Answer it on your basewatch page (alert #{alert_id}); ask your administrator" in email
    assert f"Operators: basewatch alerts ack {alert_id}" in email
    assert "http" not in email
    assert not [b for b in payload["blocks"] if b["type"] == "actions"]
    assert "ask your administrator" in payload["blocks"][-1]["elements"][0]["text"]


def test_a_reminder_links_to_the_alert(conn: psycopg.Connection) -> None:
    [alert_id] = apply_findings(
        conn, [saturation()], now=T0, kinds_scored=ALL_KINDS, currency="EUR", public_url=PUBLIC
    ).opened
    conn.execute("UPDATE outbox SET sent_at = %s", (T0,))  # its first email went out
    snooze(conn, alert_id, T0 + 2 * HOUR, "customer on holiday", "ada", now=T0 + HOUR)
    result = apply_findings(
        conn,
        [saturation()],
        now=T0 + 3 * HOUR,
        kinds_scored=ALL_KINDS,
        currency="EUR",
        public_url=PUBLIC,
    )
    assert result.reminded == 1
    [(_, _, body, _)] = outbox(conn, "%reminder%")
    assert body.startswith(f"Reminder: alert #{alert_id}")
    assert f"https://basewatch.example.test/csm/csm-a#alert-{alert_id}" in body


def test_the_digest_links_each_alert_and_the_page(conn: psycopg.Connection) -> None:
    opened = apply_findings(
        conn,
        [saturation("acct-1"), saturation("acct-2")],
        now=T0,
        kinds_scored=ALL_KINDS,
        currency="EUR",
    ).opened
    assert enqueue_digests(conn, now=T0 + HOUR, currency="EUR", public_url=PUBLIC) == 2
    bodies = {key: body for key, _, body, _ in outbox(conn, "digest:%")}
    ada = bodies["digest:csm-a:2025-W23"]
    assert f"    https://basewatch.example.test/csm/csm-a#alert-{opened[0]}" in ada
    assert "Your alerts, to acknowledge, snooze or resolve: " in ada
    assert ada.rstrip().endswith("the link opens the alert on your page.")
    assert "https://basewatch.example.test/csm/csm-a\n" in ada
    assert "basewatch alerts ack" not in ada
    assert f"csm/csm-b#alert-{opened[1]}" in bodies["digest:csm-b:2025-W23"]


def test_the_digest_without_the_public_url_and_a_quoted_csm_page(
    conn: psycopg.Connection,
) -> None:
    apply_findings(conn, [saturation()], now=T0, kinds_scored=ALL_KINDS, currency="EUR")
    alerts = list_alerts(conn, status="active", owner="csm-a")
    _, plain = render_digest("Ada", alerts, "2025-W23", "EUR")
    assert "ask your administrator for the basewatch address" in plain
    assert "Operators: basewatch alerts ack ID" in plain
    assert "http" not in plain
    _, linked = render_digest(
        "Ada", alerts, "2025-W23", "EUR", public_url="https://h/", csm_id="csm a/ü"
    )
    assert "Your alerts, to acknowledge, snooze or resolve: https://h/csm/csm%20a%2F%C3%BC\n" in (
        linked
    )


def test_render_messages_quotes_the_owner_in_the_link(conn: psycopg.Connection) -> None:
    [alert_id] = apply_findings(
        conn, [saturation("acct-2")], now=T0, kinds_scored=ALL_KINDS, currency="EUR"
    ).opened
    [row] = _select(conn, sql.SQL(" WHERE a.alert_id = %s"), [alert_id])
    row["owner_csm_id"] = "csm b/ü"  # not a valid id in the registry; the renderer quotes it
    email, webhook = render_messages(row, "opened", "EUR", "https://h")
    link = f"https://h/csm/csm%20b%2F%C3%BC#alert-{alert_id}"
    assert link in email.body
    assert webhook.payload is not None
    [actions] = [b for b in webhook.payload["blocks"] if b["type"] == "actions"]
    assert actions["elements"][0]["url"] == link


def test_the_digest_job_links_to_the_configured_public_url(conn: psycopg.Connection) -> None:
    """The composition root passes ``BASEWATCH_API_PUBLIC_URL`` down (signals reads no
    settings)."""
    from basewatch.jobs import digest
    from core.settings import Settings

    [alert_id] = apply_findings(
        conn, [saturation()], now=T0, kinds_scored=ALL_KINDS, currency="EUR"
    ).opened
    settings = Settings(api_public_url="https://bw.example.test", alert_digest=True)
    assert digest(conn, settings, T0 + HOUR) == 1
    [(_, _, body, _)] = outbox(conn, "digest:%")
    assert f"https://bw.example.test/csm/csm-a#alert-{alert_id}" in body
