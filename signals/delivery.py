"""The alert outbox: messages written in the same transaction as the alert change that caused
them, then delivered by :func:`deliver_due` through a transport (SMTP, webhook) with retries.

Guarantees and their limits:

- **Never lost.** A row stays in ``outbox`` until it is sent or given up; a row given up
  (``gave_up_at``, after ``max_attempts`` failures) keeps its last error, and
  :func:`requeue_given_up` puts it back in the queue.
- **Never sent twice by us.** Each message is taken with ``SELECT … FOR UPDATE SKIP LOCKED``
  in its own transaction, which stays open while the transport talks to the server; the row
  is marked ``sent_at`` in that transaction right after the server accepted it. Two delivery
  passes (two replicas, or a CLI ``alerts deliver`` beside the scheduler) never take the same
  row, and a failure before the acceptance leaves the row to be retried.
- **The remaining window is at least once:** if the process or the database connection dies
  after the server accepted the message and before the commit, the row is sent again later.
  Receivers can drop that duplicate: an email carries a ``Message-ID`` derived from the row's
  ``dedup_key`` (the same for every attempt), a webhook an ``Idempotency-Key`` header with the
  ``dedup_key`` itself.

Email attachments: an email row's ``payload`` may carry ``"html"`` (an HTML alternative to the
plain-text body) and ``"attachments"``, a list of ``{"filename", "content_type",
"data_base64"}`` (see :func:`attachment`); rows without them are sent as before, as plain text.
Attachments live in the row, so a retry sends exactly what was enqueued.

Backoff after the n-th failure (n ≥ 1): ``30 s × 2^(n−1)``, capped at one hour, so 8 attempts
span about 2 h 10 min. Times come from the pass's ``now``, so tests can drive the clock.
A message whose alert is snoozed waits (``next_attempt_at`` moves to the snooze end) without
counting an attempt. Rows of a channel the transport does not handle (SMTP not configured)
are left alone and counted as ``waiting``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from core.errors import BasewatchError

log = logging.getLogger(__name__)

CHANNELS = ("email", "webhook")
BACKOFF_BASE = dt.timedelta(seconds=30)
BACKOFF_CAP = dt.timedelta(hours=1)
_ERROR_CHARS = 500  # last_error is kept short: one line an operator can read


@dataclass(frozen=True)
class OutboxMessage:
    """One message to deliver: an email (``recipient`` an address, ``body`` plain text) or a
    webhook call (``recipient`` the URL, ``payload`` the JSON document POSTed)."""

    channel: str
    recipient: str
    subject: str
    body: str
    dedup_key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    alert_id: int | None = None

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}")


def attachment(filename: str, content_type: str, data: bytes) -> dict[str, str]:
    """An email attachment as it is stored in an outbox row's ``payload["attachments"]``."""
    if content_type.count("/") != 1:
        raise ValueError(f"content type {content_type!r} is not maintype/subtype")
    return {
        "filename": filename,
        "content_type": content_type,
        "data_base64": base64.b64encode(data).decode("ascii"),
    }


class DeliveryError(BasewatchError):
    """A transport could not deliver a message now; the row is retried later."""


class Transport(Protocol):
    """Sends one message, returning only once the receiving server accepted it."""

    @property
    def channels(self) -> frozenset[str]: ...

    def send(self, message: OutboxMessage) -> None: ...


@dataclass(frozen=True)
class DeliveryResult:
    """Counts of one delivery pass (messages)."""

    sent: int = 0
    failed: int = 0  # failed this pass and scheduled for another attempt
    gave_up: int = 0  # failed for the last time this pass
    deferred: int = 0  # postponed because their alert is snoozed
    waiting: int = 0  # due, but no transport for their channel

    def document(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "gave_up": self.gave_up,
            "deferred": self.deferred,
            "waiting": self.waiting,
        }


# -- the queue --------------------------------------------------------------------------------

_ENQUEUE = """
INSERT INTO outbox (created_at, channel, recipient, subject, body, payload, alert_id, dedup_key,
                    next_attempt_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (dedup_key) DO NOTHING
"""


def enqueue(
    conn: psycopg.Connection[TupleRow], messages: Iterable[OutboxMessage], *, now: dt.datetime
) -> int:
    """Add messages to the outbox in the caller's transaction; a ``dedup_key`` already there
    is skipped (so a retried transaction never enqueues twice). Returns rows added."""
    rows = [
        (
            now,
            m.channel,
            m.recipient,
            m.subject,
            m.body,
            Jsonb(dict(m.payload)),
            m.alert_id,
            m.dedup_key,
            now,
        )
        for m in messages
    ]
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(_ENQUEUE, rows)
        return max(cur.rowcount, 0)


