"""``basewatch api`` on a real database: the JSON endpoints (same documents as the CLI's
``--json``), the alert lifecycle through HTTP, the error statuses, the deprecated service
token, the CSM pages and their forms, and a clean stop on SIGTERM. The server runs in-process
on a free port; requests go through urllib over TCP. :func:`call` authenticates as the admin
``ada`` (a personal token :func:`running` creates) unless ``auth=False``; users, sessions,
CSRF and the authorization matrix are tested in ``test_users_api.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from basewatch.api import ApiConfig, make_server
from basewatch.users import create_token, create_user, get_user
from core.errors import NotFound
from core.settings import Settings
from nrr.headline import headline
from nrr.ledger import rebuild
from signals.alerts import alert_history, apply_findings, list_alerts
from signals.findings import Finding
from signals.health import latest_health
from tests.nrr import fix_nrr as fx

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TOKEN = "s3cret-token-for-tests"
KINDS = {"capacity_saturation", "usage_decline", "service_due"}

REGISTRY = """
INSERT INTO csms (csm_id, name, email) VALUES
    ('csm-a', 'Ada Alvarez', 'ada@example.test'),
    ('csm-b', 'Ben Brook', 'ben@example.test'),
    ('csm-c', 'Cy Cole', NULL)
ON CONFLICT DO NOTHING;
INSERT INTO accounts (account_id, name, csm_id) VALUES
    ('acct-1', 'Acme <Air> & Co', 'csm-a'),
    ('acct-2', 'Brio Foods', 'csm-b')
ON CONFLICT DO NOTHING;
"""


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE alerts, alert_history, outbox, account_health")
        connection.execute(REGISTRY)
        yield connection


_SETTING_OF = {
    "token": "api_token",
    "db_pool_max": "api_db_pool_max",
    "db_pool_timeout_s": "api_db_pool_timeout_s",
    "threads": "api_threads",
    "max_connections": "api_max_connections",
}


def api_config(db_url: str, **overrides: Any) -> ApiConfig:
    """The API's configuration as the service builds it (from ``Settings``, whose defaults
    are the only ones), with test overrides: settings by their ApiConfig names, plus the
    two timeouts that are not settings."""
    settings = Settings(
        database_url=db_url,
        **{_SETTING_OF[k]: v for k, v in overrides.items() if k in _SETTING_OF},
    )
    rest = {k: v for k, v in overrides.items() if k not in _SETTING_OF}
    return dataclasses.replace(ApiConfig.from_settings(settings), **rest)


ADMIN = "ada"
_BEARER: dict[str, str] = {}  # server URL -> a personal token of the admin ADMIN


def personal_token(
    db_url: str, username: str, role: str = "admin", csm_id: str | None = None
) -> str:
    """A new personal token of ``username`` (created first if need be, with a random
    password)."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        try:
            get_user(connection, username)
        except NotFound:
            create_user(connection, username, role, "a-long-test-password", csm_id=csm_id)
        return create_token(connection, username, "tests")[1]


@contextlib.contextmanager
def running(config: ApiConfig, host: str = "127.0.0.1") -> Iterator[str]:
    try:
        token = personal_token(config.database_url, ADMIN)
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        token = ""  # a test of the API without its database, or with one never migrated
    server = make_server(config, host, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _BEARER[server.url] = token
    try:
        yield server.url
    finally:
        _BEARER.pop(server.url, None)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def api(db_url: str) -> Iterator[str]:
    with running(api_config(db_url)) as url:
        yield url


@pytest.fixture
def api_with_token(db_url: str) -> Iterator[str]:
    with running(api_config(db_url, token=TOKEN)) as url:
        yield url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        # errors are RFC 9457 problem details (with the old "error" field kept)
        assert self.headers["Content-Type"] in ("application/json", "application/problem+json")
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def call(
    url: str,
    method: str = "GET",
    *,
    body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> Answer:
    """One request; with ``auth``, as the admin of the server (unless ``headers`` hold an
    Authorization or a Cookie)."""
    headers = dict(headers or {})
    base = next((b for b in _BEARER if url.startswith(b)), None)
    if auth and base and not {"Authorization", "Cookie"} & set(headers):
        headers["Authorization"] = f"Bearer {_BEARER[base]}"
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=20) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.headers, error.read())


