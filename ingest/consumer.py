"""The MQTT ingester: paho-mqtt 2.x, MQTT v5, QoS 1, persistent session, shared subscription.

One thread runs the network loop, batches the messages as they arrive by count, bytes and age,
decodes and writes each batch in one transaction (:class:`~ingest.store.BatchWriter`) and only
then acks the batch's messages. Nothing is acked that is not committed, so a crash loses
nothing: the broker redelivers what was not acked, and the writer's idempotent path stores it
once.

Memory stays bounded in bytes, not only in messages: the ingester reads from the socket only
while fewer than Receive Maximum messages *and* fewer than ``max_pending_bytes``
(``BASEWATCH_INGEST_MAX_PENDING_BYTES``) payload bytes wait uncommitted, and leaves its read
loop whenever a batch is full. While the database is down the backlog stops there (at most one
message past the byte bound) and the rest waits, persisted, in the broker's session queue: TCP
flow control holds it back, nothing is dropped and nothing is acked. (The broker alone does not
bound it: Mosquitto 2.0 sends past the Receive Maximum once acks flow, and a count says nothing
about 1 MB messages.) If reading stays paused longer than the keepalive, the connection is
dropped and resumed later; the session keeps every unacked message.

A pending message is kept as its raw payload only; it is decoded when its batch is first
written (and the decoded form kept until that batch commits, so a retry does not decode
again). Decoded readings take several times the bytes of their JSON, so decoding on arrival
would multiply the bound; this way only the batch being written is decoded, and a batch is at
most ``batch_size`` messages and a quarter of the byte bound (at least one message).

Acks and reconnects: a connection "generation" counts connections. A message is acked only on the
connection that delivered it (a packet id means nothing on another connection). When the broker
resumes the session after a reconnect it redelivers every unacked message, so copies still
pending from the previous connection are dropped; a copy already committed is merged again by the
writer and acked on the new connection.

Monitoring: :class:`Counters` (``stats``) are running totals since start, and
:attr:`Ingester.pending_messages` / :attr:`Ingester.pending_bytes` / :attr:`Ingester.paused` the
buffer's state; another thread may read them at any time (a scrape of the composition root's
Prometheus collector). ``on_batch`` is called after each committed batch with what it wrote
and how long the write took (the batch commit time). ingest itself knows nothing of Prometheus.
Redelivered messages are counted again, as they are processed again.
"""

from __future__ import annotations

import datetime as dt
import logging
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.errors import ConfigError, StorageUnavailable
from ingest.decode import Decoded, Limits
from ingest.messages import Message, decode_message
from ingest.store import BatchWriter, WriteStats
from ingest.topics import subscriptions

log = logging.getLogger(__name__)

UTC = dt.UTC
THROUGHPUT_LOG_INTERVAL_S = 10.0
SHUTDOWN_FLUSH_TIMEOUT_S = 20.0
_MAX_BACKOFF_S = 15.0
# Reconnect to the broker quickly: Mosquitto 2.0 does not persist shared subscriptions across
# its own restart, so until we subscribe again devices' messages have no subscriber.
_MAX_MQTT_BACKOFF_S = 2.0


@dataclass(frozen=True)
class ConsumerConfig:
    """What an ingester process needs to know (built from Settings by the composition root)."""

    host: str
    port: int
    client_id: str
    topic_prefix: str
    share_group: str = "basewatch"
    username: str = ""
    password: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 30
    session_expiry_s: int = 86400
    receive_maximum: int = 10000
    batch_size: int = 2000
    batch_age_ms: int = 200
    max_pending_bytes: int = 64 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)

    @property
    def batch_bytes(self) -> int:
        """Payload bytes that make a batch full (a batch always takes at least one message)."""
        return max(1, self.max_pending_bytes // 4)


@dataclass(slots=True)
class _Pending:
    topic: str
    payload: bytes
    received_at: dt.datetime
    mid: int
    qos: int
    generation: int
    message: Message | None = None  # decoded when its batch is first written

    @property
    def size(self) -> int:
        """What it counts against the byte bound."""
        return len(self.payload) + len(self.topic)


@dataclass(slots=True)
class Counters:
    """Running totals since start (``stats``; the progress log and the metrics read them)."""

    received: int = 0
    committed: int = 0  # written and acked: stored, dead-lettered, or both
    stored: int = 0  # messages with at least one reading or event stored
    readings: int = 0
    values: int = 0
    events: int = 0
    dead_letters: int = 0
    suppressed: int = 0  # of the dead letters, counted over the rate limit, not stored
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)  # ingest.store's kinds
    batches: int = 0
    write_failures: int = 0


