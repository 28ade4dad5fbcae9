"""A device must not be able to make the fleet's telemetry disappear (issue 11, item 1).

The broker is started from the shipped deploy/mosquitto/mosquitto.conf with its
authentication (the dynamic-security plugin, ``use_username_as_clientid``), and its users are
made with the shipped deploy/mosquitto/mqtt-users, as an operator would. A real
``basewatch ingest`` stores what devices publish. Two attacks from a device login:

- subscribing to the ingesters' shared subscription (Mosquitto then handed the device a share
  of every account's messages, which the read ACL dropped while publishers still got their
  PUBACK: 100 of 200 readings were stored);
- connecting with an ingester's client id (it took over the ingester's persistent session and
  its queue: 0 of 200 stored while the ingester was offline).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from basewatch.localbroker import LocalBroker
from simulator.publish import Publisher
from tests.fix_ingest import count, reading, register, wait_for

MQTT_USERS = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mqtt-users"
PREFIX = "basewatch/v1"  # the shipped defaults: the attack names the real shared subscription
GROUP = "basewatch"
INGESTER = "basewatch-ingest-1"
N = 200
T0_MS = 1_767_600_000_000

INGEST_PASSWORD = secrets.token_hex(16)
PASSWORDS = {
    INGESTER: INGEST_PASSWORD,
    f"{INGESTER}-1": INGEST_PASSWORD,  # process 1 of --processes 2: same password, own user
    "acme/c1": secrets.token_hex(16),
    "acme/c2": secrets.token_hex(16),
    "acme/c3": secrets.token_hex(16),
    "acme/c4": secrets.token_hex(16),
    "rival/r1": secrets.token_hex(16),
}


def mqtt_users(broker: LocalBroker, *args: str, password: str = "") -> None:
    env = dict(
        os.environ,
        MQTT_HOST=broker.host,
        MQTT_PORT=str(broker.port),
        MQTT_ADMIN_PASSWORD=broker.admin_password,
        MQTT_PASSWORD=password,
        BASEWATCH_TOPIC_PREFIX=PREFIX,
        BASEWATCH_MQTT_SHARE_GROUP=GROUP,
    )
    result = subprocess.run(
        ["sh", str(MQTT_USERS), *args], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def secured() -> Iterator[LocalBroker]:
    with LocalBroker(secured=True, admin_password=secrets.token_hex(16)) as broker:
        mqtt_users(broker, "setup")
        for user, password in PASSWORDS.items():
            if "/" in user:
                mqtt_users(broker, "add-device", *user.split("/"), password=password)
            else:
                mqtt_users(broker, "add-ingester", user, password=password)
        yield broker


class Ingest:
    """``basewatch ingest`` as the broker user ``basewatch-ingest-1``, client id unset (derived
    from its password), on the shipped share group and prefix."""

    def __init__(self, db_url: str, broker: LocalBroker, tmp: Path, processes: int = 1) -> None:
        self.ready = tmp / "ingest.ready"
        self.log = tmp / "ingest.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
        self.env.update(
            BASEWATCH_DATABASE_URL=db_url,
            BASEWATCH_MQTT_HOST=broker.host,
            BASEWATCH_MQTT_PORT=str(broker.port),
            BASEWATCH_MQTT_USERNAME=INGESTER,
            BASEWATCH_MQTT_PASSWORD=PASSWORDS[INGESTER],
            BASEWATCH_TOPIC_PREFIX=PREFIX,
            BASEWATCH_MQTT_SHARE_GROUP=GROUP,
            BASEWATCH_INGEST_BATCH_AGE_MS="50",
            BASEWATCH_LOG_LEVEL="INFO",
        )
        self.processes = processes
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start and wait for the SUBACK; return the client id the ingester sent."""
        args = [sys.executable, "-m", "basewatch", "ingest", "--ready-file", str(self.ready)]
        if self.processes > 1:
            args += ["--processes", str(self.processes)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the ingester did not subscribe"
            time.sleep(0.05)
        if self.processes > 1:
            return ""
        return str(json.loads(self.ready.read_text())["client_id"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=60) == 0
        self.process = None


class Attacker:
    """A raw MQTT v5 client logged in as a device, recording what the broker answers."""

    def __init__(
        self,
        broker: LocalBroker,
        user: str,
        *,
        client_id: str = "",
        session_expiry_s: int = 3600,
        password: str | None = None,
    ) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(user, PASSWORDS.get(user, "") if password is None else password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.session_present: bool | None = None
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.received: list[str] = []
        self.disconnects = 0
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry_s
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        with self.cond:
            assert self.cond.wait_for(lambda: self.connack is not None, timeout=10)

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        with self.cond:
            self.connack, self.session_present = reason, bool(flags.session_present)
            self.cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self.cond:
            self.subacks[mid] = reasons
            self.cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.received.append(message.topic)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _r: ReasonCode, _p: Any) -> None:
        with self.cond:
            self.disconnects += 1

    def subscribe(self, topic_filter: str) -> ReasonCode | None:
        """The SUBACK's reason code, or None when the broker disconnected instead."""
        _rc, mid = self.client.subscribe(topic_filter, qos=1)
        with self.cond:
            self.cond.wait_for(lambda: mid in self.subacks or self.disconnects > 0, timeout=10)
            return self.subacks[mid][0] if mid in self.subacks else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_readings(broker: LocalBroker, asset: tuple[str, str], first: int = 0) -> None:
    account_id, asset_id = asset
    user = f"{account_id}/{asset_id}"
    with Publisher(
        broker.host, broker.port, username=user, password=PASSWORDS[user], client_id=user
    ) as pub:
        for i in range(first, first + N):
            pub.publish(
                f"{PREFIX}/{account_id}/{asset_id}/telemetry",
                reading(T0_MS + i * 1000, i, load_pct=float(i % 100)),
            )
        assert pub.wait_all_acked(30)
        assert (pub.acked, pub.rejected, pub.unrouted) == (N, 0, 0)


def stored(db_url: str, asset_id: str) -> int:
    return count(db_url, "SELECT count(*) FROM telemetry WHERE asset_id = %s", (asset_id,))


def wait_stored(db_url: str, asset_id: str, expected: int) -> int:
    query = "SELECT count(*) FROM telemetry WHERE asset_id = %s"
    return wait_for(db_url, query, expected, timeout_s=60, params=(asset_id,))


def test_logins_are_checked(secured: LocalBroker) -> None:
    for user, password in (("rival/r1", "wrong"), ("nobody", "x"), ("", "")):
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if user:
            client.username_pw_set(user, password)
        refused: list[ReasonCode] = []
        client.on_connect = lambda _c, _u, _f, reason, _p, out=refused: out.append(reason)
        client.connect(secured.host, secured.port)
        client.loop_start()
        deadline = time.monotonic() + 10
        while not refused and time.monotonic() < deadline:
            time.sleep(0.05)
        client.disconnect()
        client.loop_stop()
        assert refused, user
        assert refused[0].is_failure, (user, refused[0])


def test_a_device_cannot_subscribe_to_the_fleets_telemetry(
    db_url: str, secured: LocalBroker, tmp_path: Path
) -> None:
    register(db_url, [("acme", "c1"), ("rival", "r1")])
    ingest = Ingest(db_url, secured, tmp_path)
    ingest.start()
    attacker = Attacker(secured, "rival/r1", session_expiry_s=0)
    try:
        assert attacker.connack is not None
        assert not attacker.connack.is_failure
        for topic_filter in (
            f"$share/{GROUP}/{PREFIX}/+/+/telemetry",
            f"$share/{GROUP}/{PREFIX}/+/+/event",
            f"$share/other/{PREFIX}/#",
            f"{PREFIX}/+/+/telemetry",
            f"{PREFIX}/acme/c1/telemetry",
            f"{PREFIX}/rival/r1/telemetry",
            "#",
            "$SYS/#",
            "$CONTROL/dynamic-security/#",
        ):
            reason = attacker.subscribe(topic_filter)
            assert reason is None or reason.is_failure, (topic_filter, reason)
            if reason is not None:
                assert reason.value == 0x87, (topic_filter, reason)  # Not authorized
        publish_readings(secured, ("acme", "c1"))  # meanwhile, another account's machine
        assert wait_stored(db_url, "c1", N) == N
        # a device may publish only under its own topic: elsewhere the PUBACK says 0x87
        with Publisher(
            secured.host,
            secured.port,
            username="rival/r1",
            password=PASSWORDS["rival/r1"],
            session_expiry_s=0,
        ) as pub:
            pub.publish(f"{PREFIX}/acme/c1/telemetry", reading(T0_MS - 1000, 0, forged=1.0))
            assert pub.wait_all_acked(10)
            assert pub.rejections == {"Not authorized (0x87)": 1}
        time.sleep(0.5)
        assert attacker.received == []
        assert stored(db_url, "c1") == N  # the forged reading is not there
    finally:
        attacker.close()
        ingest.stop()


def attack_ids(ingester_client_id: str) -> list[str]:
    """What a device could try: the id the ingester sent (learnt somehow), its username (the
    id the broker gives it), and the predictable ids of earlier releases."""
    return [
        ingester_client_id,
        INGESTER,
        f"basewatch-ingest-{socket.gethostname()}",
        "basewatch-ingest-2",
    ]


def test_a_device_cannot_take_over_an_online_ingesters_session(
    db_url: str, secured: LocalBroker, tmp_path: Path
) -> None:
    register(db_url, [("acme", "c2")])
    ingest = Ingest(db_url, secured, tmp_path)
    client_id = ingest.start()
    attackers = []
    try:
        for stolen in attack_ids(client_id):
            # session expiry 0: a session it resumed would be one it had taken over
            attacker = Attacker(secured, "rival/r1", client_id=stolen, session_expiry_s=0)
            attackers.append(attacker)
            assert attacker.connack is not None
            if not attacker.connack.is_failure:
                assert attacker.session_present is False, stolen
        publish_readings(secured, ("acme", "c2"))
        assert wait_stored(db_url, "c2", N) == N
        assert "disconnected from the broker" not in ingest.log.read_text()
        assert f"Client {INGESTER} already connected" not in secured.log_text()
        assert all(a.received == [] for a in attackers)
    finally:
        for attacker in attackers:
            attacker.close()
        ingest.stop()


def test_a_device_cannot_take_over_an_offline_ingesters_session(
    db_url: str, secured: LocalBroker, tmp_path: Path
) -> None:
    """While the ingester is away its session queues its share; a device connecting with its
    client id must not get that queue (it would be delivered to the device and dropped)."""
    register(db_url, [("acme", "c3")])
    ingest = Ingest(db_url, secured, tmp_path)
    client_id = ingest.start()
    ingest.stop()  # its session, with the shared subscription, stays on the broker
    attackers = []
    try:
        for stolen in attack_ids(client_id):
            attacker = Attacker(secured, "rival/r1", client_id=stolen, session_expiry_s=0)
            attackers.append(attacker)
            assert attacker.connack is not None
            if not attacker.connack.is_failure:
                assert attacker.session_present is False, stolen
        publish_readings(secured, ("acme", "c3"))  # queued for the absent ingester
        time.sleep(0.5)
        assert all(a.received == [] for a in attackers)
    finally:
        for attacker in attackers:
            attacker.close()
    assert stored(db_url, "c3") == 0
    ingest.start()  # the same broker user resumes its session and gets the queue
    try:
        assert wait_stored(db_url, "c3", N) == N
    finally:
        ingest.stop()


def test_each_process_of_an_ingester_has_its_own_broker_user(
    db_url: str, secured: LocalBroker, tmp_path: Path
) -> None:
    """The broker uses the username as client id, so ``--processes 2`` logs in as
    basewatch-ingest-1 and basewatch-ingest-1-1; both share the work and nothing is lost."""
    register(db_url, [("acme", "c4")])
    ingest = Ingest(db_url, secured, tmp_path, processes=2)
    ingest.start()
    try:
        publish_readings(secured, ("acme", "c4"))
        assert wait_stored(db_url, "c4", N) == N
        assert f"Client {INGESTER}" not in secured.log_text()  # "... already connected"
    finally:
        ingest.stop()


def test_mqtt_users_refuses_identifiers_that_would_widen_an_acl(secured: LocalBroker) -> None:
    env = dict(os.environ, MQTT_PORT=str(secured.port), MQTT_ADMIN_PASSWORD="unused")
    for args in (
        ("add-device", "acme", "+"),
        ("add-device", "#", "c9"),
        ("add-device", "acme/x", "c9"),
        ("add-device", "acme", "c 9"),
        ("add-ingester", ""),
        ("add-device", "acme"),
        ("frobnicate",),
    ):
        result = subprocess.run(
            ["sh", str(MQTT_USERS), *args], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("mqtt-users: "), (args, result.stderr)


def test_a_removed_device_is_disconnected_and_cannot_log_in_again(
    secured: LocalBroker,
) -> None:
    password = secrets.token_hex(16)
    mqtt_users(secured, "add-device", "gone", "g1", password=password)
    device = Attacker(secured, "gone/g1", password=password, session_expiry_s=0)
    assert device.connack is not None
    assert not device.connack.is_failure
    mqtt_users(secured, "remove-device", "gone", "g1")
    with device.cond:
        assert device.cond.wait_for(lambda: device.disconnects > 0, timeout=10)
    device.client.loop_stop()
    again = Attacker(secured, "gone/g1", password=password, session_expiry_s=0)
    again.close()
    assert again.connack is not None
    assert again.connack.is_failure
