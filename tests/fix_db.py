"""Database fixtures: a migrated template database per test session, cloned per test module.

``BASEWATCH_TEST_DATABASE_URL`` points at the server (default: the local one, trust auth).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from basewatch.wiring import PACKAGES
from core.db import drop_database, with_database
from core.migrate import migrate

TEST_SERVER_URL = os.environ.get(
    "BASEWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def server_problem(url: str) -> str:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return ""
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]


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


def clone(template: str, name: str) -> str:
    with psycopg.connect(TEST_SERVER_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return with_database(TEST_SERVER_URL, name)


@pytest.fixture(scope="session")
def template_url() -> Iterator[str]:
    """A database migrated on the plain PostgreSQL path, used only as a template."""
    name = f"bw_tpl_{uuid.uuid4().hex[:8]}"
    url = create_migrated(name)
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
