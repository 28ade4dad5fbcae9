"""The CSM pages (issue 15 item 3) against a running ``basewatch api`` and a real database:
My alerts (order, filters, overdue, money with its currency, snooze durations), the bulk form
(CSRF, one audit row per alert), the account list (sorting) and the account page (charts,
component life bars), and names that carry markup rendered escaped on every page. Users,
fixtures and helpers are those of ``test_users_api.py``."""

# ruff: noqa: F811 (the fixtures api and conn of test_users_api.py are parameters here)
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from core.registry import import_registry, read_registry_csv
from tests.basewatch.test_api import call, decline, raise_alerts, saturation, status_of
from tests.basewatch.test_users_api import (  # noqa: F401 (api, conn: fixtures)
    api,
    conn,
    csrf_of,
    form,
    session_of,
    sign_in,
)

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def order_of(text: str) -> list[int]:
    return [int(n) for n in re.findall(r'<section class="alert p\d" id="alert-(\d+)"', text)]


def test_my_alerts_new_first_then_by_expected_value_with_filters(
    api: str, conn: psycopg.Connection
) -> None:
    capacity, _ = raise_alerts(conn, saturation(), decline())
    (falling,) = raise_alerts(conn, decline("acct-1"))
    session = session_of(sign_in(api, "carla"))
    page = call(f"{api}/csm/csm-a", headers=session, auth=False)
    assert page.status == 200
    assert order_of(page.text) == [capacity, falling]  # both new: 960 before 180 EUR expected
    assert "1,200.00 EUR" in page.text
    token = csrf_of(page.text)
    assert (
        form(f"{api}/csm/csm-a/alerts/{capacity}/ack", {"csrf_token": token}, session).status == 303
    )
    after = call(f"{api}/csm/csm-a", headers=session, auth=False).text
    assert order_of(after) == [falling, capacity]  # the new one first
    risk = call(f"{api}/csm/csm-a?family=risk", headers=session, auth=False).text
    assert order_of(risk) == [falling]
    by_kind = call(f"{api}/csm/csm-a?kind=capacity_saturation", headers=session, auth=False)
    assert order_of(by_kind.text) == [capacity]
    opened = call(f"{api}/csm/csm-a?status=open&account=acct-1", headers=session, auth=False)
    assert order_of(opened.text) == [falling]
    for bad in ("family=money", "status=gone", "colour=red"):
        assert call(f"{api}/csm/csm-a?{bad}", headers=session, auth=False).status == 400
    conn.execute(
        "UPDATE alerts SET due_at = now() - interval '2 days' WHERE alert_id = %s", (falling,)
    )
    overdue = call(f"{api}/csm/csm-a", headers=session, auth=False).text
    assert overdue.count("class=overdue") == 1
    # snooze for a chosen duration, with a reason
    snoozed = form(
        f"{api}/csm/csm-a/alerts/{falling}/snooze",
        {"csrf_token": token, "days": "3", "reason": "customer on holiday"},
        session,
    )
    assert snoozed.status == 303
    until = status_of(conn, falling)[5]
    assert dt.timedelta(days=2, hours=23) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(days=3)
    wrong = form(
        f"{api}/csm/csm-a/alerts/{falling}/snooze",
        {"csrf_token": token, "days": "5", "reason": "r"},
        session,
    )
    assert wrong.status == 400


