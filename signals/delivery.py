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

A slow peer delays nobody else (issue 11: a webhook answering one byte every 5 s held a pass
for minutes while every email waited):

- **One overall deadline per delivery.** A socket timeout bounds each read, not the exchange,
  so the transports also arm a timer that shuts the connection down when the deadline passes
  (``BASEWATCH_WEBHOOK_TIMEOUT_S``, ``BASEWATCH_SMTP_TIMEOUT_S``: connect, TLS, request and
  answer together). The attempt then fails like any other ("no complete answer within the 10 s
  deadline") and is retried by the backoff above. Name resolution is not covered (it runs in
  the C library); a peer that resolves slowly still costs its resolver's timeout.
- **Destinations in parallel, each in order.** A pass lists the due rows, groups them by
  destination (a webhook's scheme, host and port; the one SMTP server for every email) and
  works on up to ``concurrency`` destinations at once (``BASEWATCH_DELIVERY_CONCURRENCY``),
  each on a thread with its own database connection (the caller's and, beyond one
  destination, new ones with the same parameters), taking each row in its own transaction as
  above. A destination's rows go one at a time, oldest first.
- **A destination that does not answer is not tried again in the same pass.** After a
  deadline, a refused or failed connection or another network error, that destination's
  remaining rows are left due for the next pass (``postponed``, no attempt counted); a peer
  that answers with an error (HTTP 500, SMTP 451) is not held against the other rows. So a
  dead destination costs one thread at most one deadline per pass, and holds up nobody else
  as long as fewer than ``concurrency`` destinations are dead at once.

The deadline is also a ceiling for honest but slow exchanges (a large report email on a slow
link): raise ``BASEWATCH_SMTP_TIMEOUT_S`` for those.

**Stale alert emails expire.** An alert email says "act now"; queued while SMTP was not
configured (or down for days), it would go out the day SMTP works, months late. A pass given
``email_max_age`` (``BASEWATCH_ALERT_EMAIL_MAX_AGE_HOURS``, 72 h by default; 0 never expires)
first gives up every unsent alert email (an alert's message or a CSM's digest; not the monthly
NRR report, which is still worth reading late) queued longer ago than that: ``gave_up_at`` is
the pass's time and ``last_error`` says "expired: not sent within 72 h of being queued" (with the
earlier error after it, if any). It runs whether or not email is configured, so the backlog
expires while it waits; webhooks are left to their attempts. The row is kept (never lost, as
above) and :func:`requeue_given_up` does not bring back one that would expire again.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import logging
import queue
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
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
    """A transport could not deliver a message now; the row is retried later.

    ``unreachable`` when the peer did not answer (deadline, refused or broken connection): the
    pass then leaves the destination's other rows for the next pass."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


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
    postponed: int = 0  # due, not tried: their destination did not answer earlier in the pass
    expired: int = 0  # alert emails given up unsent because they were queued too long ago

    def document(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "gave_up": self.gave_up,
            "deferred": self.deferred,
            "waiting": self.waiting,
            "postponed": self.postponed,
            "expired": self.expired,
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


def queued_per_channel(conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
    """How many alert messages the outbox holds per channel (sent or not; reports left out)."""
    return {
        str(channel): int(count)
        for channel, count in conn.execute(
            "SELECT channel, count(*) FROM outbox WHERE alert_id IS NOT NULL GROUP BY channel"
        )
    }


def backlog_per_channel(
    conn: psycopg.Connection[TupleRow], now: dt.datetime
) -> dict[str, tuple[int, float]]:
    """The messages waiting to be sent (neither sent nor given up, reports included) per
    channel: how many, and the age in seconds of the oldest at ``now``. Every channel the
    outbox takes is listed, with (0, 0.0) when none wait."""
    found = {
        str(channel): (int(count), max(0.0, float(age)))
        for channel, count, age in conn.execute(
            "SELECT channel, count(*), extract(epoch FROM %s - min(created_at)) FROM outbox"
            " WHERE sent_at IS NULL AND gave_up_at IS NULL GROUP BY channel",
            (now,),
        )
    }
    return {channel: found.get(channel, (0, 0.0)) for channel in sorted({*CHANNELS, *found})}


def backoff(failures: int) -> dt.timedelta:
    """Wait before the next attempt after ``failures`` failed attempts (≥ 1)."""
    wait: dt.timedelta = BACKOFF_BASE * 2 ** max(failures - 1, 0)
    return min(wait, BACKOFF_CAP)


# alert emails (an alert's message or a CSM's digest; not the NRR report) queued too long ago
_STALE_EMAIL = """
channel = 'email' AND sent_at IS NULL AND created_at < %(expire_before)s
AND (alert_id IS NOT NULL OR dedup_key LIKE 'alert:%%' OR dedup_key LIKE 'digest:%%')
"""
_EXPIRE_EMAILS = sql.SQL("""
UPDATE outbox SET gave_up_at = %(now)s,
       last_error = left('expired: not sent within ' || %(hours)s || ' h of being queued'
                         || coalesce(' (last error: ' || last_error || ')', ''), 500)
