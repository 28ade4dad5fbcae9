"""The managers' pages (issue 15 item 3): the team page (alerts per CSM over a window, the
share acted on, the value won) and the monthly NRR report in the app, against a running
``basewatch api`` and a real database. Users and fixtures are those of ``test_users_api.py``
(its ledger holds acme's 2024-01 and 2024-02)."""

from __future__ import annotations

import re

import psycopg

from signals.alerts import resolve
from tests.basewatch import test_users_api
from tests.basewatch.test_api import call, decline, raise_alerts, saturation
from tests.basewatch.test_users_api import session_of, sign_in

api = test_users_api.api  # fixtures: the running API, the database with users and a ledger
conn = test_users_api.conn


def test_the_team_page_counts_alerts_acted_on_and_won_value(
    api: str, conn: psycopg.Connection
) -> None:
    capacity, _ = raise_alerts(conn, saturation(), decline())  # csm-a's, csm-b's
    resolve(conn, capacity, "won", "carla")
    manager = session_of(sign_in(api, "mona"))
    answer = call(f"{api}/team", headers=manager, auth=False)
    assert answer.status == 200
    text = answer.text
    rows = {
        name: re.sub(r"<[^>]+>", " ", row)
        for name, row in re.findall(r'<tr><td><a href="/csm/[^"]+">([^<]+)</a>(.*?)</tr>', text)
    }
    assert set(rows) == {"Ada Alvarez", "Ben Brook", "Cy Cole"}
    assert rows["Ada Alvarez"].split() == (
        ["accounts", "1", "0", "0", "100%", "(1)", "1", "1,200.00", "EUR"]
    )  # opened, active, overdue, acted on, won, won value
    assert rows["Ben Brook"].split()[1:6] == ["1", "1", "0", "0%", "(0)"]
    assert rows["Cy Cole"].split()[1:5] == ["0", "0", "0", "–"]  # no alerts: no rate
    assert '<a href="/team?days=30">30</a> / <strong>90</strong>' in text
    assert call(f"{api}/team?days=30", headers=manager, auth=False).status == 200
    assert call(f"{api}/team?days=7", headers=manager, auth=False).status == 400
    carla = session_of(sign_in(api, "carla"))
    assert call(f"{api}/team", headers=carla, auth=False).status == 403


def test_the_nrr_report_renders_in_the_app(api: str, conn: psycopg.Connection) -> None:
    manager = session_of(sign_in(api, "mona"))
    answer = call(f"{api}/reports/nrr?month=2024-02", headers=manager, auth=False)
    assert answer.status == 200
    text = answer.text
    assert "Net revenue retention, 2024-02" in text
    assert 'name="viewport"' in text
    assert "<svg" in text
    assert "<script" not in text
    assert '<a href="/team">team</a>' in text
    latest = call(f"{api}/reports/nrr", headers=manager, auth=False)
    assert (latest.status, "Net revenue retention, 2024-02" in latest.text) == (200, True)
    assert call(f"{api}/reports/nrr?month=2031-01", headers=manager, auth=False).status == 404
    assert call(f"{api}/reports/nrr?month=soon", headers=manager, auth=False).status == 400
    carla = session_of(sign_in(api, "carla"))
    assert call(f"{api}/reports/nrr", headers=carla, auth=False).status == 403