class Ingester:
    """Consumes device messages until :meth:`stop` (or SIGTERM/SIGINT), then flushes cleanly."""

    def __init__(
        self,
        config: ConsumerConfig,
        writer: BatchWriter,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
    ) -> None:
        self.config = config
        self.stats = Counters()
        self._writer = writer
        self._clock = clock
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._paused = False  # reading stopped because the pending buffer is full
        self._oldest_pending = 0.0
        self._generation = 0
        self._connected = False
        self._stopping = False
        self._fatal: BaseException | None = None
        self._retry_at = 0.0
        self._backoff_s = 0.5
        self._client = self._make_client()
        # called after each SUBACK that grants every filter (a readiness marker for scripts)
        self.on_subscribed: Callable[[], None] | None = None
        # called after each committed batch: what it wrote, and its write time in seconds
        self.on_batch: Callable[[WriteStats, float], None] | None = None

    @property
    def pending_messages(self) -> int:
        """Messages received and not yet committed (nor acked)."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """What those count against ``max_pending_bytes``."""
        return self._pending_bytes

    @property
    def paused(self) -> bool:
        """True while reading is paused because the pending buffer is at a bound."""
        return self._paused

    # -- public -------------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        """Ask the loop to finish: flush, commit, ack and disconnect."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: flushing and stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Run until stopped. Raises :class:`ConfigError` when the broker refuses us for good."""
        self._connect_with_retry()
        next_report = time.monotonic() + THROUGHPUT_LOG_INTERVAL_S
        last = (self.stats.committed, self.stats.values, time.monotonic())
        try:
            while not self._stopping:
                self._network_step()
                if self._fatal is not None:
                    raise self._fatal
                self._maybe_flush()
                if time.monotonic() >= next_report:
                    last = self._report(last)
                    next_report = time.monotonic() + THROUGHPUT_LOG_INTERVAL_S
        finally:
            self._shutdown()

    # -- network ------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            client.tls_set(
                ca_certs=cfg.ca_file or None,
                certfile=cfg.cert_file or None,
                keyfile=cfg.key_file or None,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        return props

    def _connect_with_retry(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                self._client.connect(
                    self.config.host,
                    self.config.port,
                    keepalive=self.config.keepalive_s,
                    clean_start=False,
                    properties=self._connect_properties(),
                )
                return
            except OSError as exc:
                log.warning(
                    "cannot reach MQTT broker %s:%d (%s); retrying in %.1f s",
                    self.config.host,
                    self.config.port,
                    exc,
                    delay,
                )
                self._sleep_serving(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    def _reconnect_with_retry(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                self._client.reconnect()
                return
            except OSError as exc:
                log.warning("MQTT reconnect failed (%s); retrying in %.1f s", exc, delay)
                self._sleep_serving(delay)
                delay = min(delay * 2, _MAX_MQTT_BACKOFF_S)

    def _sleep_serving(self, seconds: float) -> None:
        """Wait, but keep writing pending messages meanwhile (they are acked later or
        redelivered)."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            self._maybe_flush()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _network_step(self) -> None:
        client = self._client
        sock = client.socket()
        if sock is None:
            self._reconnect_with_retry()
            return
        timeout = self._flush_wait()
        # Stop reading while the backlog is full: Mosquitto sends more than the Receive
        # Maximum once acks flow again (measured with 2.0.11), so the bound must be ours. The
        # broker keeps the rest in its session queue; TCP flow control holds it back.
        full = self._buffer_full()
        pending_tls = getattr(sock, "pending", None)
        if not full and pending_tls is not None and pending_tls() > 0:
            timeout = 0.0
        wlist = [sock] if client.want_write() else []
        rlist = [] if full else [sock]
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except (OSError, ValueError):
            readable, writable = rlist, []
        if readable:
            # drain what the socket holds (loop_read reads one packet per call here), but leave
            # once a batch is full so that it is written before more is read; while the
            # database is away (a retry is scheduled) keep reading up to the buffer's bounds
            while not self._buffer_full() and not (
                self._batch_full() and time.monotonic() >= self._retry_at
            ):
                before = self.stats.received
                rc = client.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS or self.stats.received == before:
                    break
        if writable or client.want_write():
            client.loop_write()
        client.loop_misc()

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            if reason.value in (0x86, 0x87, 0x85, 0x8C):  # bad credentials, not authorised
                self._fatal = ConfigError(
                    "BASEWATCH_MQTT_USERNAME", f"the broker refused the connection: {reason}"
                )
            else:
                log.warning("broker refused the connection: %s", reason)
            return
        self._connected = True
        if flags.session_present:
            dropped = [p for p in self._pending if p.generation != self._generation]
            if dropped:
                # the broker resends these on this connection; keep only the new copies
                self._pending = [p for p in self._pending if p.generation == self._generation]
                self._pending_bytes = sum(p.size for p in self._pending)
                log.info("session resumed: %d unacked messages will be redelivered", len(dropped))
        else:
            log.info(
                "connected to %s:%d as %s (new session)",
                self.config.host,
                self.config.port,
                self.config.client_id,
            )
        options = SubscribeOptions(qos=1)
        client.subscribe(
            [(f, options) for f in subscriptions(self.config.topic_prefix, self.config.share_group)]
        )

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._fatal = ConfigError(
                "BASEWATCH_TOPIC_PREFIX",
                f"the broker refused the subscription: {', '.join(failed)}",
            )
            return
        log.info("subscribed (SUBACK: %s)", ", ".join(str(r) for r in reasons))
        if self.on_subscribed is not None:
            self.on_subscribed()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self._connected and not self._stopping:
            log.warning("disconnected from the broker: %s", reason)
        self._connected = False
        self._generation += 1

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # paho stops its loop if this raises: nothing here can (decoding waits for the batch)
        payload = bytes(msg.payload)
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers check UTF-8, but a bad topic must not stop us
            topic = bytes(msg._topic).decode("utf-8", "replace")
        if not self._pending:
            self._oldest_pending = time.monotonic()
        pending = _Pending(topic, payload, self._clock(), msg.mid, msg.qos, self._generation)
        self._pending.append(pending)
        self._pending_bytes += pending.size
        self.stats.received += 1

    def _decoded(self, pending: _Pending) -> Message:
        """The pending message decoded (once); a decoder bug becomes a dead letter."""
        if pending.message is None:
            try:
                pending.message = decode_message(
                    pending.topic,
                    pending.payload,
                    prefix=self.config.topic_prefix,
                    limits=self.config.limits,
                    received_at=pending.received_at,
                )
            except Exception as exc:  # a bug here must not stop ingest
                log.exception("unexpected error decoding a message on %r", pending.topic)
                pending.message = Message(
                    pending.topic,
                    pending.payload,
                    pending.received_at,
                    None,
                    Decoded([], [], []),
                    topic_error=f"internal decoding error: {type(exc).__name__}",
                )
        return pending.message

    def decode(self, topic_name: str, payload: bytes) -> Message:
        """Decode one message (topic and payload) without touching the database."""
        return decode_message(
            topic_name,
            payload,
            prefix=self.config.topic_prefix,
            limits=self.config.limits,
            received_at=self._clock(),
        )

    # -- batching -----------------------------------------------------------------------------

    def _flush_wait(self) -> float:
        if not self._pending:
            return 0.5
        now = time.monotonic()
        if now < self._retry_at:
            return min(0.5, self._retry_at - now)
        due = self._oldest_pending + self.config.batch_age_ms / 1000
        return max(0.0, min(0.5, due - now))

    def _batch_full(self) -> bool:
        return (
            len(self._pending) >= self.config.batch_size
            or self._pending_bytes >= self.config.batch_bytes
        )

    def _buffer_full(self) -> bool:
        """True while reading is paused (the pending buffer is at its count or byte bound)."""
        full = (
            len(self._pending) >= self.config.receive_maximum
            or self._pending_bytes >= self.config.max_pending_bytes
        )
        if full != self._paused:
            self._paused = full
            if full:
                log.warning(
                    "pending buffer full (%d messages, %.1f MB uncommitted; bounds "
                    "BASEWATCH_MQTT_RECEIVE_MAXIMUM=%d, BASEWATCH_INGEST_MAX_PENDING_BYTES=%d): "
                    "reading paused, the broker keeps the rest",
                    len(self._pending),
                    self._pending_bytes / 1e6,
                    self.config.receive_maximum,
                    self.config.max_pending_bytes,
                )
            else:
                log.info("pending buffer below its bounds again: reading resumed")
        return full

    def _next_batch(self) -> list[_Pending]:
        """The oldest pending messages, up to ``batch_size`` and ``batch_bytes`` (at least one)."""
        budget = self.config.batch_bytes
        taken = 0
        end = 0
        for pending in self._pending[: self.config.batch_size]:
            if end and taken + pending.size > budget:
                break
            taken += pending.size
            end += 1
        return self._pending[:end]

    def _maybe_flush(self) -> None:
        if not self._pending or time.monotonic() < self._retry_at:
            return
        old = time.monotonic() - self._oldest_pending >= self.config.batch_age_ms / 1000
        if self._batch_full() or old:
            self._flush()

    def _flush(self) -> bool:
        """Write everything pending in batches; False when the database is unavailable."""
        while self._pending:
            batch = self._next_batch()
            messages = [self._decoded(p) for p in batch]
            started = time.perf_counter()
            try:
                written = self._writer.write(messages)
            except StorageUnavailable as exc:
                self.stats.write_failures += 1
                log.warning(
                    "%s; %d messages (%.1f MB) wait unacked, retrying in %.1f s",
                    exc,
                    len(self._pending),
                    self._pending_bytes / 1e6,
                    self._backoff_s,
                )
                self._retry_at = time.monotonic() + self._backoff_s
                self._backoff_s = min(self._backoff_s * 2, _MAX_BACKOFF_S)
                return False
            self._backoff_s = 0.5
            self._retry_at = 0.0
            del self._pending[: len(batch)]
            self._pending_bytes -= sum(p.size for p in batch)
            self._ack(batch)
            self._count(written)
            if self.on_batch is not None:
                self.on_batch(written, time.perf_counter() - started)
        self._oldest_pending = time.monotonic()
        return True

    def _ack(self, batch: list[_Pending]) -> None:
        if not self._connected:
            return
        for pending in batch:
            if pending.qos > 0 and pending.generation == self._generation:
                self._client.ack(pending.mid, pending.qos)

    def _count(self, written: WriteStats) -> None:
        s = self.stats
        s.committed += written.messages
        s.stored += written.stored
        s.readings += written.readings
        s.values += written.values
        s.events += written.events
        s.dead_letters += written.dead_letters
        s.suppressed += written.suppressed
        s.batches += 1
        kinds = dict(s.dead_letter_kinds)  # replaced whole: a reader never sees it change
        for kind, n in written.dead_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
        s.dead_letter_kinds = kinds
        log.debug(
            "batch: %d messages, %d readings, %d events, %d dead letters%s",
            written.messages,
            written.readings,
            written.events,
            written.dead_letters,
            " (merged)" if written.conflict_path else "",
        )

    def _report(self, last: tuple[int, int, float]) -> tuple[int, int, float]:
        committed, values, at = last
        now = time.monotonic()
        elapsed = max(now - at, 1e-9)
        if self.stats.committed != committed or self._pending:
            log.info(
                "ingest: %.0f msg/s, %.0f values/s; %d committed, %d dead letters, %d pending",
                (self.stats.committed - committed) / elapsed,
                (self.stats.values - values) / elapsed,
                self.stats.committed,
                self.stats.dead_letters,
                len(self._pending),
            )
        return self.stats.committed, self.stats.values, now

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_FLUSH_TIMEOUT_S
        self._retry_at = 0.0
        while self._pending and time.monotonic() < deadline:
            if not self._flush():
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                self._retry_at = 0.0
        if self._pending:
            log.warning(
                "stopping with %d uncommitted messages: they stay unacked and the broker "
                "redelivers them",
                len(self._pending),
            )
        client = self._client
        while client.want_write() and client.socket() is not None:
            if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                break
        if self._connected:
            client.disconnect()
        self._writer.close()
        log.info("ingester stopped: %d messages committed", self.stats.committed)
