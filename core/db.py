"""Database connections: one place that turns psycopg's connection failures into
:class:`~core.errors.StorageUnavailable`, and creates the target database when asked.

Network bounds (issue 11: an ingester blocked for as long as a hung database link lasted).
Every connection made here carries libpq's TCP settings unless the connection string sets them
itself: ``connect_timeout`` (the whole connection set-up, TCP and the startup/authentication
exchange; psycopg enforces it, 2 s at least), ``keepalives=1`` with ``keepalives_idle``,
``keepalives_interval`` and ``keepalives_count`` (an idle connection whose peer vanished is
declared dead after idle + interval × count seconds), and ``tcp_user_timeout`` (data sent and
not acknowledged by the peer for that long kills the connection, which keepalives alone do not
cover while a request is outstanding). Defaults: :class:`NetworkTimeouts`; the composition root
applies the ``BASEWATCH_DB_*`` settings once per process with :func:`configure` (a module-level
default rather than a parameter of every ``connect`` call, so that every part of the service
gets the same bounds). On a Unix-domain socket libpq ignores the TCP ones.

TCP can only tell that the *peer's kernel* stopped answering. A peer that still acknowledges
bytes but never answers (a stuck proxy, pooler or server; a user-space proxy that stopped
forwarding) is caught by :func:`deadline` instead: a watchdog that, once an operation has run
longer than its bound, shuts the connection's socket down, so the blocked call fails at once
with an ``OperationalError`` and the connection is discarded. The ingester puts each batch
write under one (``BASEWATCH_INGEST_WRITE_TIMEOUT_S``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from core.errors import ConfigError, StorageUnavailable
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkTimeouts:
    """libpq's connection-time and TCP bounds, in seconds (``BASEWATCH_DB_*``)."""

    connect_timeout_s: int = 10
    keepalives_idle_s: int = 30
    keepalives_interval_s: int = 10
    keepalives_count: int = 3
    tcp_user_timeout_s: int = 30  # 0: the system's default (minutes of retransmissions)

    @classmethod
    def from_settings(cls, settings: Settings) -> NetworkTimeouts:
        return cls(
            connect_timeout_s=settings.db_connect_timeout_s,
            keepalives_idle_s=settings.db_keepalives_idle_s,
            keepalives_interval_s=settings.db_keepalives_interval_s,
            keepalives_count=settings.db_keepalives_count,
            tcp_user_timeout_s=settings.db_tcp_user_timeout_s,
        )

    def conninfo(self) -> dict[str, str]:
        """The libpq parameters these stand for."""
        return {
            "connect_timeout": str(self.connect_timeout_s),
            "keepalives": "1",
            "keepalives_idle": str(self.keepalives_idle_s),
            "keepalives_interval": str(self.keepalives_interval_s),
            "keepalives_count": str(self.keepalives_count),
            "tcp_user_timeout": str(self.tcp_user_timeout_s * 1000),  # milliseconds
        }


_current = {"timeouts": NetworkTimeouts()}


def configure(timeouts: NetworkTimeouts) -> None:
    """Set the bounds every later connection of this process gets (the composition root
    calls this once, from the settings)."""
    _current["timeouts"] = timeouts


def network_timeouts() -> NetworkTimeouts:
    """The bounds in effect."""
    return _current["timeouts"]


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
        pool.open(wait=True, timeout=max(2, network_timeouts().connect_timeout_s) * 2)
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
    for key, value in network_timeouts().conninfo().items():
        params.setdefault(key, value)  # what the connection string sets wins
    params.setdefault("application_name", application_name)
    return make_conninfo("", **params)


class DeadlineExceeded(StorageUnavailable):
    """An operation under :func:`deadline` got no answer in time; its connection is broken."""


@contextlib.contextmanager
def deadline(conn: psycopg.Connection[TupleRow], seconds: float, what: str) -> Iterator[None]:
    """Bound what runs inside to ``seconds`` (0: no bound): past it, ``conn``'s socket is shut
    down, the blocked call fails and :class:`DeadlineExceeded` is raised instead of the
    ``OperationalError``. The connection is unusable afterwards; close it and reconnect.

    Between the expiry and the shutdown the operation may still complete on the server (a
    COMMIT that was on its way): callers must be able to repeat it (the ingester's writes are
    idempotent)."""
    if seconds <= 0:
        yield
        return
    lock = threading.Lock()
    state = {"finished": False, "fired": False}

    def expire() -> None:
        with lock:  # held while shutting down: a call that finishes meanwhile waits for it
            if state["finished"]:
                return
            state["fired"] = True
            _shut_down(conn)
        log.warning("%s: no answer from PostgreSQL within %g s; connection dropped", what, seconds)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except psycopg.Error as exc:
        with lock:
            fired = state["fired"]
        if fired:
            raise DeadlineExceeded(
                f"{what}: no answer from PostgreSQL within {seconds:g} s "
                f"(connection dropped): {_first_line(exc)}"
            ) from exc
        raise
    finally:
        with lock:
            state["finished"] = True
        timer.cancel()


def _shut_down(conn: psycopg.Connection[TupleRow]) -> None:
    """Shut the connection's socket down in both directions (from another thread): a wait on
    it returns at once and libpq sees the connection closed."""
    try:
        fd = conn.pgconn.socket
        sock = socket.socket(fileno=os.dup(fd))
    except (OSError, psycopg.Error):
        return  # already closed
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


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
