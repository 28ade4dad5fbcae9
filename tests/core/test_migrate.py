"""The migration runner on real PostgreSQL: idempotent, safe concurrently, both storage paths."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from basewatch.wiring import PACKAGES
from core.db import drop_database, ensure_database, with_database
from core.errors import ConfigError
from core.migrate import discover, migrate, timescale_available
from tests.fix_db import TEST_SERVER_URL


@pytest.fixture
def empty_url() -> Iterator[str]:
    url = with_database(TEST_SERVER_URL, f"bw_mig_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    yield url
    drop_database(url)


def _has_timescale() -> bool:
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as conn:
        return timescale_available(conn)


def test_discover_orders_packages_then_numbers() -> None:
    found = [(m.package, m.version) for m in discover(PACKAGES)]
    assert found == sorted(found, key=lambda k: (PACKAGES.index(k[0]), k[1]))
    assert ("core", 1) in found
    assert ("ingest", 1) in found


def test_runs_twice_and_records_each_migration_once(empty_url: str) -> None:
    with psycopg.connect(empty_url, autocommit=True) as conn:
        first = migrate(conn, PACKAGES, "off")
        second = migrate(conn, PACKAGES, "off")
        recorded = conn.execute(
            "SELECT package, version, variant FROM schema_migrations ORDER BY 1, 2"
        ).fetchall()
    assert first.applied
    assert second.applied == []
    assert len(recorded) == len(first.applied)
    assert {variant for _, _, variant in recorded} == {"plain"}


def test_two_processes_at_once_apply_each_migration_once(empty_url: str) -> None:
    env = dict(os.environ, BASEWATCH_DATABASE_URL=empty_url, BASEWATCH_TIMESCALE="off")
    command = [sys.executable, "-m", "basewatch", "db", "migrate", "--json"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE) for _ in range(3)]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0]
    import json

    applied = [json.loads(out)["applied"] for out in outputs]
    assert sum(len(a) for a in applied) == len(discover(PACKAGES))
    with psycopg.connect(empty_url) as conn:
        row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row == (len(discover(PACKAGES)),)


def test_plain_path_has_indexes_and_no_hypertable(empty_url: str) -> None:
    with psycopg.connect(empty_url, autocommit=True) as conn:
        report = migrate(conn, PACKAGES, "off")
        indexes = {
            r[0]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'telemetry'")
        }
    assert report.timescale is False
    assert {"telemetry_pkey", "telemetry_time_brin"} <= indexes


def test_timescale_on_without_the_extension_is_a_config_error(empty_url: str) -> None:
    if _has_timescale():
        pytest.skip("TimescaleDB is available here; this checks the refusal when it is not")
    with psycopg.connect(empty_url, autocommit=True) as conn, pytest.raises(ConfigError):
        migrate(conn, PACKAGES, "on")


@pytest.mark.timescale
def test_timescale_path_creates_hypertable_with_compression_and_policies(empty_url: str) -> None:
    if not _has_timescale():
        pytest.skip("TimescaleDB extension not available on this server")
    from ingest.retention import apply_timescale_policies

    with psycopg.connect(empty_url, autocommit=True) as conn:
        report = migrate(conn, PACKAGES, "auto")
        apply_timescale_policies(conn, retention_days=400, compress_after_days=7)
        apply_timescale_policies(conn, retention_days=400, compress_after_days=7)  # twice: ok
        hypertables = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        ).fetchall()
        jobs = conn.execute(
            "SELECT proc_name FROM timescaledb_information.jobs"
            " WHERE hypertable_name = 'telemetry' ORDER BY 1"
        ).fetchall()
        try:  # TimescaleDB 2.14 and later
            segment = conn.execute(
                "SELECT segmentby FROM timescaledb_information.hypertable_compression_settings"
                " WHERE hypertable = 'telemetry'::regclass"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            segment = conn.execute(
                "SELECT attname FROM timescaledb_information.compression_settings"
                " WHERE hypertable_name = 'telemetry' AND segmentby_column_index IS NOT NULL"
            ).fetchall()
    assert report.timescale is True
    assert ("telemetry", True) in hypertables
    assert [j[0] for j in jobs] == ["policy_compression", "policy_retention"]
    assert segment == [("asset_id",)]
