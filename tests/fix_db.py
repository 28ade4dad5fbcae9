"""Database fixtures: a migrated template database per test session, cloned per test module.

``BASEWATCH_TEST_DATABASE_URL`` points at the server (default: the local one, trust auth).
``BASEWATCH_TEST_TIMESCALE`` chooses the template's storage path like ``BASEWATCH_TIMESCALE``:
``auto`` (the default) migrates the TimescaleDB way when the server has the extension
preloaded, ``on`` requires it, ``off`` forces plain tables. ``scripts/test`` runs the suite a
second time against ``BASEWATCH_TEST_TIMESCALE_URL`` with ``on``.

TimescaleDB keeps a background session in every database it is created in, and PostgreSQL
refuses to copy a database somebody is connected to: so the template is closed to
connections (``ALLOW_CONNECTIONS false``) and its sessions are ended before it is cloned.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from basewatch.wiring import PACKAGES
from core.db import drop_database, with_database
from core.migrate import migrate
from signals.rollups import uses_continuous_aggregates

TEST_SERVER_URL = os.environ.get(
    "BASEWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def server_problem(url: str) -> str:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return ""
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]


TEST_TIMESCALE = os.environ.get("BASEWATCH_TEST_TIMESCALE", "auto")


def create_migrated(name: str, timescale: str = "off") -> str:
    url = with_database(TEST_SERVER_URL, name)
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, PACKAGES, timescale)
    return url


def close_to_connections(name: str) -> None:
    """Make ``name`` cloneable: no new connections, and its sessions (TimescaleDB's background
    scheduler included) ended."""
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        _end_sessions(conn, name)


def _end_sessions(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def clone(template: str, name: str) -> str:
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as conn:
        for attempt in range(50):  # a session that was ending as we asked
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise
                _end_sessions(conn, template)
                time.sleep(0.1)
    return with_database(TEST_SERVER_URL, name)


@pytest.fixture(scope="session")
def template_url() -> Iterator[str]:
    """A migrated database (on the path ``BASEWATCH_TEST_TIMESCALE`` chooses), used only as a
    template."""
    name = f"bw_tpl_{uuid.uuid4().hex[:8]}"
    url = create_migrated(name, TEST_TIMESCALE)
    close_to_connections(name)
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def db_url(template_url: str) -> Iterator[str]:
    """A fresh migrated database for one test module."""
    from core.db import database_name

    name = f"bw_test_{uuid.uuid4().hex[:8]}"
    url = clone(database_name(template_url), name)
    yield url
    drop_database(url)


def needs_rollup_tables(conn: psycopg.Connection[Any]) -> None:
    """Skip a test that writes the rollups directly: on TimescaleDB they are continuous
    aggregates, computed only from telemetry (tests/signals/test_rollups.py checks that both
    engines give the same figures)."""
    if uses_continuous_aggregates(conn):
        pytest.skip("writes rollup rows directly; on TimescaleDB rollups are continuous aggregates")
