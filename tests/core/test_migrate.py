"""The migration runner on real PostgreSQL: idempotent, safe concurrently, both storage paths."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

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


BEFORE_ISSUE_12 = Path(__file__).parent.parent / "data" / "migrations_before_issue12"


def _full_schema(url: str) -> list[tuple[object, ...]]:
    """Columns, constraints, indexes, views and functions of the public schema, by name and
    definition (catalogue order left out), and the recorded migrations."""
    with psycopg.connect(url) as conn:
        rows = [
            *conn.execute(
                "SELECT 'column', table_name, column_name, data_type, is_nullable,"
                " column_default FROM information_schema.columns WHERE table_schema = 'public'"
                " ORDER BY 2, 3"
            ).fetchall(),
            *conn.execute(
                "SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 2, 3"
            ).fetchall(),
            *conn.execute(
                "SELECT 'index', tablename, indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = 'public' ORDER BY 2, 3"
            ).fetchall(),
            *conn.execute(
                "SELECT 'view', viewname, definition FROM pg_views WHERE schemaname = 'public'"
                " ORDER BY 2"
            ).fetchall(),
            *conn.execute(
                "SELECT 'function', proname, pg_get_functiondef(oid) FROM pg_proc"
                " WHERE pronamespace = 'public'::regnamespace ORDER BY 2"
            ).fetchall(),
            *conn.execute(
                "SELECT package, version, checksum FROM schema_migrations ORDER BY 1, 2"
            ).fetchall(),
        ]
    return rows


def test_a_database_of_before_issue_12_upgrades_to_a_fresh_ones_schema_without_a_warning(
    empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12 moved contracts and exchange rates from nrr's 001 to core's 002, marked ingest's
    published objects (comment lines in 001, 002, 003, 006), added signals' alert_outcomes
    view and moved ``ground_truth`` from ingest's 004 (now ``SELECT 1``) to the simulator's 001
    (``CREATE TABLE IF NOT EXISTS``, the same definition). A database migrated with every file
    of before (tests/data/migrations_before_issue12), holding a contract, a rate and a
    ground-truth row, upgrades to the schema of a fresh one, keeps its rows, and the rewritten
    migrations take their new checksums over the superseded ones without a warning."""
    before = {p: BEFORE_ISSUE_12 / p / "migrations" for p in PACKAGES}
    old_files = {(m.package, m.version): m for m in discover(PACKAGES, before)}
    (revenue,) = [m for m in discover(PACKAGES) if (m.package, m.version) == ("nrr", 1)]
    assert old_files[("nrr", 1)].checksum() in revenue.superseded()
    assert "CREATE TABLE contracts" in old_files[("nrr", 1)].common_sql
    assert "CREATE TABLE contracts" not in revenue.common_sql
    rewritten = [
        m
        for m in discover(PACKAGES)
        if (m.package, m.version) in old_files
        and old_files[(m.package, m.version)].checksum() != m.checksum()
    ]
    assert {(m.package, m.version) for m in rewritten} == {
        ("ingest", 1),
        ("ingest", 2),
        ("ingest", 3),
        ("ingest", 4),
        ("ingest", 6),
        ("nrr", 1),
    }
    (ground_truth,) = [m for m in rewritten if (m.package, m.version) == ("ingest", 4)]
    statements = [x for x in ground_truth.common_sql.splitlines() if not x.startswith("--")]
    assert statements == ["SELECT 1;"]  # the table is the simulator's now
    for migration in rewritten:
        assert old_files[(migration.package, migration.version)].checksum() in (
            migration.superseded()
        )
    with psycopg.connect(empty_url, autocommit=True) as conn:
        migrate(conn, PACKAGES, "off")
    expected = _full_schema(empty_url)
    url = with_database(TEST_SERVER_URL, f"bw_mig_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            old = migrate(conn, PACKAGES, "off", folders=before)
            assert len(old.applied) == len(old_files)
            conn.execute("INSERT INTO accounts (account_id, name) VALUES ('a-1', 'A')")
            conn.execute(
                "INSERT INTO contracts (contract_id, account_id, product_line, kind, currency,"
                " start_date, billing_period, fee) VALUES ('c-1', 'a-1', 'maintenance',"
                " 'fixed', 'USD', '2024-01-01', 'year', 1200)"
            )
            conn.execute(
                "INSERT INTO fx_rates (month, currency, rate) VALUES ('2024-01-01', 'USD', 0.9)"
            )
            conn.execute(
                "INSERT INTO ground_truth (kind, account_id, time, detail)"
                " VALUES ('story', 'a-1', '2024-01-01', 'leaky')"
            )
            with caplog.at_level("WARNING", logger="core.migrate"):
                report = migrate(conn, PACKAGES, "off")
            assert report.applied == [
                "core/002_contracts",
                "signals/008_alert_outcomes",
                "signals/009_alert_delivery",
                "signals/010_kind_precision_decided",  # issue 13: the gate's decided precision
                "simulator/001_ground_truth",
                "simulator/002_failure_truth",  # issue 13: a failure's mode, foreseeable, lead
                "basewatch/001_users",  # issue 15: users, sessions, tokens, audit
            ]
            assert "changed after it was applied" not in caplog.text
            assert conn.execute("SELECT contract_id FROM contracts").fetchall() == [("c-1",)]
            assert conn.execute("SELECT rate FROM fx_rates").fetchone() == (Decimal("0.9"),)
            assert conn.execute("SELECT account_id, detail FROM ground_truth").fetchall() == [
                ("a-1", "leaky")
            ]
        assert _full_schema(url) == expected
    finally:
        drop_database(url)