def test_bulk_actions_need_csrf_and_audit_each_alert(api: str, conn: psycopg.Connection) -> None:
    first, other = raise_alerts(conn, saturation(), decline())
    (second,) = raise_alerts(conn, decline("acct-1"))
    session = session_of(sign_in(api, "carla"))
    token = csrf_of(call(f"{api}/csm/csm-a", headers=session, auth=False).text)
    bulk = f"{api}/csm/csm-a/alerts/bulk"
    body = f"action=ack&alert={first}&alert={second}"
    missing = call(bulk, "POST", data=body.encode(), headers={**session, **_FORM}, auth=False)
    assert missing.status == 403
    assert status_of(conn, first)[0] == "open"
    done = call(
        bulk,
        "POST",
        data=f"{body}&csrf_token={token}".encode(),
        headers={**session, **_FORM},
        auth=False,
    )
    assert done.status == 303
    assert status_of(conn, first)[:2] == ("acknowledged", "carla")
    assert status_of(conn, second)[:2] == ("acknowledged", "carla")
    notice = call(api + done.headers["Location"], headers=session, auth=False).text
    assert "2 alert(s) acknowledged." in notice
    audit = conn.execute(
        "SELECT target, action, source FROM audit_log WHERE action LIKE 'alert.%' ORDER BY target"
    ).fetchall()
    assert audit == [
        (f"alert:{first}", "alert.ack", "page"),
        (f"alert:{second}", "alert.ack", "page"),
    ]
    # another csm's alert in the selection: nothing changes
    foreign = f"action=resolve&outcome=won&alert={first}&alert={other}&csrf_token={token}"
    answer = call(bulk, "POST", data=foreign.encode(), headers={**session, **_FORM}, auth=False)
    assert answer.status == 404
    assert status_of(conn, first)[0] == "acknowledged"
    resolved = f"action=resolve&outcome=won&alert={first}&alert={second}&csrf_token={token}"
    answer = call(bulk, "POST", data=resolved.encode(), headers={**session, **_FORM}, auth=False)
    assert answer.status == 303
    assert (status_of(conn, first)[0], status_of(conn, second)[0]) == ("won", "won")
    assert (
        len(conn.execute("SELECT 1 FROM audit_log WHERE action = 'alert.resolve'").fetchall()) == 2
    )


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _machine(conn: psycopg.Connection) -> None:
    """A machine of acct-1 with a component and daily rollups (running hours, flow)."""
    conn.execute(
        "INSERT INTO assets (asset_id, account_id, model) VALUES ('asset-7', 'acct-1', 'GA 37')"
    )
    conn.execute(
        "INSERT INTO components (asset_id, kind, rated_life_hours, installed_at_running_hours)"
        " VALUES ('asset-7', 'oil_filter', 2000, 1000)"
    )
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for back in range(5):
        hours = 2500.0 - back * 20
        conn.execute(
            "INSERT INTO rollup_daily (asset_id, bucket, samples, stats) VALUES ('asset-7', %s,"
            " 24, %s)",
            (
                today - dt.timedelta(days=back + 1),
                Jsonb(
                    {
                        "running_hours": [hours, hours, hours, hours, 24],
                        "flow_m3_min": [4.0 + back, 0, 6, 5, 24],
                    }
                ),
            ),
        )


def test_account_list_sorts_and_the_account_page_shows_charts_and_life(
    api: str, conn: psycopg.Connection
) -> None:
    conn.execute("TRUNCATE rollup_daily")
    _machine(conn)
    raise_alerts(conn, saturation(), decline())
    session = session_of(sign_in(api, "carla"))
    mine = call(f"{api}/csm/csm-a/accounts", headers=session, auth=False)
    assert mine.status == 200
    assert "Acme &lt;Air&gt; &amp; Co" in mine.text
    assert "Brio Foods" not in mine.text  # csm-b's
    assert "0.30 score" in mine.text  # the weighted fallback, labelled
    for sort in ("name", "health", "mrr", "trend", "renewal", "alerts", "last_data"):
        assert (
            call(f"{api}/csm/csm-a/accounts?sort={sort}", headers=session, auth=False).status == 200
        )
    assert call(f"{api}/csm/csm-a/accounts?sort=size", headers=session, auth=False).status == 400
    manager = session_of(sign_in(api, "mona"))
    every = call(f"{api}/accounts?sort=name", headers=manager, auth=False).text
    names = re.findall(r'<a href="/accounts/([^"]+)">', every)
    assert names == ["acct-1", "acme", "acct-2"] or set(names) == {"acct-1", "acct-2", "acme"}
    page = call(f"{api}/accounts/acct-1", headers=session, auth=False)
    assert page.status == 200
    text = page.text
    assert "<svg" in text  # the usage chart from the rollups
    assert "flow_m3_min" not in text
    assert "running_hours" not in text
    assert "GA 37" in text
    assert "75% of 2,000 h" in text  # 2,500 - 1,000 running hours of a 2,000 h life
    assert "capacity saturation" in text
    assert call(f"{api}/accounts/acct-2", headers=session, auth=False).status == 404
    assert call(f"{api}/accounts/nobody", headers=manager, auth=False).status == 404
    acme = call(f"{api}/accounts/acme", headers=manager, auth=False).text
    assert acme.count("<svg") >= 1  # the MRR history from the ledger
    assert "mom_nrr_pct" not in acme


