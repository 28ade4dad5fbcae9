"""The business review (issue 15 item 3): ``/accounts/<id>/review`` against a running
``basewatch api`` and ``basewatch account review`` against a real database. The figures are
checked against a small data set written out below (rollups, failures and alerts of acct-1
over 1-10 June 2026); the period's 400s, a csm's scope, escaping, the file and ``--json``.
Users, fixtures and helpers are those of ``test_users_api.py``."""

# ruff: noqa: F811 (the fixtures api and conn of test_users_api.py are parameters here)
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from basewatch.pages.review import build_review, last_full_quarter, review_period
from core.errors import InputError
from core.registry import accounts_of
from tests.basewatch.test_api import call
from tests.basewatch.test_cli import run
from tests.basewatch.test_users_api import (  # noqa: F401 (api, conn: fixtures)
    api,
    conn,
    session_of,
    sign_in,
)

SCRIPT = "<script>alert(1)</script>"
PERIOD = "from=2026-06-01&to=2026-06-10"  # 10 days, 240 hours


def _at(day: int, hour: int = 0) -> dt.datetime:
    """June ``day`` 2026 (0 and below: days before June 1) at ``hour`` UTC."""
    return dt.datetime(2026, 6, 1, hour, tzinfo=dt.UTC) + dt.timedelta(days=day - 1)