def saturation(account: str = "acct-1", reason: str = "load above 95% in 61% of hours") -> Finding:
    return Finding(
        account_id=account,
        kind="capacity_saturation",
        subject="asset-7",
        score=0.8,
        value=Decimal("1200"),
        horizon_days=30,
        reasons=(reason, "pressure below set point 7% of the time"),
        figures={"load_high_share": 0.61},
    )


def decline(account: str = "acct-2") -> Finding:
    return Finding(
        account_id=account,
        kind="usage_decline",
        subject="",
        score=0.6,
        value=Decimal("300"),
        horizon_days=60,
        reasons=("usage 35% below the account's own 90-day baseline",),
    )


def raise_alerts(conn: psycopg.Connection, *findings: Finding) -> tuple[int, ...]:
    result = apply_findings(
        conn, findings, now=NOW - dt.timedelta(hours=1), kinds_scored=KINDS, currency="EUR"
    )
    return result.opened


def status_of(conn: psycopg.Connection, alert_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, acknowledged_by, closed_by, note, feedback, snoozed_until, snooze_reason"
        " FROM alerts WHERE alert_id = %s",
        (alert_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def as_json(document: Any) -> Any:
    """What the CLI's ``--json`` prints for ``document``."""
    return json.loads(json.dumps(document, default=str))


# -- health check -----------------------------------------------------------------------------


def test_healthz_answers_200_with_the_database_and_503_without(api: str) -> None:
    answer = call(f"{api}/healthz")
    assert (answer.status, answer.json) == (200, {"status": "ok"})
    down_url = "postgresql://postgres@127.0.0.1:1/nothing"
    with running(api_config(down_url, db_pool_timeout_s=1)) as down:
        answer = call(f"{down}/healthz")
        assert (answer.status, answer.json) == (503, {"status": "unavailable"})
        assert answer.headers["Retry-After"] == "5"
        # a token can only be checked with the database: 503, not 401
        listing = call(f"{down}/alerts", headers={"Authorization": "Bearer bwt_" + "x" * 43})
        assert listing.status == 503
        assert "no database connection free within 1 s" in listing.json["error"]
        assert listing.headers["Retry-After"] == "5"


# -- alerts -----------------------------------------------------------------------------------


def test_list_get_ack_resolve_round_trip(api: str, conn: psycopg.Connection) -> None:
    first, second = raise_alerts(conn, saturation(), decline())

    listing = call(f"{api}/alerts")
    assert listing.status == 200
    assert listing.json == as_json(list_alerts(conn, status="active"))
    assert {a["alert_id"] for a in listing.json} == {first, second}
    mine = call(f"{api}/alerts?owner=csm-a").json
    assert [(a["alert_id"], a["account_id"], a["kind"]) for a in mine] == [
        (first, "acct-1", "capacity_saturation")
    ]
    assert call(f"{api}/alerts?kind=usage_decline&limit=5").json[0]["alert_id"] == second

    detail = call(f"{api}/alerts/{first}").json
    assert detail["status"] == "open"
    assert detail["expected_value"] == "960.00"  # 1,200 x 0.8
    assert [h["action"] for h in detail["history"]] == ["opened"]

    acked = call(f"{api}/alerts/{first}/ack", "POST", body={"by": "ada"})
    assert acked.status == 200
    assert (acked.json["status"], acked.json["acknowledged_by"]) == ("acknowledged", "ada")
    assert status_of(conn, first)[:2] == ("acknowledged", "ada")

    resolved = call(
        f"{api}/alerts/{first}/resolve",
        "POST",
        body={"by": "ada", "outcome": "won", "note": "second compressor sold"},
    )
    assert resolved.status == 200
    assert resolved.json["status"] == "won"
    assert status_of(conn, first)[:4] == ("won", "ada", "ada", "second compressor sold")
    assert [(h["action"], h["actor"]) for h in alert_history(conn, first)] == [
        ("opened", "system"),
        ("acknowledged", "ada"),
        ("won", "ada"),
    ]
    assert call(f"{api}/alerts/{first}").json["history"][-1]["detail"] == {
        "note": "second compressor sold"
    }
    assert call(f"{api}/alerts?status=won").json[0]["alert_id"] == first
    assert [a["alert_id"] for a in call(f"{api}/alerts").json] == [second]


def test_an_illegal_transition_is_409_and_changes_nothing(
    api: str, conn: psycopg.Connection
) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    assert call(f"{api}/alerts/{alert_id}/resolve", "POST", body={"by": "ada", "outcome": "lost"})
    again = call(f"{api}/alerts/{alert_id}/ack", "POST", body={"by": "ada"})
    assert again.status == 409
    assert "is lost: cannot acknowledge it" in again.json["error"]
    snoozed = call(
        f"{api}/alerts/{alert_id}/snooze", "POST", body={"by": "ada", "hours": 4, "reason": "x"}
    )
    assert snoozed.status == 409
    assert status_of(conn, alert_id)[:3] == ("lost", None, "ada")
    assert len(alert_history(conn, alert_id)) == 2


def test_snooze_and_feedback(api: str, conn: psycopg.Connection) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    before = dt.datetime.now(dt.UTC)
    answer = call(
        f"{api}/alerts/{alert_id}/snooze",
        "POST",
        body={"by": "ada", "hours": 24, "reason": "customer on holiday"},
    )
    assert answer.status == 200
    assert answer.json["snoozed"] is True
    status, *_, until, reason = status_of(conn, alert_id)
    assert status == "open"
    assert reason == "customer on holiday"
    assert (
        before + dt.timedelta(hours=24) <= until <= dt.datetime.now(dt.UTC) + dt.timedelta(hours=24)
    )
    later = (NOW + dt.timedelta(days=30)).date().isoformat()
    until_answer = call(
        f"{api}/alerts/{alert_id}/snooze",
        "POST",
        body={"by": "ada", "until": later, "reason": "later"},
    )
    assert until_answer.json["snoozed_until"] == f"{later}T00:00:00+00:00"

    useful = call(f"{api}/alerts/{alert_id}/feedback", "POST", body={"by": "ada", "useful": True})
    assert useful.json["feedback"] == "useful"
    assert status_of(conn, alert_id)[4] == "useful"
    call(f"{api}/alerts/{alert_id}/feedback", "POST", body={"useful": False})  # by: optional
    assert status_of(conn, alert_id)[4] == "not_useful"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("ack", {"by": 7}, "field 'by' must be a string"),
        ("ack", {"by": "ada", "actor": "x"}, "unknown field 'actor'"),
        ("snooze", {"by": "ada", "reason": "r"}, "either 'until'"),
        ("snooze", {"by": "ada", "reason": "r", "hours": 1, "until": "2999-01-01"}, "either"),
        ("snooze", {"by": "ada", "reason": "r", "hours": "2"}, "'hours' must be a number"),
        ("snooze", {"by": "ada", "reason": "r", "hours": 0}, "more than 0"),
        ("snooze", {"by": "ada", "reason": "r", "until": "soon"}, "not an ISO time"),
        ("snooze", {"by": "ada", "reason": "r", "until": "2001-01-01"}, "not in the future"),
        ("snooze", {"by": "ada", "hours": 2}, "field 'reason' is required"),
        ("resolve", {"by": "ada", "outcome": "maybe"}, "'outcome' must be one of"),
        ("feedback", {"by": "ada", "useful": "yes"}, "'useful' must be true or false"),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(
    api: str, conn: psycopg.Connection, path: str, body: Any, message: str
) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    headers = {"Content-Type": "application/json"}
    answer = call(f"{api}/alerts/{alert_id}/{path}", "POST", body=body, headers=headers)
    assert answer.status == 400
    assert message in answer.json["error"]
    assert status_of(conn, alert_id) == ("open", None, None, None, None, None, None)


def test_bad_json_bad_queries_unknown_ids_and_wrong_methods(
    api: str, conn: psycopg.Connection
) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    ack = f"{api}/alerts/{alert_id}/ack"
    not_json = call(ack, "POST", data=b'{"by": "ada"', headers={"Content-Type": "application/json"})
    assert not_json.status == 400
    assert "not JSON" in not_json.json["error"]
    as_json_type = {"Content-Type": "application/json"}
    assert call(ack, "POST", data=b'["ada"]', headers=as_json_type).json == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "the body must be a JSON object",
        "error": "the body must be a JSON object",
    }
    too_big = call(ack, "POST", data=b" " * (64 * 1024 + 1))
    assert too_big.status == 413

    for query, message in [
        ("status=bogus", "unknown status 'bogus'"),
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=ten", "limit must be a whole number"),
        ("owner=a&owner=b", "given more than once"),
        ("sort=due", "unknown query parameter 'sort'"),
    ]:
        answer = call(f"{api}/alerts?{query}")
        assert (answer.status, message in answer.json["error"]) == (400, True), query

    for path in ("/nothing", "/alerts/", "/alerts/abc", "/csm/csm-a/extra"):
        missing = call(api + path)
        assert missing.status == 404, path
        assert "no such route" in missing.json["error"]
    unknown = call(f"{api}/alerts/99999")
    assert (unknown.status, unknown.json["error"]) == (404, "no alert #99999")
    assert call(f"{api}/alerts/99999999999999999999").status == 404
    assert call(f"{api}/alerts/99999/ack", "POST", body={"by": "ada"}).status == 404

    wrong = call(f"{api}/alerts/{alert_id}", "DELETE")
    assert (wrong.status, wrong.headers["Allow"]) == (405, "GET, HEAD")
    assert "DELETE is not allowed" in wrong.json["error"]
    assert call(ack).headers["Allow"] == "POST"
    assert call(f"{api}/alerts", "POST", body={}).status == 405
    assert status_of(conn, alert_id)[0] == "open"


def test_a_statement_over_the_timeout_is_503(db_url: str, conn: psycopg.Connection) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    with (
        running(api_config(db_url, statement_timeout_s=1)) as url,
        psycopg.connect(db_url) as holder,
    ):
        holder.execute("SELECT 1 FROM alerts WHERE alert_id = %s FOR UPDATE", (alert_id,))
        answer = call(f"{url}/alerts/{alert_id}/ack", "POST", body={"by": "ada"})
        holder.rollback()
    assert answer.status == 503
    assert answer.json["error"] == "the database did not answer within 1 s"
    assert status_of(conn, alert_id)[0] == "open"


# -- the deprecated service token -------------------------------------------------------------


def test_everything_but_healthz_needs_authentication(api: str, conn: psycopg.Connection) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    assert call(f"{api}/healthz", auth=False).status == 200
    cases: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/alerts", None),
        ("GET", f"/alerts/{alert_id}", None),
        ("POST", f"/alerts/{alert_id}/ack", {}),
        ("GET", "/nrr", None),
    ]
    for method, path, body in cases:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"}):
            answer = call(api + path, method, body=body, headers=headers, auth=False)
            assert answer.status == 401, (path, headers)
            assert answer.headers["WWW-Authenticate"] == 'Bearer realm="basewatch"'
    assert status_of(conn, alert_id)[0] == "open"
    # a page sends the browser to the sign-in form; the old ?token= is gone
    page = call(f"{api}/csm/csm-a", auth=False)
    assert (page.status, page.headers["Location"]) == (303, "/signin")
    assert call(f"{api}/?token=anything").status == 400


