"""A device-side publisher (QoS 1) for the simulator, the demo, tests and benchmarks.

It counts a message as published only when the broker acknowledged it (PUBACK): a load
generator that counted sends would over-count whenever the connection drops before the ack.

Size limits. A message the broker will not take is refused here, before it is sent, with
:class:`MessageTooLarge`: its payload over ``max_payload_bytes`` (the callers pass
``BASEWATCH_INGEST_MAX_PAYLOAD_BYTES``, which deploy/mosquitto/mosquitto.conf keeps equal to
Mosquitto's ``message_size_limit``), or the whole PUBLISH packet over the Maximum Packet Size
the broker announced in its CONNACK (Mosquitto's ``max_packet_size``). Sending it anyway loops:
Mosquitto 2.0 answers a payload over ``message_size_limit`` with PUBACK reason 0x95 (Packet too
large), a code MQTT v5 allows only in CONNACK and DISCONNECT, so paho-mqtt 2.2 takes the PUBACK
for a malformed packet, drops the connection, reconnects and resends the message, once a
second, forever; and a packet over ``max_packet_size`` makes Mosquitto disconnect the client,
which resends it on reconnecting.

Negative acknowledgements. A PUBACK with a reason code of 0x80 or more (not authorised: a topic
the login may not publish to; quota exceeded; payload format invalid; packet too large) means
the broker did not take the message, for good: it is counted in ``rejected`` (by reason in
``rejections``), never resent, and the connection stays up; :meth:`Publisher.raise_for_rejections`
turns them into one error for the caller. So that a 0x95 from a broker with a lower limit than
ours is such a refusal rather than a reconnect loop, this module teaches paho-mqtt's reason-code
table that 0x95 may arrive in a PUBACK (:func:`_accept_packet_too_large_in_puback`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from types import MappingProxyType, TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import BasewatchError, InputError, StorageUnavailable

log = logging.getLogger(__name__)

PACKET_TOO_LARGE = 0x95
NO_MATCHING_SUBSCRIBERS = 0x10


class MessageTooLarge(InputError):
    """A message over the broker's limit, refused before it was sent."""

    def __init__(self, topic: str, size: int, limit: int, what: str) -> None:
        super().__init__(
            f"a message to {topic} is {size:,} bytes, over the broker's limit of {limit:,} "
            f"bytes ({what}); it was not sent: publish smaller messages (fewer readings per "
            "message)"
        )
        self.topic = topic
        self.size = size
        self.limit = limit


class PublishRejected(BasewatchError):
    """The broker refused some messages with a negative PUBACK; they were not resent."""

    def __init__(self, rejections: Counter[str], sent: int) -> None:
        reasons = ", ".join(f"{reason}: {count:,}" for reason, count in rejections.most_common())
        super().__init__(
            f"the broker refused {sum(rejections.values()):,} of {sent:,} messages: {reasons}"
        )
        self.rejections = rejections


def _accept_packet_too_large_in_puback() -> None:
    """Let paho-mqtt decode a PUBACK with reason 0x95 instead of dropping the connection.

    MQTT v5 lists 0x95 (Packet too large) for CONNACK and DISCONNECT only, so paho-mqtt 2.2's
    table rejects it in a PUBACK as a malformed packet; Mosquitto 2.0 sends exactly that for a
    payload over ``message_size_limit``. Adding PUBACK to the code's packet types makes it an
    ordinary negative acknowledgement (``on_publish`` with a failure reason). Idempotent."""
    names = dict(ReasonCode.names)
    entry = {name: list(types) for name, types in names[PACKET_TOO_LARGE].items()}
    types = entry.setdefault("Packet too large", [])
    if PacketTypes.PUBACK not in types:
        types.append(PacketTypes.PUBACK)
        names[PACKET_TOO_LARGE] = entry
        ReasonCode.names = MappingProxyType(names)


_accept_packet_too_large_in_puback()


