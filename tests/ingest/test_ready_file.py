"""``basewatch ingest --ready-file``: written on the broker's SUBACK, removed at exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from basewatch.localbroker import LocalBroker
from simulator.publish import Publisher
from tests.fix_ingest import reading, register, wait_for

T0_MS = 1_767_600_000_000


def _wait_exists(path: Path, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, "ingester exited"
        assert time.monotonic() < deadline, f"{path} not written"
        time.sleep(0.05)


def test_ready_file_of_two_processes_means_nothing_published_after_it_is_lost(
    db_url: str, broker: LocalBroker, prefix: str, tmp_path: Path
) -> None:
    register(db_url, [("acme", "r1")])
    ready = tmp_path / "ingest.ready"
    ready.write_text("stale")  # from an earlier run: removed at start
    env = dict(
        os.environ,
        BASEWATCH_DATABASE_URL=db_url,
        BASEWATCH_MQTT_HOST=broker.host,
        BASEWATCH_MQTT_PORT=str(broker.port),
        BASEWATCH_TOPIC_PREFIX=prefix,
        BASEWATCH_MQTT_CLIENT_ID=f"test-ready-{uuid.uuid4().hex[:8]}",
        BASEWATCH_MQTT_SHARE_GROUP=f"g{uuid.uuid4().hex[:8]}",
        BASEWATCH_INGEST_BATCH_AGE_MS="50",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "basewatch",
            "ingest",
            "--processes",
            "2",
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text() != "stale"):
            assert process.poll() is None, "ingester exited"
            assert time.monotonic() < deadline, "ready file not written"
            time.sleep(0.05)
        assert json.loads(ready.read_text())["processes"] == 2
        for index in (0, 1):
            child = json.loads((tmp_path / f"ingest.ready.{index}").read_text())
            assert child["client_id"] == f"{env['BASEWATCH_MQTT_CLIENT_ID']}" + (
                f"-{index}" if index else ""
            )
        with Publisher(broker.host, broker.port) as pub:
            for i in range(200):
                pub.publish(f"{prefix}/acme/r1/telemetry", reading(T0_MS + i * 1000, i, x=1.0))
            assert pub.wait_all_acked(30)
            assert (pub.acked, pub.unrouted) == (200, 0)
        query = "SELECT count(*) FROM telemetry WHERE asset_id = 'r1'"
        assert wait_for(db_url, query, 200) == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert not ready.exists()
    assert not list(tmp_path.glob("ingest.ready*"))


def test_ready_file_of_one_process(
    db_url: str, broker: LocalBroker, prefix: str, tmp_path: Path
) -> None:
    ready = tmp_path / "one.ready"
    env = dict(
        os.environ,
        BASEWATCH_DATABASE_URL=db_url,
        BASEWATCH_MQTT_HOST=broker.host,
        BASEWATCH_MQTT_PORT=str(broker.port),
        BASEWATCH_TOPIC_PREFIX=prefix,
        BASEWATCH_MQTT_CLIENT_ID=f"test-ready-{uuid.uuid4().hex[:8]}",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "basewatch", "ingest", "--ready-file", str(ready)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_exists(ready, process)
        document = json.loads(ready.read_text())
        assert document["client_id"] == env["BASEWATCH_MQTT_CLIENT_ID"]
        assert document["pid"] == process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert not ready.exists()
