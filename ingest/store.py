"""Writing routed messages in one transaction per batch (decoding and routing, which need no
database, are ``ingest.messages``; this module looks the owners up in the registry).

The common path COPYs telemetry straight into ``telemetry``. A batch that hits a row already
stored (a redelivery after a crash or reconnect) fails with a unique violation; it is then
written again through a staging table with ``INSERT … ON CONFLICT``, which merges the metrics of
a reading sent twice, so a redelivery never creates a second row and the common path pays nothing
for idempotence. A merge that changes the row sets ``ingested_at`` again, so the incremental
rollup refresh (which reads telemetry by ``ingested_at``) sees the merged metrics.

Dead letters are bounded in size and in rate (issue 11: one device wrote 298 MB of them in
10 s). A dead letter keeps the first ``DeadLetterPolicy.payload_bytes`` bytes of the payload
(``BASEWATCH_INGEST_DEAD_LETTER_PAYLOAD_BYTES``), the payload's full size (``payload_bytes``)
and the sha256 of the whole payload, which is also what redeliveries are deduplicated on; a
truncated one can be read but not replayed. MQTT dead letters are rate-limited per topic with a
token bucket per writer (``BASEWATCH_INGEST_DEAD_LETTERS_PER_MINUTE``, bursts of the same size;
each ingester process has its own): a bad message over the rate is acked like any other, its
payload is not stored, and it is counted, in the same transaction as its batch, in one
summary dead letter per topic (``suppressed``, the number of messages it stands for; the
latest one's reason and payload prefix). The count is at least once: a message redelivered
after a crash may be counted twice, never zero times. The bucket is charged only when the
batch commits, so a retried batch is judged afresh. Import rows, replays and the rare message
the database itself refuses (isolated by writing one message at a time) are not rate-limited,
only truncated.

Each batch write runs under a deadline (``BASEWATCH_INGEST_WRITE_TIMEOUT_S``, see
``core.db.deadline``): a database link or server that hangs without closing is cut off, the
write raises :class:`StorageUnavailable` and the batch is retried on a new connection, which is
safe because a write that committed after all is merged on the retry.

For monitoring, :class:`WriteStats` also says how many of a batch's messages were stored (at
least one reading or event of theirs) and its dead letters by kind
(:data:`DEAD_LETTER_KINDS`, :func:`dead_letter_kind`): a short fixed set, unlike the reasons'
texts, which name assets and values and so cannot be a metric label.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import TupleRow

from core import registry
from core.db import connect, deadline
from core.errors import StorageUnavailable
from ingest.messages import Message, route

log = logging.getLogger(__name__)

OWNER_CACHE_TTL_S = 60.0
_COPY_TELEMETRY = (
    "COPY telemetry (asset_id, time, received_at, seq, metrics) FROM STDIN (FORMAT BINARY)"
)
_COPY_STAGE = (
    "COPY telemetry_stage (asset_id, time, received_at, seq, metrics) FROM STDIN (FORMAT BINARY)"
)
_TYPES = ["text", "timestamptz", "timestamptz", "int8", "jsonb"]
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_stage"
    " (LIKE telemetry INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_MERGE = (
    "INSERT INTO telemetry AS t (asset_id, time, received_at, seq, metrics)"
    " SELECT asset_id, time, received_at, seq, metrics FROM telemetry_stage"
    " ON CONFLICT (asset_id, time) DO UPDATE SET metrics = t.metrics || EXCLUDED.metrics,"
    " seq = coalesce(EXCLUDED.seq, t.seq), ingested_at = now()"
    " WHERE NOT t.metrics @> EXCLUDED.metrics"
)
_INSERT_EVENT = (
    "INSERT INTO asset_events (asset_id, time, kind, code, component, detail, received_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_INSERT_DEAD = (
    "INSERT INTO dead_letters"
    " (received_at, source, topic, line, payload, payload_sha256, payload_bytes, reason)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (topic, coalesce(line, -1), payload_sha256) WHERE resolved_at IS NULL"
    " DO NOTHING"
)
# One open summary per topic: the marker stands in the payload hash of the unique key.
SUPPRESSED_MARKER = hashlib.sha256(b"basewatch: dead letters over the rate limit").digest()
_COUNT_SUPPRESSED = (
    "INSERT INTO dead_letters (received_at, source, topic, line, payload, payload_sha256,"
    " payload_bytes, reason, suppressed) VALUES (%s, %s, %s, NULL, %s, %s, %s, %s, %s)"
    " ON CONFLICT (topic, coalesce(line, -1), payload_sha256) WHERE resolved_at IS NULL"
    " DO UPDATE SET suppressed = dead_letters.suppressed + EXCLUDED.suppressed,"
    " received_at = EXCLUDED.received_at, payload = EXCLUDED.payload,"
    " payload_bytes = EXCLUDED.payload_bytes, reason = EXCLUDED.reason"
)
_BUCKETS_KEPT = 4096  # topics whose bucket is refilled are forgotten beyond this many

# why a message was dead-lettered, coarsely (the reason's text says exactly)
DEAD_LETTER_KINDS = (
    "invalid_topic",  # the topic breaks the contract
    "unknown_asset",  # the topic's asset is not registered (and auto-registration is off)
    "wrong_account",  # the asset belongs to another account than the topic's
    "invalid_payload",  # the decoder rejected the payload or some of its items
    "database_refused",  # the database refused a value (found by writing one at a time)
    "decoder_error",  # a bug in the decoder (logged with its traceback)
)
_INTERNAL = "internal decoding error"


@dataclass(frozen=True)
class DeadLetterPolicy:
    """How much of a bad message is stored, and how many per topic and minute (0: no limit)."""

    payload_bytes: int = 16384
    per_topic_per_minute: int = 60


class DeadLetterLimiter:
    """A token bucket per topic (capacity and refill ``per_minute`` a minute); charges are
    tentative until :meth:`commit` (a batch that rolls back charges nothing)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # topic: (tokens, at)
        self._tentative: dict[str, tuple[float, float]] = {}

    def allow(self, topic: str) -> bool:
        """Take a token for one dead letter on ``topic``; False when the topic is over."""
        if self.per_minute <= 0:
            return True
        now = self._clock()
        tokens, at = self._tentative.get(topic) or self._buckets.get(
            topic, (float(self.per_minute), now)
        )
        tokens = min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60)
        allowed = tokens >= 1
        self._tentative[topic] = (tokens - 1 if allowed else tokens, now)
        return allowed

    def commit(self) -> None:
        self._buckets.update(self._tentative)
        self._tentative.clear()
        if len(self._buckets) > _BUCKETS_KEPT:
            now = self._clock()
            self._buckets = {
                topic: (tokens, at)
                for topic, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.per_minute / 60 < self.per_minute
            }

    def rollback(self) -> None:
        self._tentative.clear()


