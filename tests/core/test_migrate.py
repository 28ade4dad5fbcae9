"""The migration runner on real PostgreSQL: idempotent, safe concurrently, both storage paths."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from basewatch.wiring import PACKAGES
from core.db import drop_database, ensure_database, with_database
from core.errors import ConfigError
from core.migrate import Migration, discover, migrate, timescale_available
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


def _schema(url: str) -> list[tuple[object, ...]]:
    """Tables, views and columns of the public schema, and the recorded migrations."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, column_name"
        ).fetchall()
        recorded = conn.execute(
            "SELECT package, version, checksum FROM schema_migrations ORDER BY 1, 2"
        ).fetchall()
    return [*columns, *recorded]


def test_every_earlier_schema_version_migrates_to_the_same_schema(empty_url: str) -> None:
    """From an empty database and from each earlier version (the first k migrations, with a
    row of telemetry in it once it exists), a migrate reaches the schema of a fresh one."""
    mode = "on" if _has_timescale() else "off"
    with psycopg.connect(empty_url, autocommit=True) as conn:
        migrate(conn, PACKAGES, mode)
    expected = _schema(empty_url)
    total = len(discover(PACKAGES))
    for k in range(1, total):
        name = f"bw_mig_{uuid.uuid4().hex[:8]}"
        url = with_database(TEST_SERVER_URL, name)
        ensure_database(url)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn, PACKAGES, mode, limit=k)
                if conn.execute("SELECT to_regclass('telemetry')").fetchone() != (None,):
                    conn.execute(
                        "INSERT INTO telemetry (asset_id, time, received_at, metrics)"
                        " VALUES ('m-1', now() - INTERVAL '3 days', now(), '{\"x\": 1}')"
                    )
                report = migrate(conn, PACKAGES, mode)
                assert len(report.applied) == total - k
            assert _schema(url) == expected, f"from the first {k} migrations"
        finally:
            drop_database(url)


