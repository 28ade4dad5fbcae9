"""The signal kinds are one enum: every kind the code reports is a member, every member has a
family and a description, the values are the strings the database and JSON have always held,
and the alerts table's CHECK constraints agree with the enum."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

import signals.kinds
from signals.findings import Finding
from signals.kinds import CATALOGUE, FAMILIES, Family, SignalKind, family_of
from signals.scoring import KINDS_SCORED

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "ingest", "signals", "nrr", "basewatch", "bench")
# The strings stored in alerts.kind and written in JSON before the enum: they must not change.
STORED = {
    "component_due": "service",
    "asset_anomaly": "service",
    "capacity_saturation": "expansion",
    "heat_recovery": "expansion",
    "efficiency_upgrade": "expansion",
    "usage_growth": "expansion",
    "usage_decline": "risk",
    "silent_assets": "risk",
    "third_party_parts": "risk",
    "renewal_risk": "risk",
}


def test_the_values_are_the_strings_stored_before() -> None:
    assert {str(k): str(f) for k, f in FAMILIES.items()} == STORED
    assert json.dumps({SignalKind.RENEWAL_RISK: FAMILIES[SignalKind.RENEWAL_RISK]}) == (
        '{"renewal_risk": "risk"}'
    )
    assert f"{SignalKind.COMPONENT_DUE:<15}|" == "component_due  |"
    assert frozenset(STORED) == KINDS_SCORED


def test_every_member_has_a_family_and_a_one_line_description() -> None:
    assert set(CATALOGUE) == set(SignalKind)
    for kind, info in CATALOGUE.items():
        assert isinstance(info.family, Family)
        assert info.description.strip()
        assert "\n" not in info.description
        assert family_of(kind) is info.family
        assert family_of(kind.value) is info.family
    with pytest.raises(ValueError):
        family_of("churn")


def test_the_module_table_says_what_the_catalogue_says() -> None:
    doc = signals.kinds.__doc__ or ""
    rows = re.findall(r"^(\w+) +(risk|expansion|service) +(.+)$", doc, re.M)
    assert {k: (f, d.strip()) for k, f, d in rows} == {
        k.value: (i.family.value, i.description) for k, i in CATALOGUE.items()
    }


def test_a_finding_holds_a_member_and_refuses_an_unknown_kind() -> None:
    finding = Finding("a1", "usage_decline", "", 0.5, Decimal(100), 30, ("why",))
    assert finding.kind is SignalKind.USAGE_DECLINE
    assert finding.family is Family.RISK
    with pytest.raises(ValueError, match="unknown signal kind 'churn_risk'"):
        Finding("a1", "churn_risk", "", 0.5, Decimal(100), 30, ("why",))


def _finding_kinds() -> Iterator[tuple[str, ast.expr]]:
    """The kind argument of every ``Finding(...)`` in the packages: (where, expression)."""
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Finding"):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            keyword = [k.value for k in node.keywords if k.arg == "kind"]
            yield where, keyword[0] if keyword else node.args[1]


def test_every_kind_the_code_reports_is_a_member() -> None:
    found = list(_finding_kinds())
    assert len(found) >= 12, found  # rules, wear, failure model, anomaly, health
    reported: set[str] = set()
    for where, expr in found:
        if isinstance(expr, ast.Attribute) and getattr(expr.value, "id", "") == "SignalKind":
            assert expr.attr in SignalKind.__members__, where
            reported.add(SignalKind[expr.attr].value)
        else:
            assert isinstance(expr, ast.Constant), f"{where}: kind is neither a member nor text"
            assert expr.value in set(SignalKind), f"{where}: {expr.value!r} is no SignalKind"
            reported.add(expr.value)
    assert reported == set(SignalKind), "a member no detector reports"


def _check_values(conn: psycopg.Connection, column: str) -> list[set[str]]:
    """The value lists of the alerts table's CHECK constraints on ``column``."""
    definitions = [
        str(r[0])
        for r in conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'alerts'::regclass AND contype = 'c'"
        )
    ]
    return [
        set(re.findall(r"'([^']*)'", d))
        for d in definitions
        if re.match(rf"CHECK \(\(?{column}\b", d)
    ]


def test_the_alerts_checks_agree_with_the_enum(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        assert _check_values(conn, "family") == [set(Family)]
        # alerts.kind has no CHECK (a retired kind's alerts stay readable); if one is added,
        # it lists exactly the members
        assert all(values == set(SignalKind) for values in _check_values(conn, "kind"))
        # psycopg passes a member as its value, not its name
        row = conn.execute("SELECT %s::text", (SignalKind.THIRD_PARTY_PARTS,)).fetchone()
        assert row == ("third_party_parts",)
