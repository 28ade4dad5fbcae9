"""The services' least-privilege role (issue 11 item 8: every compose service ran as the
PostgreSQL superuser). ``basewatch db migrate`` with ``BASEWATCH_DB_APP_ROLE`` creates it; the
role can ingest and read, and cannot create, alter or drop anything. Real PostgreSQL (and, with
``BASEWATCH_TEST_DATABASE_URL`` at a TimescaleDB server, hypertables, chunks created by the
role's own inserts, compressed chunks and continuous aggregates)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.db import drop_database, with_database
from core.errors import ConfigError
from core.roles import ensure_app_role
from ingest.decode import Limits
from ingest.messages import decode_message
from ingest.store import BatchWriter
from tests.fix_db import TEST_SERVER_URL, TEST_TIMESCALE

UTC = dt.UTC


@dataclass(frozen=True)
class Migrated:
    owner_url: str  # the migrating (superuser) connection
    app_url: str  # the same database as the services' role
    role: str
    output: dict[str, object]


def _as_user(url: str, user: str) -> str:
    params = conninfo_to_dict(url)
    params["user"] = user
    params.pop("password", None)
    return make_conninfo("", **params)


def _migrate(url: str, role: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    env.update(
        BASEWATCH_DATABASE_URL=url,
        BASEWATCH_TIMESCALE=TEST_TIMESCALE,
        BASEWATCH_DB_APP_ROLE=role,
        BASEWATCH_DB_APP_PASSWORD=password,
    )
    return subprocess.run(
        [sys.executable, "-m", "basewatch", "db", "migrate", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _drop_role(role: str) -> None:
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def migrated() -> Iterator[Migrated]:
    """A database migrated by ``basewatch db migrate`` (twice: idempotent) with a role."""
    tag = uuid.uuid4().hex[:8]
    url = with_database(TEST_SERVER_URL, f"bw_role_{tag}")
    role = f"bw_app_{tag}"
    try:
        first = _migrate(url, role, "first-Pa55word")
        assert first.returncode == 0, first.stderr
        again = _migrate(url, role, "rotated-Pa55word")
        assert again.returncode == 0, again.stderr
        output = json.loads(again.stdout)
        yield Migrated(url, _as_user(url, role), role, output)
    finally:
        drop_database(url)
        _drop_role(role)


def _timescale(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return bool(row and row[0])


def test_migrate_creates_the_role_once_powerless_with_a_scram_password(
    migrated: Migrated,
) -> None:
    assert migrated.output["app_role"] == {
        "name": migrated.role,
        "created": False,  # the second run found it
        "password_set": True,
    }
    with psycopg.connect(migrated.owner_url) as conn:
        row = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
            " rolbypassrls, left(rolpassword, 14) FROM pg_authid WHERE rolname = %s",
            (migrated.role,),
        ).fetchone()
    assert row == (True, False, False, False, False, False, "SCRAM-SHA-256$")


def test_the_role_can_ingest_and_read(migrated: Migrated) -> None:
    with psycopg.connect(migrated.owner_url) as conn:
        conn.execute("INSERT INTO accounts (account_id, name) VALUES ('acct-r', 'R')")
        conn.execute("INSERT INTO assets (asset_id, account_id) VALUES ('c-r', 'acct-r')")
    now = dt.datetime.now(UTC).replace(microsecond=0)
    messages = [
        decode_message(
            "basewatch/v1/acct-r/c-r/telemetry",
            json.dumps(
                {"ts": int((now - dt.timedelta(days=d)).timestamp() * 1000), "metrics": {"x": d}}
            ).encode(),
            prefix="basewatch/v1",
            limits=Limits(),
            received_at=now,
        )
        for d in range(0, 30, 2)  # 15 days apart: new chunks on TimescaleDB, made by the role
    ]
    bad = decode_message(
        "basewatch/v1/acct-r/c-r/telemetry", b"{", prefix="basewatch/v1", limits=Limits(),
        received_at=now,
    )  # fmt: skip
    writer = BatchWriter(migrated.app_url)
    try:
        first = writer.write([*messages, bad])
        assert (first.readings, first.dead_letters) == (15, 1)
        with psycopg.connect(migrated.owner_url, autocommit=True) as conn:
            if _timescale(conn):  # a redelivery into compressed chunks, as the role
                conn.execute(
                    "SELECT compress_chunk(c, if_not_compressed => true)"
                    " FROM show_chunks('telemetry', older_than => interval '10 days') c"
                )
                compressed = conn.execute(
                    "SELECT count(*) FROM timescaledb_information.chunks"
                    " WHERE hypertable_name = 'telemetry' AND is_compressed"
                ).fetchone()
                assert compressed is not None
                assert compressed[0] > 0
        again = writer.write(messages)  # a redelivery: the merge path (temporary table)
        assert again.conflict_path
    finally:
        writer.close()
    with psycopg.connect(migrated.app_url) as conn:
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (15,)
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (1,)
        for relation in ("rollup_hourly", "rollup_daily", "metric_names", "alerts"):
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(relation)))
        conn.execute("SELECT * FROM usage_daily_between(current_date - 30, current_date, NULL)")
        conn.execute("UPDATE dead_letters SET resolution = 'checked'")
        conn.execute("DELETE FROM dead_letters")
        conn.execute("TRUNCATE mrr_ledger, mrr_movements")  # the NRR ledger rebuild


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE intruder (x int)",
        "CREATE VIEW intruder AS SELECT 1",
        "CREATE SCHEMA intruder",
        "DROP TABLE telemetry",
        "DROP TABLE dead_letters",
        "ALTER TABLE telemetry ADD COLUMN intruder int",
        "CREATE INDEX intruder ON telemetry (seq)",
        "DROP FUNCTION usage_daily_between(date, date, text[])",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE ROLE intruder",
    ],
)
def test_the_role_cannot_create_alter_or_drop(migrated: Migrated, statement: str) -> None:
    with (
        psycopg.connect(migrated.app_url) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_tables_created_later_by_the_owner_are_granted_by_default(migrated: Migrated) -> None:
    with psycopg.connect(migrated.owner_url) as conn:
        conn.execute("CREATE TABLE later_table (id bigserial PRIMARY KEY, x int)")
    with psycopg.connect(migrated.app_url) as conn:
        conn.execute("INSERT INTO later_table (x) VALUES (1)")  # the sequence too
        assert conn.execute("SELECT x FROM later_table").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE later_table")


def test_a_role_with_powers_or_objects_is_refused(migrated: Migrated) -> None:
    tag = uuid.uuid4().hex[:8]
    mighty, owning = f"bw_mighty_{tag}", f"bw_owning_{tag}"
    try:
        with psycopg.connect(migrated.owner_url, autocommit=True) as conn:
            owner = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
            with pytest.raises(ConfigError, match="role that runs the migrations"):
                ensure_app_role(conn, owner)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(mighty)))
            with pytest.raises(ConfigError, match="exists with CREATEDB"):
                ensure_app_role(conn, mighty)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owning)))
            conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(f"t_{tag}")))
            conn.execute(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                    sql.Identifier(f"t_{tag}"), sql.Identifier(owning)
                )
            )
            with pytest.raises(ConfigError, match="owns 1 tables"):
                ensure_app_role(conn, owning)
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"t_{tag}")))
    finally:
        _drop_role(mighty)
        _drop_role(owning)


def test_a_bad_role_name_is_a_usage_error_of_the_setting() -> None:
    from core.settings import Settings

    with pytest.raises(ConfigError, match="BASEWATCH_DB_APP_ROLE"):
        Settings.from_env({"BASEWATCH_DB_APP_ROLE": 'x"; DROP TABLE telemetry; --'})
    with pytest.raises(ConfigError, match="without a role"):
        Settings.from_env({"BASEWATCH_DB_APP_PASSWORD": "x"})