WHERE gave_up_at IS NULL AND {stale}""").format(stale=sql.SQL(_STALE_EMAIL))
_REQUEUE = sql.SQL("""
UPDATE outbox SET gave_up_at = NULL, attempts = 0, next_attempt_at = %(now)s
WHERE gave_up_at IS NOT NULL AND sent_at IS NULL AND (%(every)s OR NOT ({stale}))""").format(
    stale=sql.SQL(_STALE_EMAIL)
)
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
_DUE = """
SELECT outbox_id, channel, recipient FROM outbox
WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= %(now)s
  AND channel = ANY(%(channels)s)
ORDER BY next_attempt_at, outbox_id
LIMIT %(limit)s
"""
# the row again, locked, if it is still due (another pass may have taken or sent it meanwhile)
_TAKE = """
SELECT outbox_id, channel, recipient, subject, body, payload, dedup_key, alert_id, attempts
FROM outbox
WHERE outbox_id = %(id)s AND sent_at IS NULL AND gave_up_at IS NULL
  AND next_attempt_at <= %(now)s
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


def destination(channel: str, recipient: str) -> str:
    """What one slow peer stands for: a webhook's scheme, host and port; every email goes
    through the one SMTP server."""
    if channel != "webhook":
        return channel
    parts = urllib.parse.urlsplit(recipient)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        port = 0
    return f"webhook {parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    postponed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def deliver_due(
    conn: psycopg.Connection[TupleRow],
    transport: Transport,
    *,
    now: dt.datetime,
    max_attempts: int = 8,
    limit: int = 1000,
    concurrency: int = 4,
    email_max_age: dt.timedelta | None = None,
) -> DeliveryResult:
    """Send the outbox rows due at ``now`` (at most ``limit``), one transaction per message,
    up to ``concurrency`` destinations at once (see the module docstring); first expire the
    alert emails queued more than ``email_max_age`` ago (None: none expire).

    Call it with no transaction open on ``conn``: each message commits on its own, which is
    what makes ``sent_at`` durable right after the server accepted it. ``conn`` serves the
    first destination; the others get connections opened with ``conn``'s parameters, closed
    before this returns. ``transport`` must be safe to call from several threads (the
    project's transports open a connection per message)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("deliver_due needs a connection with no transaction open")
    channels = sorted(transport.channels)
    params = {"now": now, "channels": channels, "limit": limit}
    with conn.transaction():
        expired = _expire_emails(conn, now, email_max_age)
        deferred = conn.execute(_DEFER_SNOOZED, params).rowcount
        row = conn.execute(_WAITING, params).fetchone()
        waiting = int(row[0]) if row else 0
        due = conn.execute(_DUE, params).fetchall()
    if waiting:
        log.warning(
            "%d outbox messages wait for a channel with no transport configured (have: %s)",
            waiting,
            ", ".join(channels) or "none",
        )
    queues: dict[str, list[int]] = {}
    for outbox_id, channel, recipient in due:
        queues.setdefault(destination(channel, recipient), []).append(int(outbox_id))
    tally = _Tally()
    connections = _Connections(conn)
    work = _Work(transport, now, max_attempts, tally, connections)
    try:
        if len(queues) <= 1 or concurrency <= 1:
            for key, ids in queues.items():
                work.destination(key, ids)
        else:
            with ThreadPoolExecutor(
                max_workers=min(concurrency, len(queues)), thread_name_prefix="deliver"
            ) as pool:
                futures = [pool.submit(work.destination, k, ids) for k, ids in queues.items()]
                for future in futures:
                    future.result()  # a database failure ends the pass, as before
    finally:
        connections.close()
    result = DeliveryResult(
        tally.sent, tally.failed, tally.gave_up, deferred, waiting, tally.postponed, expired
    )
    if tally.sent or tally.failed or tally.gave_up or deferred or tally.postponed:
        log.info(
            "delivery: %d sent, %d failed, %d given up, %d deferred (snoozed), %d postponed "
            "(destination not answering)",
            tally.sent,
            tally.failed,
            tally.gave_up,
            deferred,
            tally.postponed,
        )
    return result


class _Connections:
    """The caller's connection first, then new ones with its parameters, one per thread at
    a time; ``close`` closes those it opened."""

    def __init__(self, conn: psycopg.Connection[TupleRow]) -> None:
        self._first = conn
        self._idle: queue.SimpleQueue[psycopg.Connection[TupleRow]] = queue.SimpleQueue()
        self._idle.put(conn)
        self._opened: list[psycopg.Connection[TupleRow]] = []
        self._lock = threading.Lock()

    def take(self) -> psycopg.Connection[TupleRow]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        info = self._first.info
        dsn = make_conninfo(info.dsn, password=info.password) if info.password else info.dsn
        opened = psycopg.connect(dsn, autocommit=True)
        with self._lock:
            self._opened.append(opened)
        return opened

    def give_back(self, conn: psycopg.Connection[TupleRow]) -> None:
        self._idle.put(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


@dataclass
class _Work:
    transport: Transport
    now: dt.datetime
    max_attempts: int
    tally: _Tally
    connections: _Connections

    def destination(self, key: str, ids: list[int]) -> None:
        """Deliver one destination's rows in order; stop at the first that finds the
        destination not answering (the rest wait for the next pass)."""
        conn = self.connections.take()
        try:
            for n, outbox_id in enumerate(ids):
                if self._one(conn, outbox_id):
                    continue
                rest = len(ids) - n - 1
                if rest:
                    self.tally.add(postponed=rest)
                    log.info(
                        "%s is not answering: %d more messages for it wait for the next pass",
                        key,
                        rest,
                    )
                return
        finally:
            self.connections.give_back(conn)

    def _one(self, conn: psycopg.Connection[TupleRow], outbox_id: int) -> bool:
        """Take, send and record one row; False when its destination did not answer."""
        with conn.transaction():
            due = conn.execute(_TAKE, {"id": outbox_id, "now": self.now}).fetchone()
            if due is None:  # taken by another pass, or sent meanwhile
                return True
            attempts = int(due[8])
            message = OutboxMessage(
                channel=due[1],
                recipient=due[2],
                subject=due[3],
                body=due[4],
                payload=due[5] or {},
                dedup_key=due[6],
                alert_id=due[7],
            )
            failure = _send(self.transport, message)
            if failure is None:
                conn.execute(_SENT, {"now": self.now, "id": outbox_id})
                self.tally.add(sent=1)
                return True
            error, unreachable = failure
            attempts += 1
            last = attempts >= self.max_attempts
            conn.execute(
                _FAILED,
                {
                    "id": outbox_id,
                    "attempts": attempts,
                    "error": error[:_ERROR_CHARS],
                    "next": self.now + backoff(attempts),
                    "gave_up": self.now if last else None,
                },
            )
            if last:
                self.tally.add(gave_up=1)
                log.warning(
                    "outbox %d (%s): gave up after %d attempts: %s",
                    outbox_id,
                    message.dedup_key,
                    attempts,
                    error,
                )
            else:
                self.tally.add(failed=1)
                log.info(
                    "outbox %d (%s): attempt %d failed, retry in %s: %s",
                    outbox_id,
                    message.dedup_key,
                    attempts,
                    backoff(attempts),
                    error,
                )
            return not unreachable


def _send(transport: Transport, message: OutboxMessage) -> tuple[str, bool] | None:
    """None when the transport accepted the message, else the reason it did not and whether
    the destination did not answer at all."""
    try:
        transport.send(message)
    except DeliveryError as exc:
        return str(exc), exc.unreachable
    except Exception as exc:  # a transport bug must not stop the pass nor lose the row
        log.exception("outbox %s: unexpected error from the transport", message.dedup_key)
        return f"{type(exc).__name__}: {exc}", False
    return None


def _expire_emails(
    conn: psycopg.Connection[TupleRow], now: dt.datetime, max_age: dt.timedelta | None
) -> int:
    """Give up the unsent alert emails queued more than ``max_age`` before ``now``."""
    if max_age is None:
        return 0
    hours = max_age.total_seconds() / 3600
    expired = conn.execute(
        _EXPIRE_EMAILS,
        {"now": now, "expire_before": now - max_age, "hours": f"{hours:g}"},
    ).rowcount
    if expired:
        log.warning(
            "%d alert emails expired unsent: queued more than %g h ago "
            "(BASEWATCH_ALERT_EMAIL_MAX_AGE_HOURS)",
            expired,
            hours,
        )
    return expired


def requeue_given_up(
    conn: psycopg.Connection[TupleRow],
    *,
    now: dt.datetime,
    email_max_age: dt.timedelta | None = None,
) -> int:
    """Put every given-up, unsent row back in the queue (attempts reset, last error kept),
    except the alert emails older than ``email_max_age``, which would only expire again."""
    with conn.transaction():
        return conn.execute(
            _REQUEUE,
            {
                "now": now,
                "every": email_max_age is None,
                "expire_before": now - (email_max_age or dt.timedelta(0)),
            },
        ).rowcount


# -- transports -------------------------------------------------------------------------------


class _Deadline:
    """Ends a blocking exchange at an overall deadline: when it passes, a timer shuts the
    watched connections down, which wakes a blocked read or write with an error. It holds a
    duplicate of each descriptor, so a TLS wrap of the socket in between changes nothing and a
    descriptor number reused after the exchange is never touched."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.01, self._at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
        with self._lock:
            self._watched.append(duplicate)
            if self.expired:
                _shut(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                _shut(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()  # the deadline of the exchange running on this thread


def _connect_watched(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
    """``socket.create_connection`` whose socket the thread's current deadline watches."""
    sock = socket.create_connection(address, *args, **kwargs)
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)
    return sock


def _watched_class(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # right after the TCP connect, so a TLS handshake or a proxy tunnel is bounded too
            self._create_connection = _connect_watched

    return Watched


_WATCHED = {
    http.client.HTTPConnection: _watched_class(http.client.HTTPConnection),
    http.client.HTTPSConnection: _watched_class(http.client.HTTPSConnection),
}


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_WATCHED.get(http_class, http_class), req, **kwargs)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_WATCHED.get(http_class, http_class), req, **kwargs)


class _SMTP(smtplib.SMTP):
    """smtplib's client whose connection a deadline watches from the TCP connect on."""

    deadline: _Deadline | None = None

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        if self.deadline is not None:
            self.deadline.watch(sock)
        return sock


def _deadline_text(seconds: float) -> str:
    return f"no complete answer within the {seconds:g} s deadline"


def message_id(dedup_key: str, sender: str) -> str:
    """A stable ``Message-ID`` for a row: the same on every attempt, so a receiver that
    dedupes on it drops a re-sent copy."""
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:40]
    domain = sender.rpartition("@")[2].strip(" >") or "basewatch.invalid"
    return f"<{digest}.basewatch@{domain}>"