@dataclass(slots=True)
class WriteStats:
    """What one batch wrote."""

    messages: int = 0
    readings: int = 0
    values: int = 0
    events: int = 0
    dead_letters: int = 0  # messages dead-lettered, stored or only counted (``suppressed``)
    suppressed: int = 0  # of those, over the rate limit: counted in a summary, not stored
    conflict_path: bool = False
    reasons: list[str] = field(default_factory=list)
    stored: int = 0  # messages with at least one reading or event stored
    dead_kinds: dict[str, int] = field(default_factory=dict)  # dead letters by kind

    def add(self, other: WriteStats) -> None:
        """Add ``other``'s counts to these."""
        self.messages += other.messages
        self.readings += other.readings
        self.values += other.values
        self.events += other.events
        self.dead_letters += other.dead_letters
        self.suppressed += other.suppressed
        self.conflict_path |= other.conflict_path
        self.reasons += other.reasons
        self.stored += other.stored
        for kind, n in other.dead_kinds.items():
            self.dead_kinds[kind] = self.dead_kinds.get(kind, 0) + n


def dead_letter_kind(message: Message, owners: dict[str, str]) -> str:
    """Which of :data:`DEAD_LETTER_KINDS` a dead-lettered message is (``ingest.messages.route``
    checks in this order: the topic, the owner, then the decoder's rejections)."""
    target = message.target
    if target is None:
        return "decoder_error" if message.topic_error.startswith(_INTERNAL) else "invalid_topic"
    owner = owners.get(target.asset_id)
    if owner is None:
        return "unknown_asset"
    if owner != target.account_id:
        return "wrong_account"
    return "invalid_payload"


