"""Oversized messages against the real broker started from deploy/mosquitto/mosquitto.conf.

Mosquitto 2.0 answers a payload over ``message_size_limit`` with PUBACK 0x95, which paho-mqtt
2.2 used to take for a malformed packet: it reconnected and resent the message every second,
forever. The project's publishers (``basewatch simulate``, ``basewatch demo``) must refuse such
a message before sending it, and a negative PUBACK must be counted once, without a reconnect.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from basewatch.localbroker import PRODUCTION_CONFIG, LocalBroker
from simulator.publish import MessageTooLarge, Publisher, PublishRejected, publish_packet_size


def _config_value(option: str) -> int:
    for line in PRODUCTION_CONFIG.read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == option:
            return int(words[1])
    raise AssertionError(f"{option} is not set in {PRODUCTION_CONFIG}")


MESSAGE_SIZE_LIMIT = _config_value("message_size_limit")
MAX_PACKET_SIZE = _config_value("max_packet_size")


def test_the_shipped_limits_are_what_the_ingester_expects() -> None:
    # BASEWATCH_INGEST_MAX_PAYLOAD_BYTES defaults to message_size_limit; packets have headroom
    assert MESSAGE_SIZE_LIMIT == 1_048_576
    assert MAX_PACKET_SIZE > MESSAGE_SIZE_LIMIT


def test_publisher_refuses_a_payload_over_the_configured_limit_before_sending(
    broker: LocalBroker, prefix: str
) -> None:
    topic = f"{prefix}/acme/c1/telemetry"
    with Publisher(broker.host, broker.port, max_payload_bytes=MESSAGE_SIZE_LIMIT) as pub:
        with pytest.raises(MessageTooLarge) as refused:
            pub.publish(topic, b"x" * (MESSAGE_SIZE_LIMIT + 1))
        assert refused.value.limit == MESSAGE_SIZE_LIMIT
        assert "BASEWATCH_INGEST_MAX_PAYLOAD_BYTES" in str(refused.value)
        assert f"{MESSAGE_SIZE_LIMIT + 1:,} bytes" in str(refused.value)
        assert pub.sent == 0
        pub.publish(topic, b"x" * MESSAGE_SIZE_LIMIT)  # at the limit: taken
        assert pub.wait_all_acked(30)
        assert (pub.acked, pub.rejected, pub.connects) == (1, 0, 1)


def test_publisher_refuses_a_packet_over_the_brokers_maximum_packet_size(
    broker: LocalBroker, prefix: str
) -> None:
    topic = f"{prefix}/acme/c1/telemetry"
    with Publisher(broker.host, broker.port) as pub:  # no payload limit of ours
        assert pub.max_packet_size == MAX_PACKET_SIZE  # read from the CONNACK
        fits = MAX_PACKET_SIZE - publish_packet_size(topic, 0)
        with pytest.raises(MessageTooLarge) as refused:
            pub.publish(topic, b"x" * (fits + 1))
        assert "Maximum Packet Size" in str(refused.value)
        assert pub.sent == 0
        pub.publish(topic, b"{}")
        assert pub.wait_all_acked(30)
        assert (pub.acked, pub.connects) == (1, 1)


def test_negative_puback_is_counted_once_without_a_reconnect_loop(
    broker: LocalBroker, prefix: str
) -> None:
    """A broker whose message_size_limit is below the publisher's own limit answers 0x95: the
    message is refused once, not resent, and the connection stays up."""
    topic = f"{prefix}/acme/c1/telemetry"
    with Publisher(broker.host, broker.port) as pub:
        pub.publish(topic, b"x" * (MESSAGE_SIZE_LIMIT + 1000))  # under max_packet_size
        assert pub.wait_all_acked(10)
        assert pub.rejected == 1
        assert pub.rejections == {"Packet too large (0x95)": 1}
        time.sleep(3)  # paho-mqtt reconnected and resent once a second before the fix
        assert pub.connects == 1
        assert (pub.sent, pub.acked, pub.rejected) == (1, 0, 1)
        pub.publish(topic, b"{}")  # the connection still works
        assert pub.wait_all_acked(10)
        assert (pub.acked, pub.connects) == (1, 1)
        with pytest.raises(PublishRejected, match=r"refused 1 of 2 messages: Packet too large"):
            pub.raise_for_rejections()


def test_simulate_refuses_messages_over_the_limit_with_one_clear_line(
    broker: LocalBroker, prefix: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    env.update(
        BASEWATCH_MQTT_HOST=broker.host,
        BASEWATCH_MQTT_PORT=str(broker.port),
        BASEWATCH_TOPIC_PREFIX=prefix,
        BASEWATCH_INGEST_MAX_PAYLOAD_BYTES="2000",  # a day of hourly readings is ~10 kB
    )
    started = time.monotonic()
    fleet = ("--accounts", "1", "--assets", "1", "--months", "2")
    result = subprocess.run(
        [sys.executable, "-m", "basewatch", "simulate", "--no-register", *fleet],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "over the broker's limit of 2,000 bytes" in lines[0]
    assert time.monotonic() - started < 60