class SmtpTransport:
    """Email over SMTP (smtplib): one connection per message, optional STARTTLS and login.

    ``timeout`` is in seconds: the deadline of one message, connect to accepted DATA."""

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
        with _Deadline(self.timeout) as deadline:
            smtp = _SMTP(timeout=self.timeout)
            smtp.deadline = deadline
            try:
                smtp.connect(self.host, self.port)
            except (smtplib.SMTPException, OSError) as exc:
                smtp.close()
                text = _deadline_text(self.timeout) if deadline.expired else str(exc)
                raise DeliveryError(f"{where}: cannot connect: {text}", unreachable=True) from exc
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
                text = _deadline_text(self.timeout) if deadline.expired else str(exc)
                raise DeliveryError(f"{where}: {text}", unreachable=True) from exc
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

    ``timeout`` is in seconds: the deadline of one call, connect to the end of the answer
    (urllib, so the ``https_proxy`` environment variables still apply). Errors name the host
    only: webhook URLs carry secrets."""

    channels = frozenset({"webhook"})

    def __init__(self, timeout: float = 10.0, user_agent: str = "basewatch") -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self._opener = urllib.request.build_opener(
            _NoRedirects, _WatchedHTTPHandler, _WatchedHTTPSHandler
        )

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
        with _Deadline(self.timeout) as deadline:
            _current.deadline = deadline
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    status = int(response.status)
                    response.read(65536)
            except urllib.error.HTTPError as exc:
                try:
                    detail = _text(exc.read(300)) if exc.fp else ""
                except (http.client.HTTPException, OSError):
                    detail = ""
                exc.close()
                raise DeliveryError(f"{where}: HTTP {exc.code} {detail}".rstrip()) from exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                text = _deadline_text(self.timeout) if deadline.expired else str(reason)
                raise DeliveryError(f"{where}: {text}", unreachable=True) from exc
            finally:
                _current.deadline = None
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