def _stored(message: Message, owners: dict[str, str]) -> bool:
    target = message.target
    return (
        target is not None
        and owners.get(target.asset_id) == target.account_id
        and bool(message.decoded.readings or message.decoded.events)
    )


class BatchWriter:
    """Writes batches of :class:`Message` through one connection, reopened after a failure.

    ``write`` raises :class:`StorageUnavailable` when the database cannot be reached, or when
    a write takes longer than ``write_timeout_s`` (0: no bound; ``core.db.deadline``: a hung
    link or server is cut off rather than waited for); the caller keeps the batch (and its
    acks) and tries again later on a new connection."""

    def __init__(
        self,
        database_url: str,
        *,
        auto_register: bool = False,
        application_name: str = "basewatch-ingest",
        dead_letters: DeadLetterPolicy | None = None,
        write_timeout_s: float = 0,
    ) -> None:
        self._url = database_url
        self._write_timeout_s = write_timeout_s
        self._auto_register = auto_register
        self._dead_policy = dead_letters or DeadLetterPolicy()
        self._limiter = DeadLetterLimiter(self._dead_policy.per_topic_per_minute)
        self._application_name = application_name
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._owners: dict[str, str] = {}
        self._owners_loaded_at = 0.0
        self._known_names: set[str] = set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, messages: Sequence[Message]) -> WriteStats:
        """Write one batch in one transaction; idempotent for messages written before.

        A message the database refuses (a value it cannot store) is found by writing the batch
        one message at a time and is dead-lettered, so it never blocks the stream."""
        conn = self._connection()
        try:
            with deadline(conn, self._write_timeout_s, "batch write"):
                try:
                    return self._write_idempotent(conn, messages)
                except (
                    psycopg.DataError,
                    psycopg.IntegrityError,
                    ValueError,
                    RecursionError,
                ) as exc:
                    log.warning(
                        "database refused a batch (%s): isolating the message",
                        str(exc).strip()[:200],
                    )
                    return self._write_one_by_one(conn, messages)
        except StorageUnavailable:  # the deadline passed: the connection was dropped
            self.close()
            raise
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
            self.close()
            raise StorageUnavailable(f"database write failed: {str(exc).strip()[:200]}") from exc

    def _write_idempotent(
        self, conn: psycopg.Connection[TupleRow], messages: Sequence[Message]
    ) -> WriteStats:
        try:
            return self._write(conn, messages, merge=False)
        except psycopg.errors.UniqueViolation:
            log.debug("batch hit stored rows (a redelivery): merging through staging")
            return self._write(conn, messages, merge=True)

    def _write_one_by_one(
        self, conn: psycopg.Connection[TupleRow], messages: Sequence[Message]
    ) -> WriteStats:
        total = WriteStats()
        for message in messages:
            try:
                stats = self._write_idempotent(conn, [message])
            except (psycopg.DataError, psycopg.IntegrityError, ValueError, RecursionError) as exc:
                reason = f"database refused the message: {str(exc).strip()[:300]}"
                with conn.transaction():
                    conn.execute(_INSERT_DEAD, _dead(message, reason, self._dead_policy))
                stats = WriteStats(
                    messages=1,
                    dead_letters=1,
                    reasons=[reason],
                    dead_kinds={"database_refused": 1},
                )
            total.add(stats)
        return total

    def _connection(self) -> psycopg.Connection[TupleRow]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self._url, application_name=self._application_name)
        return self._conn

    def _write(
        self,
        conn: psycopg.Connection[TupleRow],
        messages: Sequence[Message],
        *,
        merge: bool,
    ) -> WriteStats:
        self._limiter.rollback()  # charges of an attempt that did not commit
        with conn.transaction():
            owners = self._resolve_owners(conn, messages)
            routed = route(messages, owners)
            with conn.cursor() as cur:
                if routed.rows:
                    self._copy_rows(cur, routed.rows.values(), merge=merge)
                if routed.events:
                    cur.executemany(_INSERT_EVENT, routed.events)
                suppressed = self._write_dead(cur, routed.dead)
                new_names = routed.names - self._known_names
                if new_names:
                    cur.executemany(
                        "INSERT INTO metric_names (name) VALUES (%s) ON CONFLICT DO NOTHING",
                        [(n,) for n in sorted(new_names)],
                    )
        self._limiter.commit()
        self._owners.update(owners)
        self._known_names |= routed.names
        kinds: dict[str, int] = {}
        for message, _ in routed.dead:
            kind = dead_letter_kind(message, owners)
            kinds[kind] = kinds.get(kind, 0) + 1
        return WriteStats(
            messages=len(messages),
            readings=len(routed.rows),
            values=routed.values(),
            events=len(routed.events),
            dead_letters=len(routed.dead),
            suppressed=suppressed,
            conflict_path=merge,
            reasons=[reason for _, reason in routed.dead],
            stored=sum(_stored(m, owners) for m in messages),
            dead_kinds=kinds,
        )

    def _write_dead(self, cur: psycopg.Cursor[TupleRow], dead: list[tuple[Message, str]]) -> int:
        """Store the batch's dead letters (payloads cut to the policy's prefix); count those
        over their topic's rate in one summary per topic. Returns how many were counted only."""
        policy = self._dead_policy
        rows: list[tuple[object, ...]] = []
        over: dict[str, tuple[int, Message, str]] = {}  # topic: (count, latest, its reason)
        for message, reason in dead:
            if message.source != "mqtt" or self._limiter.allow(message.topic):
                rows.append(_dead(message, reason, policy))
            else:
                n = over.get(message.topic, (0, message, reason))[0]
                over[message.topic] = (n + 1, message, reason)
        if rows:
            cur.executemany(_INSERT_DEAD, rows)
        summaries = []
        for topic in sorted(over):  # one order for every writer: no deadlock between them
            n, message, reason = over[topic]
            received_at, source, topic_text, _, payload, _, size, _ = _dead(message, reason, policy)
            summary = (
                f"over the rate limit of {self._limiter.per_minute} dead letters a minute on "
                f"this topic: further ones are counted here (suppressed), their payloads not "
                f"stored; the latest: {reason}"
            )
            summaries.append(
                (received_at, source, topic_text, payload, SUPPRESSED_MARKER, size,
                 summary[:2000], n)
            )  # fmt: skip
        if summaries:
            cur.executemany(_COUNT_SUPPRESSED, summaries)
            log.warning(
                "%d dead letters over the per-topic rate limit counted, not stored (%s)",
                sum(n for n, _, _ in over.values()),
                ", ".join(sorted(over))[:300],
            )
        return sum(n for n, _, _ in over.values())

    def _copy_rows(
        self, cur: psycopg.Cursor[TupleRow], rows: Iterable[list[object]], *, merge: bool
    ) -> None:
        if merge:  # IF NOT EXISTS: cheap, and right even after a rolled-back first creation
            cur.execute(_STAGE)
        with cur.copy(_COPY_STAGE if merge else _COPY_TELEMETRY) as copy:
            copy.set_types(_TYPES)
            for row in rows:
                copy.write_row(row)
        if merge:
            cur.execute(_MERGE)

    def _resolve_owners(
        self, conn: psycopg.Connection[TupleRow], messages: Sequence[Message]
    ) -> dict[str, str]:
        now = time.monotonic()
        if now - self._owners_loaded_at > OWNER_CACHE_TTL_S:
            self._owners.clear()  # pick up registry changes (an asset moved to another account)
            self._owners_loaded_at = now
        owners = dict(self._owners)
        wanted = {
            m.target.asset_id: m.target.account_id
            for m in messages
            if m.target is not None and m.target.asset_id not in owners
        }
        if wanted:
            owners.update(registry.asset_owners(conn, sorted(wanted)))
            if self._auto_register:
                for asset_id, account_id in sorted(wanted.items()):
                    if asset_id not in owners:
                        owners[asset_id] = registry.auto_register(conn, account_id, asset_id)
                        log.info(
                            "auto-registered asset %s of account %s", asset_id, owners[asset_id]
                        )
        return owners


def _dead(message: Message, reason: str, policy: DeadLetterPolicy) -> tuple[object, ...]:
    """The dead_letters row of a message: its payload cut to the policy's prefix, with the
    full payload's size and sha256 (the key redeliveries are deduplicated on)."""
    topic = message.topic.replace("\x00", "\\0")
    payload = message.payload
    return (
        message.received_at,
        message.source,
        topic,
        message.line,
        payload[: policy.payload_bytes],
        hashlib.sha256(payload).digest(),
        len(payload),
        reason[:2000],
    )