def publish_packet_size(topic: str, payload_bytes: int, qos: int = 1) -> int:
    """Bytes of an MQTT v5 PUBLISH packet without properties (what Maximum Packet Size bounds):
    fixed header, topic, packet identifier (QoS > 0), property length, payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos > 0 else 0) + 1 + payload_bytes
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


class Publisher:
    """Publishes with at most ``window`` unacknowledged messages in flight.

    ``max_payload_bytes`` (0: none of ours) bounds each payload; the broker's CONNACK Maximum
    Packet Size bounds each packet. Either refuses the message with :class:`MessageTooLarge`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "",
        window: int = 1000,
        username: str = "",
        password: str = "",
        session_expiry_s: int = 3600,
        max_payload_bytes: int = 0,
    ) -> None:
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if username:
            self._client.username_pw_set(username, password or None)
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._window = window
        self._host, self._port = host, port
        self._session_expiry_s = session_expiry_s
        self._max_payload_bytes = max_payload_bytes
        self._cond = threading.Condition()
        self._connected = False
        self._refused: ReasonCode | None = None
        self.max_packet_size = 0  # the broker's, from CONNACK (0: not announced)
        self.connects = 0
        self.sent = 0
        self.acked = 0
        self.rejected = 0
        self.rejections: Counter[str] = Counter()
        self.unrouted = 0  # acknowledged with "no matching subscribers": nobody got them

    def __enter__(self) -> Publisher:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        try:
            self._client.connect(
                self._host, self._port, keepalive=30, clean_start=False, properties=props
            )
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot reach the MQTT broker at {self._host}:{self._port}: {exc}"
            ) from exc
        self._client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connected or self._refused is not None, timeout=10)
            connected, refused = self._connected, self._refused
        if not connected:
            self._client.disconnect()
            self._client.loop_stop()
            why = f": {refused}" if refused is not None else ""
            raise StorageUnavailable(f"the MQTT broker did not accept the connection{why}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        _c: mqtt.Client,
        _u: Any,
        _f: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = not reason.is_failure
            if reason.is_failure:
                self._refused = reason
            else:
                self.connects += 1
                self.max_packet_size = int(getattr(props, "MaximumPacketSize", 0) or 0)
            self._cond.notify_all()

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        with self._cond:
            if reason.is_failure:
                self.rejected += 1
                self.rejections[f"{reason} (0x{reason.value:02x})"] += 1
                if self.rejected == 1:
                    log.warning("the broker refused a message: %s (0x%02x)", reason, reason.value)
            else:
                self.acked += 1
                self.unrouted += int(reason.value == NO_MATCHING_SUBSCRIBERS)
            self._cond.notify_all()

    @property
    def answered(self) -> int:
        """Messages the broker acknowledged or refused."""
        return self.acked + self.rejected

    def check_size(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Raise :class:`MessageTooLarge` when the broker would not take this message."""
        size = len(payload)
        if self._max_payload_bytes and size > self._max_payload_bytes:
            raise MessageTooLarge(
                topic,
                size,
                self._max_payload_bytes,
                "payload, BASEWATCH_INGEST_MAX_PAYLOAD_BYTES = Mosquitto's message_size_limit",
            )
        packet = publish_packet_size(topic, size, qos)
        if self.max_packet_size and packet > self.max_packet_size:
            raise MessageTooLarge(
                topic, packet, self.max_packet_size, "packet, the broker's Maximum Packet Size"
            )

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue one message, waiting while the window is full; a message over the broker's
        limit raises :class:`MessageTooLarge` and is not sent."""
        self.check_size(topic, payload, qos)
        with self._cond:
            self._cond.wait_for(lambda: self.sent - self.answered < self._window)
        self._client.publish(topic, payload, qos=qos)
        with self._cond:
            self.sent += 1

    def wait_all_acked(self, timeout_s: float = 120.0) -> bool:
        """Wait until the broker answered everything sent (acknowledged it, or refused it: see
        ``rejected``); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            return self._cond.wait_for(
                lambda: self.answered >= self.sent, timeout=max(0.0, deadline - time.monotonic())
            )

    def raise_for_rejections(self) -> None:
        """Raise :class:`PublishRejected` if the broker refused any message."""
        with self._cond:
            if self.rejected:
                raise PublishRejected(Counter(self.rejections), self.sent)
