"""Running ingester processes: one in this process, or several children on the shared
subscription, each with its own stable MQTT client id (so each keeps its persistent session)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import psycopg

from basewatch.wiring import consumer_config, dead_letter_policy
from core.db import connect
from core.errors import ConfigError, StorageUnavailable
from core.settings import Settings
from ingest.consumer import Ingester
from ingest.store import BatchWriter

log = logging.getLogger(__name__)


def check_schema(settings: Settings) -> None:
    """Fail fast on an unmigrated database; a database that is down is only a warning (the
    ingester waits for it without acking)."""
    try:
        with connect(settings.database_url) as conn:
            row = conn.execute("SELECT to_regclass('telemetry') IS NOT NULL").fetchone()
    except StorageUnavailable as exc:
        log.warning("%s; starting anyway, messages stay unacked until it is back", exc)
        return
    except psycopg.Error as exc:
        raise StorageUnavailable(f"database check failed: {exc}") from exc
    if not (row and row[0]):
        raise ConfigError(
            "BASEWATCH_DATABASE_URL", "the database is not migrated; run basewatch db migrate"
        )


def run_ingester(settings: Settings, index: int = 0) -> int:
    """Run one ingester in this process until SIGTERM/SIGINT."""
    check_schema(settings)
    config = consumer_config(settings, index)
    writer = BatchWriter(
        settings.database_url,
        auto_register=settings.auto_register,
        application_name=f"basewatch-ingest-{index}",
        dead_letters=dead_letter_policy(settings),
        write_timeout_s=settings.ingest_write_timeout_s,
    )
    ingester = Ingester(config, writer)
    ingester.install_signal_handlers()
    log.info(
        "ingester %s subscribing to %s/+/+/{telemetry,event} on %s:%d",
        config.client_id,
        settings.topic_prefix,
        settings.mqtt_host,
        settings.mqtt_port,
    )
    ingester.run()
    return 0


def run_ingesters(settings: Settings, *, processes: int, index: int | None) -> int:
    """One ingester here when ``processes`` is 1 (or this is a child), else a supervisor."""
    if index is not None:
        return run_ingester(settings, index)
    if processes == 1:
        return run_ingester(settings, 0)
    check_schema(settings)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "basewatch", "ingest", "--index", str(i)], env=dict(os.environ)
        )
        for i in range(processes)
    ]
    log.info("started %d ingester processes", processes)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes: list[int] = []
    while len(codes) < len(children):
        codes = [c for c in (child.poll() for child in children) if c is not None]
        if codes and any(code != 0 for code in codes):
            forward(signal.SIGTERM, None)  # one failed: stop the others cleanly, report it
            for child in children:
                child.wait()
            return 1
        time.sleep(0.2)
    return 0