def backoff(failures: int) -> dt.timedelta:
    """Wait before the next attempt after ``failures`` failed attempts (≥ 1)."""
    wait: dt.timedelta = BACKOFF_BASE * 2 ** max(failures - 1, 0)
    return min(wait, BACKOFF_CAP)


_DEFER_SNOOZED = """
UPDATE outbox o SET next_attempt_at = a.snoozed_until
FROM alerts a
WHERE a.alert_id = o.alert_id AND a.snoozed_until > %(now)s
  AND o.sent_at IS NULL AND o.gave_up_at IS NULL AND o.next_attempt_at <= %(now)s
"""
_WAITING = """
SELECT count(*) FROM outbox
WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= %(now)s
  AND NOT channel = ANY(%(channels)s)
"""
_NEXT_DUE = """
SELECT outbox_id, channel, recipient, subject, body, payload, dedup_key, alert_id, attempts
FROM outbox
WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= %(now)s
  AND channel = ANY(%(channels)s)
ORDER BY next_attempt_at, outbox_id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""
_SENT = """
UPDATE outbox SET sent_at = %(now)s, attempts = attempts + 1, last_error = NULL
WHERE outbox_id = %(id)s
"""
_FAILED = """
UPDATE outbox SET attempts = %(attempts)s, last_error = %(error)s,
       next_attempt_at = %(next)s, gave_up_at = %(gave_up)s
WHERE outbox_id = %(id)s
"""


def deliver_due(
    conn: psycopg.Connection[TupleRow],
    transport: Transport,
    *,
    now: dt.datetime,
    max_attempts: int = 8,
    limit: int = 1000,
) -> DeliveryResult:
    """Send the outbox rows due at ``now`` (at most ``limit``), one transaction per message.

    Call it with no transaction open on ``conn``: each message commits on its own, which is
    what makes ``sent_at`` durable right after the server accepted the message."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("deliver_due needs a connection with no transaction open")
    channels = sorted(transport.channels)
    params = {"now": now, "channels": channels}
    with conn.transaction():
        deferred = conn.execute(_DEFER_SNOOZED, params).rowcount
        row = conn.execute(_WAITING, params).fetchone()
        waiting = int(row[0]) if row else 0
    if waiting:
        log.warning(
            "%d outbox messages wait for a channel with no transport configured (have: %s)",
            waiting,
            ", ".join(channels) or "none",
        )
    sent = failed = gave_up = 0
    for _ in range(limit):
        with conn.transaction():
            due = conn.execute(_NEXT_DUE, params).fetchone()
            if due is None:
                break
            outbox_id, attempts = int(due[0]), int(due[8])
            message = OutboxMessage(
                channel=due[1],
                recipient=due[2],
                subject=due[3],
                body=due[4],
                payload=due[5] or {},
                dedup_key=due[6],
                alert_id=due[7],
            )
            error = _send(transport, message)
            if error is None:
                conn.execute(_SENT, {"now": now, "id": outbox_id})
                sent += 1
                continue
            attempts += 1
            last = attempts >= max_attempts
            conn.execute(
                _FAILED,
                {
                    "id": outbox_id,
                    "attempts": attempts,
                    "error": error[:_ERROR_CHARS],
                    "next": now + backoff(attempts),
                    "gave_up": now if last else None,
                },
            )
            if last:
                gave_up += 1
                log.warning(
                    "outbox %d (%s): gave up after %d attempts: %s",
                    outbox_id,
                    message.dedup_key,
                    attempts,
                    error,
                )
            else:
                failed += 1
                log.info(
                    "outbox %d (%s): attempt %d failed, retry in %s: %s",
                    outbox_id,
                    message.dedup_key,
                    attempts,
                    backoff(attempts),
                    error,
                )
    result = DeliveryResult(sent, failed, gave_up, deferred, waiting)
    if sent or failed or gave_up or deferred:
        log.info(
            "delivery: %d sent, %d failed, %d given up, %d deferred (snoozed)",
            sent,
            failed,
            gave_up,
            deferred,
        )
    return result


