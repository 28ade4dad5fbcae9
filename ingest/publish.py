"""A device-side publisher (QoS 1) for the simulator, the demo, tests and benchmarks.

It counts a message as published only when the broker acknowledged it (PUBACK): a load
generator that counted sends would over-count whenever the connection drops before the ack.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import StorageUnavailable


class Publisher:
    """Publishes with at most ``window`` unacknowledged messages in flight."""

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
        self._cond = threading.Condition()
        self._connected = False
        self.sent = 0
        self.acked = 0

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
            if not self._cond.wait_for(lambda: self._connected, timeout=10):
                raise StorageUnavailable("the MQTT broker did not accept the connection")
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
        _p: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = not reason.is_failure
            self._cond.notify_all()

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        with self._cond:
            self.acked += 1
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue one message, waiting while the window is full."""
        with self._cond:
            self._cond.wait_for(lambda: self.sent - self.acked < self._window)
        self._client.publish(topic, payload, qos=qos)
        with self._cond:
            self.sent += 1

    def wait_all_acked(self, timeout_s: float = 120.0) -> bool:
        """Wait until the broker acknowledged everything sent; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            return self._cond.wait_for(
                lambda: self.acked >= self.sent, timeout=max(0.0, deadline - time.monotonic())
            )
