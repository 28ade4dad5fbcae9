"""Database connections: one place that turns psycopg's connection failures into
:class:`~core.errors.StorageUnavailable`, and creates the target database when asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from core.errors import ConfigError, StorageUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "basewatch"
) -> psycopg.Connection[TupleRow]:
    """Open one connection; an unreachable server raises :class:`StorageUnavailable`."""
    try:
        return psycopg.connect(
            _with_defaults(url, application_name),
            autocommit=autocommit,
        )
    except psycopg.OperationalError as exc:
        raise StorageUnavailable(
            f"cannot connect to PostgreSQL at {describe(url)}: {_first_line(exc)}"
        ) from exc


Pool = ConnectionPool[psycopg.Connection[TupleRow]]


def make_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    application_name: str = "basewatch",
    timeout_s: float = 30.0,
    configure: Callable[[psycopg.Connection[TupleRow]], None] | None = None,
    check: bool = False,
    reconnect_timeout_s: float = 300.0,
    wait: bool = True,
) -> Pool:
    """A connection pool of at most ``max_size`` connections, opened; the caller closes it.

    ``timeout_s``: how long a caller waits for a connection before ``PoolTimeout``.
    ``check``: test each connection as it is handed out (an empty query) and replace a broken
    one, so a database restart costs no request. ``wait``: wait for ``min_size`` connections
    (raising :class:`StorageUnavailable` when they cannot be made); without it the pool
    connects in the background and keeps retrying, giving up an attempt after
    ``reconnect_timeout_s`` (the next caller starts a new one)."""
    pool: Pool = ConnectionPool(
        _with_defaults(url, application_name),
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=application_name,
        timeout=timeout_s,
        configure=configure,
        check=ConnectionPool.check_connection if check else None,
        reconnect_timeout=reconnect_timeout_s,
    )
    if not wait:
        pool.open(wait=False)
        return pool
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
    except PoolTimeout as exc:
        pool.close()
        raise StorageUnavailable(f"cannot connect to PostgreSQL at {describe(url)}") from exc
    return pool


def describe(url: str) -> str:
    """``host:port/dbname`` of a connection string, without credentials."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            "BASEWATCH_DATABASE_URL", f"not a valid connection string: {exc}"
        ) from exc
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or '?'}"


def database_name(url: str) -> str:
    """The database a connection string names."""
    name = conninfo_to_dict(url).get("dbname")
    if not name:
        raise ConfigError("BASEWATCH_DATABASE_URL", "names no database")
    return str(name)


def with_database(url: str, dbname: str) -> str:
    """The same connection string pointing at another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def ensure_database(url: str) -> bool:
    """Create the database named by ``url`` if it does not exist; True when created."""
    name = database_name(url)
    try:
        with connect(url, autocommit=True):
            return False
    except StorageUnavailable as exc:
        cause = exc.__cause__
        if not (isinstance(cause, psycopg.OperationalError) and "does not exist" in str(cause)):
            raise
    with connect(with_database(url, "postgres"), autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False
    log.info("created database %s", name)
    return True


def drop_database(url: str) -> None:
    """Drop the database named by ``url`` (used by the demo and the tests)."""
    name = database_name(url)
    with connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _with_defaults(url: str, application_name: str) -> str:
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            "BASEWATCH_DATABASE_URL", f"not a valid connection string: {exc}"
        ) from exc
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    params.setdefault("application_name", application_name)
    return make_conninfo("", **params)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def table_bytes(conn: psycopg.Connection[TupleRow], table: str) -> int:
    """Disk used by ``table`` with its indexes and TOAST: a TimescaleDB hypertable's chunks
    (compressed ones included; the parent table itself holds nothing), a continuous
    aggregate's materialized hypertable, or a plain table."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    ).fetchone()
    if row and row[0]:
        found = conn.execute(
            "SELECT coalesce("
            " (SELECT format('%%I.%%I', hypertable_schema, hypertable_name)"
            "  FROM timescaledb_information.hypertables WHERE hypertable_name = %(t)s"
            "  AND hypertable_schema = 'public'),"
            " (SELECT format('%%I.%%I', materialization_hypertable_schema,"
            "  materialization_hypertable_name)"
            "  FROM timescaledb_information.continuous_aggregates WHERE view_name = %(t)s))",
            {"t": table},
        ).fetchone()
        if found and found[0]:
            size = conn.execute("SELECT hypertable_size(%s::regclass)", (found[0],)).fetchone()
            return int(size[0]) if size and size[0] is not None else 0
    size = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()
    return int(size[0]) if size and size[0] is not None else 0
