"""import-linter's twin for SQL: a package's SQL names only its own tables, core's reference data,
and what other packages publish.

import-linter keeps ingest, signals and nrr from importing each other; nothing kept them from
reading each other's tables, and two copies of the contract rules grew that way (issue 12). The
rules checked here:

- **Ownership** comes from the migrations: the package whose ``migrations/*.sql`` creates a table,
  view, materialized view or function owns it.
- **Publishing**: a package lets others read an object by a line ``-- basewatch: published NAME``
  in a migration of its own (``usage_daily`` and ``usage_daily_between`` in ingest, the
  ``alert_outcomes`` view in signals, ...). Everything else is private to its owner.
- **core** is the layer every package stands on (as with imports): its reference data -
  accounts, assets, components, CSMs, contracts, exchange rates - may be named by every package.
- **The composition root** (``basewatch/``) owns no table; it names only published objects and
  core's, and otherwise calls the owning package's functions.

What is scanned: every string literal of every module of those packages (docstrings left out) and
every ``.sql`` file, with SQL comments removed. A name counts as a reference where SQL names a
relation: after ``FROM``, ``JOIN``, ``INTO``, ``UPDATE``, ``TABLE``, ``VIEW``, ``TRUNCATE``,
``COPY``, ``REFERENCES`` or ``ON`` (keywords in capitals, as this code base writes SQL, so prose
is not read as SQL), a function name before ``(``, ``to_regclass('name')``, and
``sql.Identifier("name")``. Names built at run time escape it; a review catches those.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
CORE = "core"
COMPOSITION_ROOT = "basewatch"

# Objects read across packages before their owner publishes them, each with why it waits. Keep
# this short and dated: an entry here is a debt, not a rule.
# (ground_truth was here until the simulator package took it over from ingest: signals' backtest
# now takes the labelled truth as an argument, loaded through simulator.truth.)
PENDING: set[str] = set()

_CREATE = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:UNLOGGED\s+)?"
    r"(?P<kind>TABLE|VIEW|MATERIALIZED\s+VIEW|FUNCTION)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)",
    re.IGNORECASE,
)
_PUBLISHED = re.compile(r"^--\s*basewatch:\s*published\s+(\w+)\s*$", re.MULTILINE)
_RELATION = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|VIEW|TRUNCATE|COPY|REFERENCES|ON)\s+"
    r"(?:ONLY\s+|IF\s+(?:NOT\s+)?EXISTS\s+)?(\w+)"
)
_CALL = re.compile(r"\b(\w+)\s*\(")
_REGCLASS = re.compile(r"to_regclass\(\s*'(\w+)'\s*\)")
_COMMENT = re.compile(r"--[^\n]*")


@dataclass(frozen=True)
class Owned:
    package: str
    kind: str  # table, view, materialized view, function
    published: bool


def packages_with_migrations() -> list[str]:
    return sorted(
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and (p / "migrations").is_dir()
    )


def owners() -> dict[str, Owned]:
    """Every object the migrations create, by name, with its owner and whether it is published."""
    created: dict[str, tuple[str, str]] = {}
    published: dict[str, set[str]] = {}
    for package in packages_with_migrations():
        for path in sorted((ROOT / package / "migrations").glob("*.sql")):
            text = path.read_text()
            published.setdefault(package, set()).update(_PUBLISHED.findall(text))
            for match in _CREATE.finditer(_COMMENT.sub("", text)):
                name = match["name"].lower()
                kind = " ".join(match["kind"].lower().split())
                first = created.setdefault(name, (package, kind))
                assert first[0] == package, f"{name} is created by both {first[0]} and {package}"
    for package, names in published.items():
        for name in names:
            assert created.get(name, ("", ""))[0] == package, (
                f"{package} publishes {name}, which its migrations do not create"
            )
    return {
        name: Owned(package, kind, name in published.get(package, set()))
        for name, (package, kind) in created.items()
    }


def references(sql: str, known: dict[str, Owned]) -> set[str]:
    """The known objects ``sql`` names (see the module docstring for how)."""
    sql = _COMMENT.sub("", sql)
    names = set(_RELATION.findall(sql)) | set(_REGCLASS.findall(sql))
    names |= {n for n in _CALL.findall(sql) if known.get(n.lower(), _NONE).kind == "function"}
    return {n.lower() for n in names if n.lower() in known}


_NONE = Owned("", "", False)


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal of a module but its docstrings; the text of
    ``sql.Identifier("x")`` is given as ``TABLE x`` so that it counts as a relation."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "Identifier"
        ):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    docstrings.add(id(arg))
                    yield node.lineno, f"TABLE {arg.value}"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def sources(package: str) -> Iterator[tuple[str, str]]:
    """(where, SQL text) of every string literal and .sql file of ``package``."""
    folder = ROOT / package
    for path in sorted(folder.rglob("*.py")):
        for line, text in _strings(path):
            yield f"{path.relative_to(ROOT)}:{line}", text
    for path in sorted(folder.rglob("*.sql")):
        yield str(path.relative_to(ROOT)), path.read_text()


def violations(
    package: str, texts: Iterator[tuple[str, str]], known: dict[str, Owned]
) -> list[str]:
    """``where: name (owner)`` for every object of another package that ``package`` names
    without its owner publishing it (core's and PENDING's excepted)."""
    found = []
    for where, text in texts:
        for name in sorted(references(text, known)):
            owned = known[name]
            if owned.package in (package, CORE) or owned.published or name in PENDING:
                continue
            found.append(f"{where}: {name} ({owned.kind} of {owned.package}, not published)")
    return found


def test_the_migrations_name_each_objects_one_owner_and_publish_only_their_own() -> None:
    known = owners()
    assert known["contracts"] == Owned(CORE, "table", False)  # reference data, issue 12
    assert known["fx_rates"].package == CORE
    assert known["alert_outcomes"] == Owned("signals", "view", True)
    assert known["usage_daily_between"] == Owned("ingest", "function", True)
    assert not known["alerts"].published


@pytest.mark.parametrize("package", [*packages_with_migrations(), COMPOSITION_ROOT])
def test_a_package_names_only_its_own_core_and_published_objects(package: str) -> None:
    known = owners()
    found = violations(package, sources(package), known)
    assert not found, "\n".join(found)


def test_pending_exemptions_are_still_needed() -> None:
    """An exemption goes once its object is published or moved to the package that reads it."""
    known = owners()
    for name in PENDING:
        assert name in known, f"{name} is created by no migration: drop it from PENDING"
        assert not known[name].published, f"{name} is published now: drop it from PENDING"


def test_the_scan_finds_what_it_should() -> None:
    """The checker itself, on SQL it must refuse and SQL it must let pass."""
    known = owners()

    def check(package: str, sql: str) -> list[str]:
        return violations(package, iter([("x.py:1", sql)]), known)

    assert check("nrr", "SELECT account_id FROM alerts WHERE family = 'risk'")
    assert check("nrr", "SELECT 1 FROM mrr_ledger l\nLEFT JOIN outbox o ON o.x = l.y")
    assert check("nrr", "SELECT to_regclass('alerts') IS NOT NULL")
    assert not check(COMPOSITION_ROOT, "SELECT count(*) FROM usage_daily")
    assert check(COMPOSITION_ROOT, "SELECT topic FROM dead_letters")
    assert check("signals", "INSERT INTO mrr_ledger (month) VALUES (%s)")
    assert not check("nrr", "SELECT * FROM alert_outcomes")  # published by signals
    assert not check("nrr", "SELECT * FROM usage_daily_between(%s, %s)")  # published by ingest
    assert not check("signals", "SELECT fee FROM contracts JOIN fx_rates USING (currency)")
    assert not check("nrr", "SELECT 1 FROM mrr_ledger -- not the alerts table")
    assert not check("nrr", "alerts from the outbox (sent later)")  # prose, not SQL
    texts = list(_strings_of("x = sql.SQL('SELECT * FROM {}').format(sql.Identifier('alerts'))"))
    assert violations("nrr", iter(texts), known)


def _strings_of(code: str) -> Iterator[tuple[str, str]]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(code)
    path = Path(handle.name)
    try:
        yield from ((f"x.py:{line}", text) for line, text in _strings(path))
    finally:
        path.unlink()