def test_a_failing_migration_leaves_nothing_and_runs_again_once_fixed(
    empty_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "bw_failing_pkg"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrations" / "001_first.sql").write_text("CREATE TABLE bw_first (x int);\n")
    second = package / "migrations" / "002_second.sql"
    second.write_text(
        "CREATE TABLE bw_second (x int);\n"
        "INSERT INTO bw_second VALUES (1);\n"
        "SELECT 1 / 0;\n"  # fails after the statements before it did their work
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with psycopg.connect(empty_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(conn, ["bw_failing_pkg"], "off")
        assert conn.execute("SELECT to_regclass('bw_first')").fetchone() == ("bw_first",)
        assert conn.execute("SELECT to_regclass('bw_second')").fetchone() == (None,)
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.DivisionByZero):  # a rerun fails the same way
            migrate(conn, ["bw_failing_pkg"], "off")
        second.write_text("CREATE TABLE bw_second (x int);\nINSERT INTO bw_second VALUES (1);\n")
        report = migrate(conn, ["bw_failing_pkg"], "off")
        assert report.applied == ["bw_failing_pkg/002_second"]
        assert conn.execute("SELECT count(*) FROM bw_second").fetchone() == (1,)


def test_a_superseded_checksum_is_taken_over_without_a_warning(
    empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ingest/005 was rewritten to run on TimescaleDB: plain databases that applied the
    earlier version keep working and record the new checksum."""
    (ingested_at,) = [m for m in discover(PACKAGES) if (m.package, m.version) == ("ingest", 5)]
    assert "be06847624e51f91" in ingested_at.superseded()
    with psycopg.connect(empty_url, autocommit=True) as conn:
        migrate(conn, PACKAGES, "off")
        conn.execute(
            "UPDATE schema_migrations SET checksum = 'be06847624e51f91'"
            " WHERE package = 'ingest' AND version = 5"
        )
        with caplog.at_level("WARNING", logger="core.migrate"):
            assert migrate(conn, PACKAGES, "off").applied == []
        assert "changed after it was applied" not in caplog.text
        row = conn.execute(
            "SELECT checksum FROM schema_migrations WHERE package = 'ingest' AND version = 5"
        ).fetchone()
    assert row == (ingested_at.checksum(),)


def test_the_timescale_path_has_rollup_aggregates_with_policies(empty_url: str) -> None:
    if not _has_timescale():
        pytest.skip("TimescaleDB extension not available on this server")
    from basewatch.wiring import migrate_database
    from core.settings import Settings

    migrate_database(Settings(database_url=empty_url))
    migrate_database(Settings(database_url=empty_url))  # twice: ok
    with psycopg.connect(empty_url) as conn:
        aggregates = conn.execute(
            "SELECT view_name, compression_enabled"
            " FROM timescaledb_information.continuous_aggregates ORDER BY 1"
        ).fetchall()
        jobs = conn.execute(
            "SELECT hypertable_name, proc_name FROM timescaledb_information.jobs"
            " WHERE hypertable_name IS NOT NULL ORDER BY 1, 2"
        ).fetchall()
    assert aggregates == [
        ("rollup_daily", True),
        ("rollup_daily_metric", True),
        ("rollup_hourly", True),
        ("rollup_hourly_metric", True),
    ]
    assert ("rollup_hourly_metric", "policy_refresh_continuous_aggregate") in jobs
    assert ("rollup_daily_metric", "policy_compression") in jobs


# ingest/004_ground_truth.sql as it was applied until the simulator left ingest (verbatim: the
# test checks its checksum against the one the rewritten migration declares it supersedes).
_INGEST_004_BEFORE_THE_MOVE = """\
-- What really happened in a simulated (or labelled) fleet, for scoring signals and models:
-- component failures, parts replaced by third parties, each account's story, churn, expansions,
-- machines falling silent. Written by the simulator (or imported with labelled data).
CREATE TABLE ground_truth (
    kind       text        NOT NULL,
    account_id text        NOT NULL,
    asset_id   text        NOT NULL DEFAULT '',
    component  text        NOT NULL DEFAULT '',
    time       timestamptz NOT NULL,
    value      numeric,
    detail     text        NOT NULL DEFAULT '',
    PRIMARY KEY (kind, account_id, asset_id, component, time)
);
CREATE INDEX ground_truth_time_idx ON ground_truth (time);
"""


def _indexes(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " ORDER BY 1, 2"
        ).fetchall()


def test_a_database_migrated_before_the_simulator_moved_reaches_the_fresh_schema(
    empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database deployed while ``ground_truth`` was ingest/004 (its schema_migrations holds
    the old checksum, the table exists, there is no simulator migration): a migrate records
    the simulator's migration without touching the table, takes over ingest/004's new
    checksum without a warning, and ends with the schema (columns, indexes, recorded
    migrations) of a fresh database."""
    (ingest_004,) = [m for m in discover(PACKAGES) if (m.package, m.version) == ("ingest", 4)]
    old = Migration("ingest", 4, "ground_truth", _INGEST_004_BEFORE_THE_MOVE, "", "")
    assert ingest_004.superseded() == {old.checksum()}
    statements = [x for x in ingest_004.common_sql.splitlines() if not x.startswith("--")]
    assert statements == ["SELECT 1;"]  # the table is the simulator's now
    with psycopg.connect(empty_url, autocommit=True) as conn:
        migrate(conn, PACKAGES, "off")
    fresh_schema, fresh_indexes = _schema(empty_url), _indexes(empty_url)
    assert ("ground_truth", "ground_truth_time_idx") in [i[:2] for i in fresh_indexes]

    url = with_database(TEST_SERVER_URL, f"bw_mig_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            before = tuple(p for p in PACKAGES if p != "simulator")
            migrate(conn, before, "off")
            conn.execute(old.common_sql.encode())  # what the old ingest/004 did ...
            conn.execute(  # ... and how it was recorded
                "UPDATE schema_migrations SET checksum = %s"
                " WHERE package = 'ingest' AND version = 4",
                (old.checksum(),),
            )
            conn.execute(
                "INSERT INTO ground_truth (kind, account_id, time, detail)"
                " VALUES ('story', 'a-1', now(), 'leaky')"
            )
            with caplog.at_level("WARNING", logger="core.migrate"):
                report = migrate(conn, PACKAGES, "off")
            assert report.applied == ["simulator/001_ground_truth"]
            assert "changed after it was applied" not in caplog.text
            kept = conn.execute("SELECT kind, account_id, detail FROM ground_truth").fetchall()
        assert kept == [("story", "a-1", "leaky")]
        assert _schema(url) == fresh_schema
        assert _indexes(url) == fresh_indexes
    finally:
        drop_database(url)