def _send(transport: Transport, message: OutboxMessage) -> str | None:
    """None when the transport accepted the message, else the reason it did not."""
    try:
        transport.send(message)
    except DeliveryError as exc:
        return str(exc)
    except Exception as exc:  # a transport bug must not stop the pass nor lose the row
        log.exception("outbox %s: unexpected error from the transport", message.dedup_key)
        return f"{type(exc).__name__}: {exc}"
    return None


def requeue_given_up(conn: psycopg.Connection[TupleRow], *, now: dt.datetime) -> int:
    """Put every given-up, unsent row back in the queue (attempts reset, last error kept)."""
    with conn.transaction():
        return conn.execute(
            "UPDATE outbox SET gave_up_at = NULL, attempts = 0, next_attempt_at = %s"
            " WHERE gave_up_at IS NOT NULL AND sent_at IS NULL",
            (now,),
        ).rowcount


# -- transports -------------------------------------------------------------------------------


def message_id(dedup_key: str, sender: str) -> str:
    """A stable ``Message-ID`` for a row: the same on every attempt, so a receiver that
    dedupes on it drops a re-sent copy."""
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:40]
    domain = sender.rpartition("@")[2].strip(" >") or "basewatch.invalid"
    return f"<{digest}.basewatch@{domain}>"


class SmtpTransport:
    """Email over SMTP (smtplib): one connection per message, optional STARTTLS and login.

    ``timeout`` is in seconds, per socket operation."""

    channels = frozenset({"email"})

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "basewatch@localhost",
        username: str = "",
        password: str = "",
        starttls: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout = timeout

    def compose(self, message: OutboxMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.recipient
        email["Subject"] = message.subject
        email["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        email["Message-ID"] = message_id(message.dedup_key, self.sender)
        email["X-Basewatch-Dedup-Key"] = message.dedup_key
        email.set_content(message.body)
        html = message.payload.get("html")
        if html:
            email.add_alternative(str(html), subtype="html")
        for item in message.payload.get("attachments") or ():
            maintype, _, subtype = str(item["content_type"]).partition("/")
            email.add_attachment(
                base64.b64decode(item["data_base64"]),
                maintype=maintype,
                subtype=subtype,
                filename=str(item["filename"]),
            )
        return email

    def send(self, message: OutboxMessage) -> None:
        email = self.compose(message)
        where = f"SMTP {self.host}:{self.port}"
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: cannot connect: {exc}") from exc
        try:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(email)  # returns once the server accepted the DATA
        except smtplib.SMTPRecipientsRefused as exc:
            refused = "; ".join(f"{r}: {c} {_text(t)}" for r, (c, t) in exc.recipients.items())
            raise DeliveryError(f"{where}: recipient refused: {refused}") from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{where}: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {exc}") from exc
        finally:
            _quit(smtp)


def _quit(smtp: smtplib.SMTP) -> None:
    # after the server accepted the message, a failing QUIT must not turn it into a retry
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _text(raw: bytes | str) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would follow a 302 with a GET and no body: that is not a delivery
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookTransport:
    """JSON POSTed to the message's URL (Slack / Teams incoming webhooks): 2xx is success;
    any other status, a redirect, a timeout or a connection error is a failure.

    ``timeout`` is in seconds. Errors name the host only: webhook URLs carry secrets."""

    channels = frozenset({"webhook"})

    def __init__(self, timeout: float = 10.0, user_agent: str = "basewatch") -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self._opener = urllib.request.build_opener(_NoRedirects)

    def send(self, message: OutboxMessage) -> None:
        url = message.recipient
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryError("webhook: not an http(s) URL")
        where = f"webhook {parts.scheme}://{parts.hostname}"
        payload = dict(message.payload) or {"text": message.body}
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": self.user_agent,
                "Idempotency-Key": message.dedup_key,
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = int(response.status)
                response.read(65536)
        except urllib.error.HTTPError as exc:
            detail = _text(exc.read(300)) if exc.fp else ""
            exc.close()
            raise DeliveryError(f"{where}: HTTP {exc.code} {detail}".rstrip()) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DeliveryError(f"{where}: {reason}") from exc
        if not 200 <= status < 300:
            raise DeliveryError(f"{where}: HTTP {status}")


class Transports:
    """Several transports as one, routing each message by its channel."""

    def __init__(self, *transports: Transport) -> None:
        self._by_channel = {c: t for t in transports for c in t.channels}

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._by_channel)

    def send(self, message: OutboxMessage) -> None:
        transport = self._by_channel.get(message.channel)
        if transport is None:
            raise DeliveryError(f"no transport for channel {message.channel}")
        transport.send(message)