def test_the_service_token_acts_as_admin_with_by_required_and_audited(
    api_with_token: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute("TRUNCATE audit_log")
    (alert_id,) = raise_alerts(conn, saturation())
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert call(f"{api_with_token}/alerts", headers=bearer).json[0]["alert_id"] == alert_id
    no_by = call(f"{api_with_token}/alerts/{alert_id}/ack", "POST", body={}, headers=bearer)
    assert (no_by.status, no_by.json["error"]) == (400, "field 'by' is required")
    acked = call(
        f"{api_with_token}/alerts/{alert_id}/ack", "POST", body={"by": "ops"}, headers=bearer
    )
    assert acked.status == 200
    assert status_of(conn, alert_id)[:2] == ("acknowledged", "ops")
    audit = conn.execute(
        "SELECT actor_user_id, actor, action, source, details->>'via' FROM audit_log"
        " WHERE target = %s",
        (f"alert:{alert_id}",),
    ).fetchall()
    assert audit == [(None, "ops", "alert.ack", "api", "service")]
    uses = conn.execute(
        "SELECT actor, target FROM audit_log WHERE action = 'service_token.use' ORDER BY audit_id"
    ).fetchall()
    assert uses == [
        ("service token", "GET /alerts"),
        ("service token", f"POST /alerts/{alert_id}/ack"),
        ("service token", f"POST /alerts/{alert_id}/ack"),
    ]
    assert caplog.text.count("BASEWATCH_API_TOKEN, which is deprecated") == 1
    assert call(f"{api_with_token}/csm/csm-a", headers=bearer).status == 200
    page_post = call(
        f"{api_with_token}/csm/csm-a/alerts/{alert_id}/feedback",
        "POST",
        data=b"useful=true",
        headers={**bearer, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert page_post.status == 403
    assert "sign in as a user" in page_post.text


# -- CSM pages --------------------------------------------------------------------------------


def form_post(url: str, fields: dict[str, str]) -> Answer:
    data = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return call(url, "POST", data=data, headers=headers)


def test_the_csm_page_lists_its_alerts_and_the_ack_form_works(
    api: str, conn: psycopg.Connection
) -> None:
    first, other = raise_alerts(
        conn, saturation(reason="<script>alert(1)</script> load"), decline()
    )
    page = call(f"{api}/csm/csm-a")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    text = page.text
    assert "Alerts of Ada Alvarez (csm-a)" in text
    assert f'id="alert-{first}"' in text
    assert f'id="alert-{other}"' not in text  # csm-b's
    assert "capacity_saturation" in text
    assert '<a href="/accounts/acct-1">Acme &lt;Air&gt; &amp; Co (acct-1)</a> / asset-7' in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; load" in text
    assert "<script>" not in text
    # money always with its currency (the reporting currency, EUR by default)
    assert "<td>0.80</td><td class=num>1,200.00 EUR</td><td class=num>960.00 EUR</td>" in text
    due = call(f"{api}/alerts/{first}").json["due_at"][:10]
    assert f"<td>{due}</td>" in text

    actions = re.findall(r'<form method="post" action="([^"]+)"', text)
    assert actions.pop(0) == "/csm/csm-a/alerts/bulk"  # the form of the ticked alerts
    assert actions == [
        f"/csm/csm-a/alerts/{first}/{action}" for action in ("ack", "snooze", "resolve", "feedback")
    ]
    posted = form_post(api + actions[0], {})
    assert posted.status == 303
    location = posted.headers["Location"]
    assert location == f"/csm/csm-a?done=ack&alert={first}#alert-{first}"
    assert status_of(conn, first)[:2] == ("acknowledged", ADMIN)  # the user, not the page
    assert alert_history(conn, first)[-1]["actor"] == ADMIN

    after = call(api + location).text
    assert f"Alert #{first} acknowledged." in after
    assert "acknowledged" in re.findall(rf'id="alert-{first}".*?</p>', after)[0]
    assert f"/alerts/{first}/ack" not in after  # no second acknowledgement offered


def test_page_snooze_resolve_feedback_and_their_errors(api: str, conn: psycopg.Connection) -> None:
    first, other = raise_alerts(conn, saturation(), decline())
    base = f"{api}/csm/csm-a/alerts/{first}"

    no_reason = form_post(f"{base}/snooze", {"reason": ""})
    assert no_reason.status == 400
    assert "a snooze needs a reason" in no_reason.text
    assert no_reason.headers["Content-Type"].startswith("text/html")
    assert form_post(f"{base}/snooze", {"reason": "waiting for the budget"}).status == 303
    *_, until, reason = status_of(conn, first)
    assert reason == "waiting for the budget"
    assert dt.timedelta(days=6, hours=23) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7)
    assert "snoozed until" in call(f"{api}/csm/csm-a").text

    assert form_post(f"{base}/feedback", {"useful": "false"}).status == 303
    assert status_of(conn, first)[4] == "not_useful"
    assert form_post(f"{base}/resolve", {"outcome": "maybe"}).status == 400
    assert form_post(f"{base}/resolve", {"outcome": "dismissed", "note": "dup"}).status == 303
    assert status_of(conn, first)[:4] == ("dismissed", None, ADMIN, "dup")
    assert f'id="alert-{first}"' not in call(f"{api}/csm/csm-a").text
    assert "No active alerts." in call(f"{api}/csm/csm-a").text

    again = form_post(f"{base}/resolve", {"outcome": "won"})
    assert again.status == 409
    assert "is dismissed" in again.text
    foreign = form_post(f"{api}/csm/csm-a/alerts/{other}/ack", {})
    assert foreign.status == 404
    assert status_of(conn, other)[0] == "open"
    missing = call(f"{api}/csm/nobody")
    assert (missing.status, "no CSM &#39;nobody&#39;" in missing.text) == (404, True)


def test_the_index_lists_csms_with_their_alert_counts(api: str, conn: psycopg.Connection) -> None:
    first, _ = raise_alerts(conn, saturation(), decline())
    raise_alerts(conn, decline("acct-1"))
    call(f"{api}/alerts/{first}/ack", "POST", body={"by": "ada"})
    text = call(f"{api}/").text
    rows = re.findall(
        r"<tr><td><a href=\"([^\"]+)\">([^<]+)</a></td><td>([^<]+)</td>"
        r"<td class=num>(\d+)</td><td class=num>(\d+)</td></tr>",
        text,
    )
    assert rows == [
        ("/csm/csm-a", "Ada Alvarez", "csm-a", "1", "1"),
        ("/csm/csm-b", "Ben Brook", "csm-b", "1", "0"),
        ("/csm/csm-c", "Cy Cole", "csm-c", "0", "0"),
    ]


# -- health and NRR ---------------------------------------------------------------------------


def test_account_health_is_the_latest_row(api: str, conn: psycopg.Connection) -> None:
    for as_of, probability in ((NOW - dt.timedelta(days=1), 0.2), (NOW, 0.35)):
        conn.execute(
            "INSERT INTO account_health (account_id, as_of, probability, horizon_days, method,"
            " factors) VALUES ('acct-1', %s, %s, 90, 'weighted', %s)",
            (as_of, probability, Jsonb({"top": [{"text": "usage down 30%"}]})),
        )
    answer = call(f"{api}/accounts/acct-1/health")
    assert answer.status == 200
    assert answer.json == as_json(latest_health(conn, "acct-1")[0])
    assert (answer.json["probability"], answer.json["top_factors"]) == (0.35, ["usage down 30%"])
    unknown = call(f"{api}/accounts/acct-9/health")
    assert unknown.status == 404
    assert "no health recorded for account 'acct-9'" in unknown.json["error"]


def test_nrr_headline(api: str, conn: psycopg.Connection, db_url: str) -> None:
    fx.reset(conn)  # empties csms, and with them (CASCADE) the users
    _BEARER[api] = personal_token(db_url, ADMIN)
    empty = call(f"{api}/nrr")
    assert (empty.status, "ledger is empty" in empty.json["error"]) == (404, True)
    fx.account(conn, "acme")
    fx.account(conn, "brio")
    fx.contract(conn, "a1", "acme", "2024-01-01", fee="1000")
    fx.contract(conn, "a2", "acme", "2024-02-01", fee="100")
    fx.contract(conn, "b1", "brio", "2024-01-01", "2024-01-31", fee="500")
    rebuild(conn, "EUR", since=fx.month("2024-01"), through=fx.month("2024-03"), full=True)

    answer = call(f"{api}/nrr?month=2024-02")
    assert answer.status == 200
    assert answer.json == as_json(headline(conn, "EUR", fx.month("2024-02")).document())
    assert answer.json["month"] == "2024-02"
    assert answer.json["mrr"]["total"] == "1100.00"
    assert call(f"{api}/nrr").json["month"] == "2024-03"
    assert call(f"{api}/nrr?month=2024-13").status == 400
    outside = call(f"{api}/nrr?month=2023-05")
    assert (outside.status, "outside the ledger" in outside.json["error"]) == (404, True)


# -- the process ------------------------------------------------------------------------------


def test_basewatch_api_serves_until_sigterm(db_url: str) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    environ["BASEWATCH_DATABASE_URL"] = db_url
    lines = []
    with subprocess.Popen(
        [sys.executable, "-m", "basewatch", "api", "--port", "0"],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        try:
            for line in process.stderr:
                lines.append(line)
                found = re.search(r"api listening on (http://127\.0\.0\.1:\d+)", line)
                if found:
                    break
            assert found, "".join(lines)
            assert call(f"{found[1]}/healthz").status == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
            lines += process.stderr.readlines()
        finally:
            if process.poll() is None:
                process.kill()
    text = "".join(lines)
    assert "GET /healthz 200" in text
    assert "SIGTERM received" in text
    assert "api stopped" in text
    assert "Traceback" not in text


def test_alerts_list_pages_with_limit_and_offset_and_filters_by_family(
    api: str, conn: psycopg.Connection
) -> None:
    findings = [dataclasses.replace(saturation(), subject=f"asset-{n}") for n in range(3)]
    raise_alerts(conn, *findings, decline())
    every = call(f"{api}/alerts?limit=10").json
    assert len(every) == 4
    pages = [call(f"{api}/alerts?limit=2&offset={offset}").json for offset in (0, 2, 4)]
    assert [a["alert_id"] for page in pages for a in page] == [a["alert_id"] for a in every]
    assert pages[2] == []
    risk = call(f"{api}/alerts?family=risk").json
    assert [a["kind"] for a in risk] == ["usage_decline"]
    assert call(f"{api}/alerts?offset=-1").status == 400
    nul = call(f"{api}/alerts?kind=%00")  # found by schemathesis: was a 500
    assert (nul.status, "cannot take" in nul.json["error"]) == (400, True)
