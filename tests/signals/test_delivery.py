"""The outbox against a real SMTP server (aiosmtpd) and a real HTTP server: retries with
backoff, exactly one delivery, give-up that keeps the row, and concurrent passes."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from basewatch.localbroker import free_port
from signals.delivery import (
    OutboxMessage,
    SmtpTransport,
    Transports,
    WebhookTransport,
    attachment,
    backoff,
    deliver_due,
    enqueue,
    message_id,
    requeue_given_up,
)
from tests.fix_http import WebhookServer, running_webhook_server
from tests.fix_smtp import SmtpServer, running_smtp_server

T0 = dt.datetime(2025, 6, 2, 10, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox RESTART IDENTITY CASCADE")
        yield connection


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    with running_webhook_server() as server:
        yield server


def email(key: str = "alert:1:opened:email", to: str = "ada@example.test") -> OutboxMessage:
    return OutboxMessage("email", to, "[basewatch] P2 test", "Why:\n  - a reason, 61%\n", key)


def webhook(url: str, key: str = "alert:1:opened:webhook") -> OutboxMessage:
    return OutboxMessage("webhook", url, "subject", "body", key, payload={"text": "hello"})


def row(conn: psycopg.Connection, key: str) -> tuple[Any, ...]:
    found = conn.execute(
        "SELECT attempts, last_error, next_attempt_at, sent_at, gave_up_at FROM outbox"
        " WHERE dedup_key = %s",
        (key,),
    ).fetchone()
    assert found is not None
    return found


def test_backoff_doubles_from_30_seconds_up_to_an_hour() -> None:
    assert [backoff(n).total_seconds() for n in range(1, 10)] == [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600,
    ]  # fmt: skip


def test_enqueue_twice_with_one_dedup_key_is_one_row(conn: psycopg.Connection) -> None:
    with conn.transaction():
        assert enqueue(conn, [email(), email()], now=T0) == 1
    with conn.transaction():
        assert enqueue(conn, [email()], now=T0) == 0


@pytest.mark.parametrize("stage", ["DATA", "RCPT"])
def test_smtp_refuses_then_accepts_exactly_one_email(
    conn: psycopg.Connection, smtp: SmtpServer, stage: str
) -> None:
    transport = SmtpTransport(smtp.host, smtp.port, sender="basewatch@example.test", timeout=5)
    with conn.transaction():
        enqueue(conn, [email()], now=T0)
    smtp.refuse_next(2, at=stage)

    first = deliver_due(conn, transport, now=T0)
    attempts, error, next_at, sent_at, _ = row(conn, "alert:1:opened:email")
    assert (first.sent, first.failed) == (0, 1)
    assert (attempts, next_at, sent_at) == (1, T0 + 30 * SECOND, None)
    assert "451" in error
    assert f"SMTP {smtp.host}:{smtp.port}" in error

    assert deliver_due(conn, transport, now=T0 + 29 * SECOND).failed == 0  # not due yet
    assert deliver_due(conn, transport, now=T0 + 30 * SECOND).failed == 1
    assert row(conn, "alert:1:opened:email")[2] == T0 + 90 * SECOND

    done = deliver_due(conn, transport, now=T0 + 90 * SECOND)
    assert done.sent == 1
    assert deliver_due(conn, transport, now=T0 + 1000 * SECOND).sent == 0
    attempts, error, _, sent_at, gave_up_at = row(conn, "alert:1:opened:email")
    assert (attempts, error, sent_at, gave_up_at) == (3, None, T0 + 90 * SECOND, None)

    [message] = smtp.messages
    assert smtp.handler.refused == 2
    assert message["Subject"] == "[basewatch] P2 test"
    assert message["To"] == "ada@example.test"
    assert message["Message-ID"] == message_id("alert:1:opened:email", "basewatch@example.test")
    assert message["X-Basewatch-Dedup-Key"] == "alert:1:opened:email"
    assert "a reason, 61%" in message.get_content()
    assert smtp.handler.envelopes == [("basewatch@example.test", ["ada@example.test"])]


def test_email_with_html_and_attachments_arrives_intact(
    conn: psycopg.Connection, smtp: SmtpServer
) -> None:
    csv_bytes = b"figure,value\nmrr_total,1487.00\n"
    page = "<!DOCTYPE html><html><body><h1>NRR 2024-02 \u2013 report</h1></body></html>"
    message = OutboxMessage(
        "email",
        "cfo@example.test",
        "[basewatch] NRR report 2024-02",
        "NRR 2024-02: 187.44 %\n",
        "nrr-report:2024-02:cfo@example.test",
        payload={
            "html": "<p>NRR 2024-02: <b>187.44 %</b></p>",
            "attachments": [
                attachment("nrr-2024-02.html", "text/html", page.encode()),
                attachment("headline.csv", "text/csv", csv_bytes),
            ],
        },
    )
    with conn.transaction():
        enqueue(conn, [message], now=T0)
    transport = SmtpTransport(smtp.host, smtp.port, timeout=5)
    assert deliver_due(conn, transport, now=T0).sent == 1
    assert deliver_due(conn, transport, now=T0 + 1000 * SECOND).sent == 0
    [received] = smtp.messages
    body = received.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().splitlines() == ["NRR 2024-02: 187.44 %"]
    html = received.get_body(preferencelist=("html",))
    assert html is not None
    assert "<b>187.44 %</b>" in html.get_content()
    files = {str(part.get_filename()): part for part in received.iter_attachments()}
    assert sorted(files) == ["headline.csv", "nrr-2024-02.html"]
    assert files["headline.csv"].get_content_type() == "text/csv"
    assert files["headline.csv"].get_payload(decode=True) == csv_bytes
    assert files["nrr-2024-02.html"].get_payload(decode=True) == page.encode()
    with pytest.raises(ValueError, match="maintype/subtype"):
        attachment("x", "csv", b"")


def test_webhook_500_then_200_is_exactly_one_delivery(
    conn: psycopg.Connection, hook: WebhookServer
) -> None:
    with conn.transaction():
        enqueue(conn, [webhook(hook.url())], now=T0)
    hook.fail_next(1)
    transport = WebhookTransport(timeout=5)

    assert deliver_due(conn, transport, now=T0).failed == 1
    attempts, error, *_ = row(conn, "alert:1:opened:webhook")
    assert attempts == 1
    assert error == "webhook http://127.0.0.1: HTTP 500 upstream exploded"
    assert deliver_due(conn, transport, now=T0 + 30 * SECOND).sent == 1
    assert deliver_due(conn, transport, now=T0 + 3600 * SECOND).sent == 0

    assert [p.status for p in hook.posts] == [500, 200]
    [accepted] = hook.accepted
    assert accepted.body == {"text": "hello"}
    assert accepted.headers["Idempotency-Key"] == "alert:1:opened:webhook"
    assert accepted.headers["Content-Type"].startswith("application/json")
    assert row(conn, "alert:1:opened:webhook")[3] == T0 + 30 * SECOND


def test_gives_up_after_max_attempts_and_keeps_the_row(
    conn: psycopg.Connection, hook: WebhookServer
) -> None:
    with conn.transaction():
        enqueue(conn, [webhook(hook.url())], now=T0)
    hook.fail_next(100)
    transport = WebhookTransport(timeout=5)
    now = T0
    results = []
    for _ in range(4):
        results.append(deliver_due(conn, transport, now=now, max_attempts=3))
        now += dt.timedelta(hours=2)
    assert [(r.failed, r.gave_up) for r in results] == [(1, 0), (1, 0), (0, 1), (0, 0)]
    assert len(hook.posts) == 3
    attempts, error, _, sent_at, gave_up_at = row(conn, "alert:1:opened:webhook")
    assert (attempts, sent_at, gave_up_at) == (3, None, T0 + dt.timedelta(hours=4))
    assert "HTTP 500" in error

    # an operator can put it back once the endpoint is fixed
    hook.fail_next(0)
    assert requeue_given_up(conn, now=now) == 1
    assert deliver_due(conn, transport, now=now).sent == 1
    assert len(hook.accepted) == 1


def test_unreachable_servers_are_failures_with_a_reason(conn: psycopg.Connection) -> None:
    closed_port = free_port()
    with conn.transaction():
        enqueue(
            conn,
            [email(), webhook(f"http://127.0.0.1:{closed_port}/x"), webhook("ftp://x/y", "k")],
            now=T0,
        )
    transport = Transports(
        SmtpTransport("127.0.0.1", closed_port, timeout=2), WebhookTransport(timeout=2)
    )
    assert deliver_due(conn, transport, now=T0).failed == 3
    assert "cannot connect" in row(conn, "alert:1:opened:email")[1]
    assert "refused" in row(conn, "alert:1:opened:webhook")[1].lower()
    assert row(conn, "k")[1] == "webhook: not an http(s) URL"


def test_channel_without_transport_waits_untouched(
    conn: psycopg.Connection, hook: WebhookServer
) -> None:
    with conn.transaction():
        enqueue(conn, [email(), webhook(hook.url())], now=T0)
    result = deliver_due(conn, Transports(WebhookTransport()), now=T0)
    assert (result.sent, result.waiting) == (1, 1)
    assert row(conn, "alert:1:opened:email")[:2] == (0, None)


def test_concurrent_passes_send_each_message_once(db_url: str, smtp: SmtpServer) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox")
        with conn.transaction():
            enqueue(conn, [email(f"k{i}") for i in range(30)], now=T0)
    transport = SmtpTransport(smtp.host, smtp.port, timeout=5)
    results = []

    def one_pass() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            results.append(deliver_due(conn, transport, now=T0))

    threads = [threading.Thread(target=one_pass) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(r.sent for r in results) == 30
    ids = sorted(m["X-Basewatch-Dedup-Key"] for m in smtp.messages)
    assert ids == sorted(f"k{i}" for i in range(30))


def test_deliver_refuses_a_connection_inside_a_transaction(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(RuntimeError, match="no transaction open"):
            deliver_due(conn, WebhookTransport(), now=T0)


# -- a slow peer (issue 11, item 5) -----------------------------------------------------------


class TricklingServer:
    """An HTTP endpoint on 127.0.0.1 that reads a request whole and then answers ``200`` one
    byte every ``interval_s`` (a peer that keeps every per-read timeout happy and never
    finishes), or at once after :meth:`heal`. ``requests`` holds (arrival, Idempotency-Key)."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.requests: list[tuple[float, str]] = []
        self.trickle = True
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self, path: str = "/slow") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def heal(self) -> None:
        self.trickle = False

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            headers = dict(
                line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
            )
            while len(body) < int(headers.get("Content-Length", 0)):
                body += conn.recv(65536)
            self.requests.append((time.monotonic(), headers.get("Idempotency-Key", "")))
            try:
                if not self.trickle:
                    conn.sendall(self.RESPONSE)
                    return
                for byte in self.RESPONSE:
                    if self._closed.wait(self.interval_s):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:  # the client gave up
                return

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for thread in self._threads[1:]:
            thread.join(timeout=5)