def test_names_with_markup_render_escaped_on_every_page(
    api: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        "account_id,name,industry,region,csm_id\n"
        f'evil-1,{SCRIPT},food,"{IMG.replace(chr(34), chr(34) * 2)}",csm-a\n'
        f'evil-2,"{IMG.replace(chr(34), chr(34) * 2)}",food,EU,csm-a\n'
    )
    assets = tmp_path / "assets.csv"
    quoted = IMG.replace('"', '""')
    assets.write_text(
        "asset_id,account_id,serial,model,rated_power_kw,rated_flow_m3_min,installed_on,site\n"
        f'evil-asset,evil-1,"{quoted}",{SCRIPT},37,6,2024-01-01,"{quoted}"\n'
    )
    import_registry(conn, read_registry_csv([accounts, assets]))
    raise_alerts(conn, saturation("evil-1", reason=SCRIPT), decline("evil-2"))
    manager = session_of(sign_in(api, "mona"))
    carla = session_of(sign_in(api, "carla"))
    pages = [
        (f"{api}/", manager),
        (f"{api}/csm/csm-a", carla),
        (f"{api}/csm/csm-a/accounts", carla),
        (f"{api}/accounts", manager),
        (f"{api}/accounts/evil-1", carla),
        (f"{api}/accounts/evil-2", carla),
    ]
    for url, session in pages:
        answer = call(url, headers=session, auth=False)
        assert answer.status == 200, url
        assert "<script" not in answer.text, url
        assert "<img" not in answer.text, url
    texts = {url: call(url, headers=s, auth=False).text for url, s in pages}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in texts[f"{api}/csm/csm-a"]
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in texts[f"{api}/accounts/evil-2"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in texts[f"{api}/accounts/evil-1"]


def test_my_alerts_pages_through_offset(api: str, conn: psycopg.Connection) -> None:
    # the database's order (active, then priority and due date) decides what a page holds;
    # within a page, new first then by expected value
    capacity, _ = raise_alerts(conn, saturation(), decline())
    (falling,) = raise_alerts(conn, decline("acct-1"))
    session = session_of(sign_in(api, "carla"))
    both = order_of(call(f"{api}/csm/csm-a", headers=session, auth=False).text)
    assert sorted(both) == sorted([capacity, falling])
    second = call(f"{api}/csm/csm-a?offset=1", headers=session, auth=False)
    assert second.status == 200
    assert len(order_of(second.text)) == 1
    assert "Alerts 2 to 2" in second.text
    assert order_of(call(f"{api}/csm/csm-a?offset=2", headers=session, auth=False).text) == []
    for bad in ("offset=-1", "offset=two"):
        assert call(f"{api}/csm/csm-a?{bad}", headers=session, auth=False).status == 400


def test_account_list_filters_by_id_or_name_and_pages_through_offset(
    api: str, conn: psycopg.Connection
) -> None:
    manager = session_of(sign_in(api, "mona"))

    def listed(query: str) -> list[str]:
        answer = call(f"{api}/accounts?{query}", headers=manager, auth=False)
        assert answer.status == 200, query
        return re.findall(r'<a href="/accounts/([^"]+)">', answer.text)

    every = listed("sort=name")
    assert {"acct-1", "acct-2"} <= set(every)
    assert listed("q=BRIO") == ["acct-2"]  # by name, ignoring case
    assert listed("q=acct-1") == ["acct-1"]  # by id
    assert listed("q=nobody-has-this") == []
    assert listed(f"sort=name&offset={len(every)}") == []
    assert listed("sort=name&offset=1") == every[1:]
    for bad in ("offset=-1", "offset=x", "colour=red"):
        assert call(f"{api}/accounts?{bad}", headers=manager, auth=False).status == 400