def _alert(
    conn: psycopg.Connection,
    kind: str,
    family: str,
    subject: str,
    status: str,
    opened: dt.datetime,
    value: str,
    *,
    account: str = "acct-1",
    acknowledged: bool = False,
) -> int:
    closed = opened + dt.timedelta(days=2) if status in ("won", "lost", "dismissed") else None
    row = conn.execute(
        "INSERT INTO alerts (account_id, kind, family, subject, status, score, value,"
        " expected_value, horizon_days, reasons, owner_csm_id, opened_at, updated_at,"
        " last_seen_at, due_at, acknowledged_at, acknowledged_by, closed_at)"
        " VALUES (%s, %s, %s, %s, %s, 0.5, %s, %s, 30, %s, 'csm-a', %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING alert_id",
        (
            account,
            kind,
            family,
            subject,
            status,
            Decimal(value),
            Decimal(value) / 2,
            Jsonb([f"{kind} reason"]),
            opened,
            opened,
            opened,
            opened + dt.timedelta(days=30),
            opened if acknowledged else None,
            "carla" if acknowledged else None,
            closed,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def data(conn: psycopg.Connection) -> dict[str, int]:
    """acct-1: asset-7 with two days of rollups in June (flow 5 and 4 m³/min, power 30 and
    24 kW, 48 hours with readings, running hours 1,000 to 1,040) and a day after the period;
    asset-8 without data. Failures: asset-7 on 5 June (warned by a service alert of 20 May),
    asset-8 on 1 June (not warned) and on 6 June (warned by the service alert of 4 June),
    asset-7 on 12 June (after the period). Alerts opened in the period: won 1,200, dismissed,
    acknowledged service on asset-8 (a failure followed: not avoided), lost risk on asset-7
    after its failure (acted on, no failure since: avoided), open expansion 3,000."""
    conn.execute(
        "TRUNCATE rollup_daily, rollup_hourly, asset_events, alerts, alert_history CASCADE"
    )
    conn.execute(
        "INSERT INTO assets (asset_id, account_id, model) VALUES"
        " ('asset-7', 'acct-1', 'GA 37'), ('asset-8', 'acct-1', 'GA 11'),"
        " ('asset-9', 'acct-2', 'GA 18')"
    )
    days = [(2, 5.0, 30.0, 1000.0, 1020.0), (3, 4.0, 24.0, 1020.0, 1040.0)]
    days.append((11, 50.0, 300.0, 1040.0, 1064.0))  # after the period: left out
    for day, flow, power, hours_first, hours_last in days:
        conn.execute(
            "INSERT INTO rollup_daily (asset_id, bucket, samples, stats)"
            " VALUES ('asset-7', %s, 24, %s)",
            (
                _at(day),
                Jsonb(
                    {
                        "flow_m3_min": [flow, 0, 6, flow, 24],
                        "power_kw": [power, 0, 37, power, 24],
                        "running_hours": [hours_first, hours_first, hours_last, hours_last, 24],
                    }
                ),
            ),
        )
        for hour in range(24):
            conn.execute(
                "INSERT INTO rollup_hourly (asset_id, bucket, samples, stats)"
                " VALUES ('asset-7', %s, 6, '{}')",
                (_at(day, hour),),
            )
    conn.execute(
        "INSERT INTO rollup_daily (asset_id, bucket, samples, stats) VALUES ('asset-9', %s, 24,"
        " %s)",
        (_at(2), Jsonb({"flow_m3_min": [9.0, 9, 9, 9, 24]})),
    )
    for asset, day, component in (
        ("asset-7", 5, "oil_filter"),
        ("asset-8", 1, "motor_bearings"),
        ("asset-8", 6, ""),
        ("asset-7", 12, "separator"),
    ):
        conn.execute(
            "INSERT INTO asset_events (asset_id, time, kind, component, received_at)"
            " VALUES (%s, %s, 'failure', %s, now())",
            (asset, _at(day, 10), component),
        )
    return {
        "warning": _alert(
            conn, "service_due", "service", "asset-7/oil_filter", "won", _at(-11), "500"
        ),
        "won": _alert(conn, "capacity_saturation", "expansion", "asset-7", "won", _at(2), "1200"),
        "dismissed": _alert(conn, "usage_decline", "risk", "", "dismissed", _at(3), "300"),
        "service": _alert(
            conn,
            "service_due",
            "service",
            "asset-8",
            "acknowledged",
            _at(4),
            "400",
            acknowledged=True,
        ),
        "avoided": _alert(
            conn, "failure_risk", "risk", "asset-7", "lost", _at(6), "800", acknowledged=True
        ),
        "open": _alert(conn, "heat_recovery", "expansion", "asset-7", "open", _at(9), "3000"),
        "other": _alert(
            conn, "heat_recovery", "expansion", "asset-9", "open", _at(5), "9999", account="acct-2"
        ),
    }


def test_the_period_defaults_to_the_last_full_quarter_and_refuses_bad_input() -> None:
    assert last_full_quarter(dt.date(2026, 12, 5)) == (dt.date(2026, 7, 1), dt.date(2026, 9, 30))
    assert last_full_quarter(dt.date(2026, 2, 1)) == (dt.date(2025, 10, 1), dt.date(2025, 12, 31))
    today = dt.date(2026, 12, 5)
    assert review_period(None, None, today) == (dt.date(2026, 7, 1), dt.date(2026, 9, 30))
    assert review_period("2026-01-01", "2026-12-31", today)[1] == dt.date(2026, 12, 31)
    assert review_period(None, "2026-06-30", today) == (dt.date(2026, 4, 1), dt.date(2026, 6, 30))
    assert review_period("2026-11-01", None, today) == (dt.date(2026, 11, 1), dt.date(2026, 12, 4))
    bad: list[tuple[str, str | None]] = [
        ("2026-13-01", None),
        ("2026-06-10", "2026-06-01"),
        ("2025-01-01", "2026-01-02"),
    ]
    for first, last in bad:
        with pytest.raises(InputError):
            review_period(first, last, today)
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        review_period("1 June", None, today)


def test_figures_from_a_known_data_set(conn: psycopg.Connection, data: dict[str, int]) -> None:
    (account,) = accounts_of(conn, account_id="acct-1")
    now = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)
    review = build_review(conn, account, dt.date(2026, 6, 1), dt.date(2026, 6, 10), "EUR", now)
    document = review.document()
    assert document["air_m3"] == (5 + 4) * 1440  # 12,960 m³
    assert document["energy_kwh"] == (30 + 24) * 24  # 1,296 kWh
    assert document["specific_power_kwh_m3"] == 0.1
    assert document["availability"] == 0.1  # 48 h of 2 machines x 240 h
    seven, eight = document["machines"]
    assert seven == {
        "asset_id": "asset-7",
        "air_m3": 12960.0,
        "energy_kwh": 1296.0,
        "specific_power_kwh_m3": 0.1,
        "hours_reported": 48,
        "availability": 0.2,
        "running_hours": 40.0,
    }
    assert eight["air_m3"] is None
    assert eight["availability"] == 0
    assert document["failures"] == {"count": 3, "warned": 2, "avoided": 1}
    assert [f.warned_by for f in review.failures] == [None, data["warning"], data["service"]]
    # a period that reaches past now: availability over the hours gone by (5 days = 120 h)
    early = build_review(conn, account, dt.date(2026, 6, 1), dt.date(2026, 6, 10), "EUR", _at(6))
    assert early.machines[0].availability == 48 / 120
    ahead = build_review(conn, account, dt.date(2026, 6, 1), dt.date(2026, 6, 10), "EUR", _at(-5))
    assert ahead.availability is None
    assert [a.alert_id for a in review.avoided] == [data["avoided"]]
    assert document["alerts"] == {
        "raised": 5,
        "acted_on": 4,  # won, dismissed, acknowledged, lost (as the team page counts)
        "outcomes": {
            "open": 1,
            "acknowledged": 1,
            "won": 1,
            "lost": 1,
            "dismissed": 1,
            "expired": 0,
        },
        "won_value": "1200.00",
    }
    assert document["recommendations"] == {
        "count": 2,
        "value": "3400.00",
        "expected_value": "1700.00",
    }


def test_the_page_shows_the_figures_with_their_units_and_is_printable(
    api: str, conn: psycopg.Connection, data: dict[str, int]
) -> None:
    carla = session_of(sign_in(api, "carla"))
    answer = call(f"{api}/accounts/acct-1/review?{PERIOD}", headers=carla, auth=False)
    assert answer.status == 200
    text = answer.text
    for figure in ("12,960 m³", "1,296 kWh", "0.100 kWh/m³", "10.0%", "20.0%"):
        assert figure in text, figure
    assert "1,200.00 EUR" in text  # won
    assert "3,400.00 EUR" in text  # open recommendations
    assert "9,999.00" not in text  # acct-2's
    assert "@media print{nav,.noprint{display:none}" in text  # printed without navigation
    assert '<p class="meta noprint">Signed in as' in text
    assert '<form class=noprint method="get"' in text
    assert text.count("<svg") == 1  # air per day, the account page's chart helper
    account = call(f"{api}/accounts/acct-1", headers=carla, auth=False).text
    assert 'href="/accounts/acct-1/review"' in account
    assert "Acme &lt;Air&gt; &amp; Co" in text
    assert "flow_m3_min" not in text
    assert "power_kw" not in text
    default = call(f"{api}/accounts/acct-1/review", headers=carla, auth=False)
    assert default.status == 200
    first, last = last_full_quarter(dt.datetime.now(dt.UTC).date())
    assert f"{first} to {last}" in default.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-06-31", "from: expected a date YYYY-MM-DD, got &#39;2026-06-31&#39;"),
        ("from=June&to=2026-06-10", "from: expected a date YYYY-MM-DD"),
        ("from=2026-06-01&to=2026-6-10", "to: expected a date YYYY-MM-DD"),
        ("from=2026-06-10&to=2026-06-01", "from (2026-06-10) is after to (2026-06-01)"),
        ("from=2025-01-01&to=2026-01-02", "is 367 days; a review covers at most 366"),
        ("month=2026-06", "unknown query parameter"),
        ("from=2026-06-01&from=2026-06-02", "given more than once"),
    ],
)
def test_bad_periods_are_400(api: str, conn: psycopg.Connection, query: str, message: str) -> None:
    manager = session_of(sign_in(api, "mona"))
    answer = call(f"{api}/accounts/acct-1/review?{query}", headers=manager, auth=False)
    assert answer.status == 400
    assert message in answer.text


