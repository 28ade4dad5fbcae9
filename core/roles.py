"""The least-privilege database role the basewatch services run as.

``basewatch db migrate`` runs as the owner of the schema (it creates and alters tables). The
long-running services (``ingest``, ``scheduler``, ``api``) need only to read and write rows, so
with ``BASEWATCH_DB_APP_ROLE`` set, migrate also creates that role (idempotently) and grants it,
after every run, on the database it migrated:

- ``CONNECT`` and ``TEMPORARY`` on the database (the ingester's merge path, the rollup refresh,
  the alert pass and the NRR imports work in temporary tables);
- ``USAGE`` on schema ``public`` and no ``CREATE`` on it or on the database; ``CREATE`` on
  ``public`` is also revoked from ``PUBLIC`` (PostgreSQL 15 no longer grants it; older servers
  and databases created by them still do, and it would let every role create tables there);
- ``SELECT, INSERT, UPDATE, DELETE, TRUNCATE`` on every table and view of ``public``
  (``TRUNCATE`` is a faster ``DELETE`` without row triggers, which there are none of; the NRR
  ledger rebuild uses it), ``USAGE, SELECT`` on its sequences;
- the same as default privileges for tables and sequences that the migrating role creates
  later, so objects created outside a migrate run (or by a migrate of a newer release before
  this step) are covered at once; migrate re-grants everything anyway.

It owns nothing, so it cannot ``DROP`` or ``ALTER`` a table, and it is created ``LOGIN
NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS``. An existing role is used only
when it is like that: a role with any of those attributes, that is a member of the migrating role,
that owns objects in the database, or that *is* the migrating role, is refused
(:class:`~core.errors.ConfigError`) rather than quietly stripped, since something else may rely
on it. ``BASEWATCH_DB_APP_PASSWORD``, when set, becomes its password on every run (a rotation is
a migrate away); it is sent as a SCRAM verifier computed here, so the clear text never reaches
the server's statement log. Without it the role has no password (peer, certificate or trust
authentication).

TimescaleDB: a ``GRANT`` on a hypertable applies to its existing chunks and is copied to new ones
by TimescaleDB (and to the internal compressed hypertable); continuous aggregates are views in
``public`` and are read with their owner's rights on the materialisation, so ``SELECT`` on the
view is all the role needs. Refreshing an aggregate by hand (``refresh_continuous_aggregate``)
needs its owner; the services never do it (TimescaleDB's policies do, as the owner).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from core.errors import ConfigError

log = logging.getLogger(__name__)

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT"
_POWERS = ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls")
_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


@dataclass(frozen=True)
class RoleReport:
    """What :func:`ensure_app_role` did."""

    role: str
    created: bool
    password_set: bool


def check_role_name(name: str) -> None:
    """A role name basewatch manages: lower-case letters, digits and ``_`` (no quoting)."""
    if not ROLE_NAME.fullmatch(name):
        raise ConfigError(
            "BASEWATCH_DB_APP_ROLE",
            f"{name!r} is not a role name basewatch manages ([a-z_][a-z0-9_]*, up to 63)",
        )


def ensure_app_role(
    conn: psycopg.Connection[TupleRow], role: str, password: str = ""
) -> RoleReport:
    """Create ``role`` if needed and grant it what the services need on ``conn``'s database
    (see the module docstring). ``conn`` is the migrating (owner) connection, in autocommit."""
    check_role_name(role)
    row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row is not None
    owner, database = str(row[0]), str(row[1])
    if role == owner:
        raise ConfigError(
            "BASEWATCH_DB_APP_ROLE",
            f"{role!r} is the role that runs the migrations (BASEWATCH_DATABASE_URL); the "
            "services' role must be another one",
        )
    ident = sql.Identifier(role)
    created = _create_or_check(conn, role, owner, database)
    password_set = False
    if password:
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier.decode()))
        )
        password_set = True
    statements = [
        "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}",
        "REVOKE CREATE ON DATABASE {db} FROM {role}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "REVOKE CREATE ON SCHEMA public FROM {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT {tables} ON ALL TABLES IN SCHEMA public TO {role}",
        "GRANT {sequences} ON ALL SEQUENCES IN SCHEMA public TO {role}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
        " GRANT {tables} ON TABLES TO {role}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
        " GRANT {sequences} ON SEQUENCES TO {role}",
    ]
    with conn.transaction():
        for statement in statements:
            conn.execute(
                sql.SQL(statement).format(
                    db=sql.Identifier(database),
                    role=ident,
                    owner=sql.Identifier(owner),
                    tables=sql.SQL(TABLE_PRIVILEGES),
                    sequences=sql.SQL(SEQUENCE_PRIVILEGES),
                )
            )
    log.info(
        "database role %s: %s, granted row access to the tables of %s%s",
        role,
        "created" if created else "exists",
        database,
        ", password set" if password_set else "",
    )
    return RoleReport(role, created, password_set)


def _create_or_check(
    conn: psycopg.Connection[TupleRow], role: str, owner: str, database: str
) -> bool:
    """Create the role (True), or check that the existing one is powerless (False)."""
    found = conn.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,"
        " pg_has_role(oid, %s, 'MEMBER') FROM pg_roles WHERE rolname = %s",
        (owner, role),
    ).fetchone()
    if found is None:
        try:
            conn.execute(
                sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(role), sql.SQL(_ATTRIBUTES))
            )
            return True
        except psycopg.errors.DuplicateObject:  # a concurrent migrate was first
            return _create_or_check(conn, role, owner, database)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigError(
                "BASEWATCH_DB_APP_ROLE",
                f"cannot create role {role!r}: {owner!r} lacks CREATEROLE (create it as a "
                f"superuser: CREATE ROLE {role} {_ATTRIBUTES})",
            ) from exc
    powers = [name[3:].upper() for name, value in zip(_POWERS, found[:-1], strict=True) if value]
    if powers:
        raise ConfigError(
            "BASEWATCH_DB_APP_ROLE",
            f"role {role!r} exists with {', '.join(powers)}; the services' role must have none "
            "(choose another name, or remove them with ALTER ROLE)",
        )
    if found[-1]:
        raise ConfigError(
            "BASEWATCH_DB_APP_ROLE",
            f"role {role!r} is a member of {owner!r}, the owner of the schema, and would "
            "share its rights (choose another name, or REVOKE the membership)",
        )
    owned = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
        " WHERE r.rolname = %s",
        (role,),
    ).fetchone()
    if owned and owned[0]:
        raise ConfigError(
            "BASEWATCH_DB_APP_ROLE",
            f"role {role!r} owns {owned[0]} tables, views or sequences in {database!r} and could "
            f"drop them (REASSIGN OWNED BY {role} TO {owner} first)",
        )
    return False
