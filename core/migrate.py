"""Migration runner: applies each package's ``migrations/NNN_name.sql`` in order.

Layout of a package's ``migrations/`` folder:

- ``NNN_name.sql`` runs everywhere;
- ``NNN_name.timescale.sql`` runs after it only when TimescaleDB is in use,
  ``NNN_name.plain.sql`` only when it is not, so one migration number can create a
  hypertable with compression on one path and plain indexes on the other;
- a file whose first line is ``-- basewatch: no-transaction`` runs outside a transaction
  (TimescaleDB's continuous aggregates need that); every other file runs in one transaction
  together with its ``schema_migrations`` row, so a migration that fails leaves nothing behind
  and the next run starts it again (tests/core/test_migrate.py fails one on purpose);
- a line ``-- basewatch: supersedes-checksum HEX`` says that a database which applied the
  migration with that earlier checksum has the same schema (the migration was rewritten to run
  on more engines, say): the runner records the new checksum instead of warning.

Applied migrations are recorded in ``schema_migrations`` (package, version). ``folders`` reads
a package's migrations from another folder under the package's name (tests migrate a database
with an earlier version of the files, then upgrade it). A session-level
advisory lock serialises concurrent runners: a second process waits, then finds nothing to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg.rows import TupleRow

from core.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 7_420_240_001  # arbitrary constant, shared by every runner
_FILE = re.compile(
    r"(?P<version>\d{3})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>timescale|plain))?\.sql"
)
NO_TRANSACTION = "-- basewatch: no-transaction"
_SUPERSEDES = re.compile(r"^-- basewatch: supersedes-checksum ([0-9a-f]{16})\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    """One numbered migration of a package, with its path-specific SQL."""

    package: str
    version: int
    name: str
    common_sql: str
    timescale_sql: str
    plain_sql: str

    def sql_for(self, timescale: bool) -> list[str]:
        """The scripts to run, in order, on the chosen storage path."""
        variant = self.timescale_sql if timescale else self.plain_sql
        return [s for s in (self.common_sql, variant) if s.strip()]

    def checksum(self) -> str:
        data = "\0".join((self.common_sql, self.timescale_sql, self.plain_sql)).encode()
        return hashlib.sha256(data).hexdigest()[:16]

    def superseded(self) -> frozenset[str]:
        """Earlier checksums of this migration that stand for the same schema."""
        texts = (self.common_sql, self.timescale_sql, self.plain_sql)
        return frozenset(m for text in texts for m in _SUPERSEDES.findall(text))


@dataclass(frozen=True)
class MigrationReport:
    """What a run did: the migrations applied now and whether TimescaleDB is in use."""

    applied: list[str]
    timescale: bool


def discover(
    packages: Sequence[str], folders: Mapping[str, Traversable] | None = None
) -> list[Migration]:
    """The migrations of ``packages``, in the order given, each package's by number, from each
    package's ``migrations/`` or the folder ``folders`` names for it."""
    found: list[Migration] = []
    for package in packages:
        folder = (folders or {}).get(package) or resources.files(package) / "migrations"
        parts: dict[int, dict[str, str]] = {}
        names: dict[int, str] = {}
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _FILE.fullmatch(entry.name)
            if match is None:
                if entry.name.endswith(".sql"):
                    raise ConfigError(
                        f"{package}/migrations/{entry.name}",
                        "name must be NNN_lowercase_name[.timescale|.plain].sql",
                    )
                continue
            version = int(match["version"])
            name = match["name"]
            if names.setdefault(version, name) != name:
                raise ConfigError(
                    f"{package}/migrations/{entry.name}", f"two migrations numbered {version:03d}"
                )
            parts.setdefault(version, {})[match["variant"] or "common"] = entry.read_text()
        for version in sorted(parts):
            texts = parts[version]
            found.append(
                Migration(
                    package,
                    version,
                    names[version],
                    texts.get("common", ""),
                    texts.get("timescale", ""),
                    texts.get("plain", ""),
                )
            )
    return found


def timescale_available(conn: psycopg.Connection[TupleRow]) -> bool:
    """True when TimescaleDB is installed in this database or can be created in it."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
        " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries')"
    ).fetchone()
    assert row is not None
    installed, available, preload = row
    return bool(installed) or (bool(available) and "timescaledb" in str(preload))


def timescale_in_use(conn: psycopg.Connection[TupleRow]) -> bool:
    """True when the TimescaleDB extension is created in this database."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    ).fetchone()
    return bool(row and row[0])


