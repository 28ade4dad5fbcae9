"""The signal kinds are one enum: every kind the code reports is a member, every member has a
family, a description and one promise, the values are the strings the database and JSON have
always held (a retired kind's stay readable), and the alerts table's CHECK constraints agree
with the enum."""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

import signals.kinds
from signals import anomaly, backtest, failure_model
from signals.alerts import apply_findings
from signals.findings import Finding
from signals.kinds import CATALOGUE, FAMILIES, RETIRED, Family, SignalKind, family_of, promise_of
from signals.scoring import KINDS_SCORED

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "ingest", "signals", "nrr", "basewatch", "bench")
# The strings stored in alerts.kind and written in JSON before the enum: they must not change.
STORED = {
    "failure_risk": "service",
    "service_due": "service",
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
    assert f"{SignalKind.SERVICE_DUE:<15}|" == "service_due    |"
    # a pass counts the retired kinds as scored, so that their open alerts expire
    assert frozenset(STORED) | {"component_due"} == KINDS_SCORED


def test_component_due_is_retired_not_a_member() -> None:
    assert {"component_due"} == RETIRED
    assert not RETIRED & set(SignalKind)
    with pytest.raises(ValueError, match="unknown signal kind 'component_due'"):
        Finding("a1", "component_due", "m1", 0.5, Decimal(100), 3, ("why",))


def test_every_kind_states_one_promise_with_the_horizon_the_backtest_scores() -> None:
    """The promise is one sentence, and the horizon it names is the one the backtest and the
    detector use."""
    for kind, info in CATALOGUE.items():
        assert info.promise.strip(), kind
        assert "\n" not in info.promise, kind
        assert promise_of(kind.value) == info.promise
    hours = f"within {failure_model.HORIZON_RH:.0f} running hours"
    assert hours in promise_of(SignalKind.FAILURE_RISK)
    assert "only a failure" in promise_of(SignalKind.FAILURE_RISK)
    assert "replaced" in promise_of(SignalKind.SERVICE_DUE)
    assert f"{anomaly.HORIZON_DAYS} days" in promise_of(SignalKind.ASSET_ANOMALY)
    assert "alarm" in promise_of(SignalKind.ASSET_ANOMALY)
    churn = f"churns within {backtest.CHURN_WINDOW.days} days"
    expands = f"expansion within {backtest.EXPANSION_WINDOW.days} days"
    for kind in (SignalKind.USAGE_DECLINE, SignalKind.SILENT_ASSETS, SignalKind.RENEWAL_RISK):
        assert churn in promise_of(kind), kind
    for kind in (SignalKind.CAPACITY_SATURATION, SignalKind.HEAT_RECOVERY, SignalKind.USAGE_GROWTH):
        assert expands in promise_of(kind), kind
    assert f"{backtest.DETECTION_WINDOW.days} days" in promise_of(SignalKind.THIRD_PARTY_PARTS)


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


def test_a_retired_kinds_alert_stays_readable_expires_and_is_left_out_of_the_backtest(
    db_url: str,
) -> None:
    """An open component_due alert from before the split: a scoring pass (which counts the
    retired kinds as scored) expires it once its condition has been clear long enough, the
    row stays as it was stored, and the backtest does not score it."""
    now = dt.datetime(2031, 3, 1, tzinfo=dt.UTC)
    seen = now - dt.timedelta(days=3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM alerts WHERE account_id = 'rk-a1'")
        try:
            (alert_id,) = conn.execute(
                "INSERT INTO alerts (account_id, kind, family, subject, score, horizon_days,"
                " reasons, opened_at, updated_at, last_seen_at, due_at)"
                " VALUES ('rk-a1', 'component_due', 'service', 'm1/oil_filter', 0.8, 3,"
                " '[\"old\"]', %(t)s, %(t)s, %(t)s, %(t)s) RETURNING alert_id",
                {"t": seen},
            ).fetchone() or (None,)
            assert backtest.stored_alerts(conn, seen, now) == []
            apply_findings(conn, [], now=now, kinds_scored=KINDS_SCORED, currency="EUR")
            row = conn.execute(
                "SELECT kind, family, status, reasons FROM alerts WHERE alert_id = %s",
                (alert_id,),
            ).fetchone()
        finally:
            conn.execute(
                "DELETE FROM alert_history WHERE alert_id IN"
                " (SELECT alert_id FROM alerts WHERE account_id = 'rk-a1')"
            )
            conn.execute("DELETE FROM alerts WHERE account_id = 'rk-a1'")
    assert row == ("component_due", "service", "expired", ["old"])