def test_a_csm_sees_only_their_accounts_review(api: str, conn: psycopg.Connection) -> None:
    bert = session_of(sign_in(api, "bert"))
    assert call(f"{api}/accounts/acct-1/review", headers=bert, auth=False).status == 404
    assert call(f"{api}/accounts/acct-2/review", headers=bert, auth=False).status == 200
    manager = session_of(sign_in(api, "mona"))
    assert call(f"{api}/accounts/acct-1/review", headers=manager, auth=False).status == 200
    assert call(f"{api}/accounts/nobody/review", headers=manager, auth=False).status == 404
    anonymous = call(f"{api}/accounts/acct-1/review", auth=False)
    assert anonymous.status == 303
    assert anonymous.headers["Location"] == "/signin"


def test_an_account_named_with_markup_renders_escaped(
    api: str, conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    conn.execute(
        "INSERT INTO accounts (account_id, name, csm_id) VALUES ('evil-1', %s, 'csm-a')",
        (SCRIPT,),
    )
    conn.execute(
        "INSERT INTO assets (asset_id, account_id, model, site) VALUES ('evil-asset', 'evil-1',"
        " %s, %s)",
        (SCRIPT, SCRIPT),
    )
    carla = session_of(sign_in(api, "carla"))
    answer = call(f"{api}/accounts/evil-1/review", headers=carla, auth=False)
    assert answer.status == 200
    assert "<script" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    out = tmp_path / "evil.html"
    result = run("account", "review", "evil-1", "--out", str(out), db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "<script" not in out.read_text()


def test_the_command_writes_the_page_and_prints_json(
    conn: psycopg.Connection, data: dict[str, int], db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "review.html"
    args = ("account", "review", "acct-1", "--from", "2026-06-01", "--to", "2026-06-10")
    result = run(*args, "--out", str(out), "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["html"] == str(out)
    assert document["bytes"] == out.stat().st_size
    assert document["air_m3"] == 12960.0
    assert document["alerts"]["won_value"] == "1200.00"
    html = out.read_text()
    assert "12,960 m³" in html
    assert "<nav>" not in html  # a file, not the signed-in page
    assert "Sign out" not in html
    text = run(*args, "--out", str(out), db_url=db_url)
    assert text.returncode == 0
    assert str(out) in text.stdout
    for bad in (("--from", "2026-06-31"), ("--from", "2026-06-10", "--to", "2026-06-01")):
        usage = run("account", "review", "acct-1", *bad, "--out", str(out), db_url=db_url)
        assert usage.returncode == 2, usage.stderr
        assert "--from" in usage.stderr
    missing = run("account", "review", "acct-1", db_url=db_url)
    assert missing.returncode == 2  # --out is required
    unknown = run("account", "review", "nobody", "--out", str(out), db_url=db_url)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "basewatch: error: no account 'nobody'"