def migrate(
    conn: psycopg.Connection[TupleRow],
    packages: Sequence[str],
    timescale_mode: str = "auto",
    limit: int | None = None,
    folders: Mapping[str, Traversable] | None = None,
) -> MigrationReport:
    """Apply every pending migration of ``packages``; safe to run twice or concurrently.

    ``conn`` must be in autocommit mode. ``timescale_mode`` is ``auto`` (use the extension when
    the server has it), ``on`` (require it) or ``off`` (plain PostgreSQL even if present).
    ``limit`` applies only the first ``limit`` migrations in order (an earlier schema version,
    for tests of upgrades); ``folders`` reads a package's migrations from another folder (see
    :func:`discover`).
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    migrations = discover(packages, folders)[:limit]
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        timescale = _choose_storage(conn, timescale_mode)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " package text NOT NULL, version integer NOT NULL, name text NOT NULL,"
            " variant text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (package, version))"
        )
        applied = {
            (str(p), int(str(v))): str(c)
            for p, v, c in conn.execute("SELECT package, version, checksum FROM schema_migrations")
        }
        done: list[str] = []
        for migration in migrations:
            key = (migration.package, migration.version)
            if key in applied:
                if applied[key] in migration.superseded():
                    conn.execute(
                        "UPDATE schema_migrations SET checksum = %s"
                        " WHERE package = %s AND version = %s",
                        (migration.checksum(), *key),
                    )
                elif applied[key] != migration.checksum():
                    log.warning(
                        "migration %s/%03d_%s changed after it was applied; "
                        "the database keeps the applied version",
                        migration.package,
                        migration.version,
                        migration.name,
                    )
                continue
            _apply(conn, migration, timescale)
            done.append(f"{migration.package}/{migration.version:03d}_{migration.name}")
        return MigrationReport(applied=done, timescale=timescale)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def _choose_storage(conn: psycopg.Connection[TupleRow], mode: str) -> bool:
    if timescale_in_use(conn):
        if mode == "off":
            log.warning(
                "BASEWATCH_TIMESCALE=off but the database already has TimescaleDB; it stays in use"
            )
        return True
    row = conn.execute(
        "SELECT count(*) FROM pg_tables WHERE tablename = 'schema_migrations'"
    ).fetchone()
    already_plain = bool(row and row[0])
    if mode == "off" or (already_plain and mode == "auto"):
        return False
    if not timescale_available(conn):
        if mode == "on":
            raise ConfigError(
                "BASEWATCH_TIMESCALE",
                "is 'on' but the TimescaleDB extension is "
                "not available on this server (install it and add it to "
                "shared_preload_libraries, or set auto)",
            )
        log.info("TimescaleDB not available: using plain PostgreSQL tables")
        return False
    if already_plain:
        raise ConfigError(
            "BASEWATCH_TIMESCALE",
            "is 'on' but this database was migrated "
            "without TimescaleDB; migrate a fresh database instead",
        )
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    log.info("TimescaleDB in use")
    return True


def _apply(conn: psycopg.Connection[TupleRow], migration: Migration, timescale: bool) -> None:
    scripts = migration.sql_for(timescale)
    record = (
        "INSERT INTO schema_migrations (package, version, name, variant, checksum)"
        " VALUES (%s, %s, %s, %s, %s)"
    )
    values = (
        migration.package,
        migration.version,
        migration.name,
        "timescale" if timescale else "plain",
        migration.checksum(),
    )
    label = f"{migration.package}/{migration.version:03d}_{migration.name}"
    if any(s.lstrip().startswith(NO_TRANSACTION) for s in scripts):
        for script in scripts:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute(record, values)
    else:
        with conn.transaction():
            for script in scripts:
                conn.execute(script)
            conn.execute(record, values)
    log.info("applied migration %s (%s)", label, values[3])


def _statements(script: str) -> list[str]:
    """Split a no-transaction script on lines that end with ``;`` (no function bodies there)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            text = "\n".join(current).strip()
            if text and not all(x.strip().startswith("--") or not x.strip() for x in current):
                statements.append(text)
            current = []
    tail = "\n".join(current).strip()
    if tail and not all(x.strip().startswith("--") or not x.strip() for x in current):
        statements.append(tail)
    return statements