@pytest.fixture
def trickle() -> Iterator[TricklingServer]:
    server = TricklingServer(interval_s=1.0)
    try:
        yield server
    finally:
        server.close()


def outbox_rows(conn: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    return {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT dedup_key, attempts, last_error, next_attempt_at, sent_at FROM outbox"
        ).fetchall()
    }


def test_a_trickling_webhook_delays_nothing_else_and_fails_at_its_deadline(
    db_url: str,
    conn: psycopg.Connection,
    smtp: SmtpServer,
    hook: WebhookServer,
    trickle: TricklingServer,
) -> None:
    """``basewatch alerts deliver`` with a webhook that answers one byte a second (a
    60-byte answer): the emails and the fast webhook queued behind it go out at once, the slow
    one fails at its 2 s deadline and the pass ends then; the retry 30 s later sends it (the
    peer is healthy again) and nothing else a second time."""
    now = dt.datetime.now(dt.UTC)
    with conn.transaction():  # the slow ones first: a sequential pass would wait on them
        enqueue(
            conn,
            [
                webhook(trickle.url(), "slow-1"),
                webhook(trickle.url(), "slow-2"),
                *[email(f"mail-{i}", f"csm{i}@example.test") for i in range(5)],
                webhook(hook.url(), "fast"),
            ],
            now=now,
        )
    env = dict(
        os.environ,
        BASEWATCH_DATABASE_URL=db_url,
        BASEWATCH_SMTP_HOST=smtp.host,
        BASEWATCH_SMTP_PORT=str(smtp.port),
        BASEWATCH_WEBHOOK_TIMEOUT_S="2",
    )
    started = time.monotonic()
    cli = subprocess.Popen(
        [sys.executable, "-m", "basewatch", "alerts", "deliver", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # promptly: before the slow peer's deadline could have passed
        while len(smtp.messages) < 5 or not hook.accepted:
            if cli.poll() is not None:
                pytest.fail(f"the pass ended before sending everything: {cli.communicate()}")
            assert time.monotonic() - started < 30, "the emails waited"
            time.sleep(0.02)
        delivered_after = time.monotonic() - started
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    took = time.monotonic() - started
    assert cli.returncode == 0, err
    trickle_first = trickle.requests[0][0] - started
    print(
        f"slow webhook called {trickle_first:.2f} s after start, the emails and the fast "
        f"webhook delivered by {delivered_after:.2f} s, the pass (CLI) ended at {took:.2f} s"
    )
    assert delivered_after < trickle_first + 1.5, (delivered_after, trickle_first)
    assert took < 12, f"the pass took {took:.1f} s (the slow answer lasts 60 s)"
    assert json.loads(out) == {
        "sent": 6,
        "failed": 1,
        "gave_up": 0,
        "deferred": 0,
        "waiting": 0,
        "postponed": 1,
        "expired": 0,
        "requeued": 0,
    }
    rows = outbox_rows(conn)
    attempts, error, next_at, sent_at = rows["slow-1"]
    assert (attempts, sent_at) == (1, None)
    assert "no complete answer within the 2 s deadline" in error
    assert "webhook http://127.0.0.1" in error
    # the second row for the same peer was not tried behind the first: no attempt counted
    assert rows["slow-2"][0] == 0
    assert rows["slow-2"][3] is None
    assert [k for _, k in trickle.requests] == ["slow-1"]

    # the retry rules: not before the backoff, then sent once the peer answers
    transport = Transports(
        SmtpTransport(smtp.host, smtp.port, timeout=5), WebhookTransport(timeout=2)
    )
    trickle.heal()
    early = deliver_due(conn, transport, now=next_at - SECOND)
    assert (early.sent, early.failed) == (1, 0)  # slow-2, due all along
    assert outbox_rows(conn)["slow-1"][0] == 1
    assert deliver_due(conn, transport, now=next_at).sent == 1
    assert deliver_due(conn, transport, now=next_at + dt.timedelta(hours=2)).sent == 0
    # nothing sent twice: each email and the fast webhook once; the slow peer saw slow-1 again
    # with the same Idempotency-Key (its first answer never completed: at least once)
    keys = sorted(m["X-Basewatch-Dedup-Key"] for m in smtp.messages)
    assert keys == [f"mail-{i}" for i in range(5)]
    assert [p.headers["Idempotency-Key"] for p in hook.posts] == ["fast"]
    assert [k for _, k in trickle.requests] == ["slow-1", "slow-2", "slow-1"]
    assert all(r[3] is not None for r in outbox_rows(conn).values())


def test_alert_emails_queued_too_long_ago_expire_with_the_reason_instead_of_going_out_late(
    conn: psycopg.Connection, smtp: SmtpServer
) -> None:
    """Issue 14 item 12: emails queued while SMTP was unset all went out, months late, the
    day SMTP was configured. Past ``email_max_age`` an alert email (or digest) is given up
    unsent with the reason; the monthly NRR report email and webhooks do not expire."""
    max_age = dt.timedelta(hours=72)
    old, fresh = T0 - dt.timedelta(days=40), T0 - dt.timedelta(hours=71)
    with conn.transaction():
        enqueue(conn, [email("alert:1:opened:email"), email("digest:csm-a:2025-04-23")], now=old)
        enqueue(conn, [email("nrr-report:2025-04:cfo@example.test")], now=old)
        enqueue(conn, [webhook("http://127.0.0.1:9/hook", "alert:1:opened:webhook")], now=old)
        enqueue(conn, [email("alert:2:opened:email")], now=fresh)

    # SMTP unset: nothing can be sent, yet the stale alert emails expire while they wait
    waiting = deliver_due(conn, Transports(), now=T0, email_max_age=max_age)
    assert (waiting.expired, waiting.sent, waiting.waiting) == (2, 0, 3)
    for key in ("alert:1:opened:email", "digest:csm-a:2025-04-23"):
        attempts, error, _, sent_at, gave_up_at = row(conn, key)
        assert (attempts, sent_at, gave_up_at) == (0, None, T0)
        assert error == "expired: not sent within 72 h of being queued"
    assert waiting.document()["expired"] == 2

    # the day SMTP is configured only the fresh alert email and the report go out
    transport = SmtpTransport(smtp.host, smtp.port, sender="basewatch@example.test", timeout=5)
    later = T0 + dt.timedelta(minutes=1)
    sent = deliver_due(conn, transport, now=later, email_max_age=max_age)
    assert (sent.sent, sent.expired) == (2, 0)
    assert sorted(m["X-Basewatch-Dedup-Key"] for m in smtp.messages) == [
        "alert:2:opened:email",
        "nrr-report:2025-04:cfo@example.test",
    ]
    # --retry-given-up does not bring the expired ones back to expire again
    assert requeue_given_up(conn, now=later, email_max_age=max_age) == 0
    assert row(conn, "alert:1:opened:email")[4] == T0
