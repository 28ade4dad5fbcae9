"""Users in the API (issue 15 item 2), against a running ``basewatch api`` and a real database:
sign-in, the session cookie and its end at sign-out, CSRF on every state-changing form, the
lockout as a browser sees it, personal tokens and their revocation, the actor of a change,
the audit rows, and the authorization matrix: every route x {anonymous, csm of the account,
csm of another account, manager, admin, revoked token}, from one table that must name every
route of the app (``basewatch.api.app.route_table``)."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from basewatch.api.app import route_table
from basewatch.auth import MAX_FAILURES
from basewatch.users import create_token, create_user, revoke_token
from nrr.ledger import rebuild
from tests.basewatch.test_api import (
    REGISTRY,
    Answer,
    api_config,
    call,
    decline,
    raise_alerts,
    running,
    saturation,
    status_of,
)
from tests.basewatch.test_cli import run
from tests.nrr import fix_nrr as fx

PASSWORD = "a long test password"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
USERS = {  # username: (role, csm_id)
    "carla": ("csm", "csm-a"),  # the CSM of acct-1 (csm-a)
    "bert": ("csm", "csm-b"),  # the CSM of another account
    "mona": ("manager", None),
    "adam": ("admin", None),
}


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """NRR figures (fx.reset empties the registry, so first), the registry, the users, an
    account health row of acct-1; alerts are raised by each test."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        fx.reset(connection)
        connection.execute("TRUNCATE users, signin_throttle, sessions, api_tokens, audit_log")
        connection.execute("TRUNCATE alerts, alert_history, outbox, account_health")
        fx.account(connection, "acme")
        fx.contract(connection, "a1", "acme", "2024-01-01", fee="1000")
        rebuild(
            connection, "EUR", since=fx.month("2024-01"), through=fx.month("2024-02"), full=True
        )
        connection.execute(REGISTRY)
        connection.execute(
            "INSERT INTO account_health (account_id, as_of, probability, horizon_days, method,"
            " factors) VALUES ('acct-1', now(), 0.3, 90, 'weighted', %s)",
            (Jsonb({"top": []}),),
        )
        for name, (role, csm_id) in USERS.items():
            create_user(connection, name, role, PASSWORD, csm_id=csm_id)
        yield connection


@pytest.fixture
def api(db_url: str, conn: psycopg.Connection) -> Iterator[str]:
    with running(api_config(db_url)) as url:
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(api: str, username: str, password: str = PASSWORD) -> Answer:
    data = urllib.parse.urlencode({"username": username, "password": password}).encode()
    return call(f"{api}/signin", "POST", data=data, headers=FORM, auth=False)


def session_of(answer: Answer) -> dict[str, str]:
    """The Cookie header a browser would send after ``answer`` set the session cookie."""
    cookie = answer.headers["Set-Cookie"]
    return {"Cookie": cookie.split(";")[0]}


def form(url: str, fields: dict[str, str], headers: dict[str, str]) -> Answer:
    data = urllib.parse.urlencode(fields).encode()
    return call(url, "POST", data=data, headers={**FORM, **headers}, auth=False)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert found, page
    return found[1]


# -- sign-in, session, CSRF, sign-out ----------------------------------------------------------


def test_sign_in_sets_a_safe_cookie_and_the_csm_gets_their_page(
    api: str, conn: psycopg.Connection
) -> None:
    first, other = raise_alerts(conn, saturation(), decline())
    form_page = call(f"{api}/signin", auth=False)
    assert form_page.status == 200
    assert 'name="password" type="password"' in form_page.text
    signed = sign_in(api, "carla")
    assert (signed.status, signed.headers["Location"]) == (303, "/csm/csm-a")
    attributes = [a.strip() for a in signed.headers["Set-Cookie"].split(";")]
    assert attributes[0].startswith("basewatch_session=")
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # BASEWATCH_API_PUBLIC_URL is not https
    session = session_of(signed)
    # only a hash of the session id is stored
    sid = session["Cookie"].split("=", 1)[1]
    (text,) = conn.execute(
        "SELECT string_agg(row_to_json(s)::text, '') FROM sessions s"
    ).fetchone() or ("",)
    assert sid not in text

    page = call(f"{api}/csm/csm-a", headers=session, auth=False)
    assert page.status == 200
    assert f'id="alert-{first}"' in page.text
    assert "Signed in as carla (carla, csm)" in page.text
    assert "?token=" not in page.text
    # the csm's index is their page; another csm's page and alerts read as unknown
    index = call(f"{api}/", headers=session, auth=False)
    assert (index.status, index.headers["Location"]) == (303, "/csm/csm-a")
    assert call(f"{api}/csm/csm-b", headers=session, auth=False).status == 404
    assert call(f"{api}/alerts/{other}", headers=session, auth=False).status == 404
    listed = call(f"{api}/alerts?status=all", headers=session, auth=False).json
    assert [a["alert_id"] for a in listed] == [first]
    assert call(f"{api}/alerts?owner=csm-b", headers=session, auth=False).json == []


def test_the_secure_flag_follows_the_public_url(db_url: str, conn: psycopg.Connection) -> None:
    config = dataclasses.replace(api_config(db_url), public_url="https://basewatch.example")
    with running(config) as url:
        signed = sign_in(url, "mona")
    assert signed.status == 303
    assert "Secure" in [a.strip() for a in signed.headers["Set-Cookie"].split(";")]


def test_forms_need_the_sessions_csrf_token(api: str, conn: psycopg.Connection) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    session = session_of(sign_in(api, "carla"))
    page = call(f"{api}/csm/csm-a", headers=session, auth=False).text
    token = csrf_of(page)
    # 4 alert forms, the bulk form and sign-out
    assert page.count(f'name="csrf_token" value="{token}"') == 6
    ack = f"{api}/csm/csm-a/alerts/{alert_id}/ack"
    missing = form(ack, {}, session)
    assert missing.status == 403
    assert "CSRF" in missing.text
    wrong = form(ack, {"csrf_token": "0" * 64}, session)
    assert wrong.status == 403
    other_session = session_of(sign_in(api, "carla"))
    other_token = csrf_of(call(f"{api}/csm/csm-a", headers=other_session, auth=False).text)
    assert form(ack, {"csrf_token": other_token}, session).status == 403  # another session's
    assert status_of(conn, alert_id)[0] == "open"
    # JSON with the cookie: the token in X-CSRF-Token
    json_ack = f"{api}/alerts/{alert_id}/ack"
    assert call(json_ack, "POST", body={}, headers=session, auth=False).status == 403
    assert status_of(conn, alert_id)[0] == "open"
    done = form(ack, {"csrf_token": token}, session)
    assert done.status == 303
    assert status_of(conn, alert_id)[:2] == ("acknowledged", "carla")
    resolved = call(
        f"{api}/alerts/{alert_id}/resolve",
        "POST",
        body={"outcome": "won"},
        headers={**session, "X-CSRF-Token": token},
        auth=False,
    )
    assert resolved.status == 200
    assert resolved.json["closed_by"] == "carla"


def test_sign_out_ends_the_session_server_side(api: str, conn: psycopg.Connection) -> None:
    session = session_of(sign_in(api, "mona"))
    page = call(f"{api}/", headers=session, auth=False)
    assert page.status == 200
    token = csrf_of(page.text)
    assert form(f"{api}/signout", {}, session).status == 403  # CSRF here too
    out = form(f"{api}/signout", {"csrf_token": token}, session)
    assert (out.status, out.headers["Location"]) == (303, "/signin")
    assert "Max-Age=0" in out.headers["Set-Cookie"]
    # the old cookie (a browser or a thief that kept it) no longer works
    again = call(f"{api}/", headers=session, auth=False)
    assert (again.status, again.headers["Location"]) == (303, "/signin")
    assert call(f"{api}/alerts", headers=session, auth=False).status == 401
    ended = conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL").fetchone()
    assert ended == (1,)


def test_lockout_after_repeated_bad_passwords_over_http(
    api: str, db_url: str, conn: psycopg.Connection
) -> None:
    for _ in range(MAX_FAILURES - 1):
        wrong = sign_in(api, "mona", "guess")
        assert wrong.status == 401
        assert "wrong username or password" in wrong.text
        assert "Set-Cookie" not in wrong.headers
    locked = sign_in(api, "mona", "guess")
    assert locked.status == 429
    assert "signing in is blocked until" in locked.text
    assert int(locked.headers["Retry-After"]) > 800
    assert sign_in(api, "mona").status == 429  # the right password too, until then
    # the same for a name nobody has: the answers do not tell who exists
    for _ in range(MAX_FAILURES - 1):
        assert sign_in(api, "nobody", "guess").status == 401
    assert sign_in(api, "nobody", "guess").status == 429
    reset = run("users", "reset-password", "mona", "--json", db_url=db_url)
    assert reset.returncode == 0, reset.stderr
    assert sign_in(api, "mona", PASSWORD).status == 401  # the old password is gone
    import json

    assert sign_in(api, "mona", json.loads(reset.stdout)["password"]).status == 303


# -- tokens, the actor, the audit --------------------------------------------------------------


def test_the_actor_is_the_user_and_every_action_is_audited(
    api: str, conn: psycopg.Connection
) -> None:
    (alert_id,) = raise_alerts(conn, saturation())
    _, token = create_token(conn, "carla", "script")
    headers = bearer(token)
    base = f"{api}/alerts/{alert_id}"
    someone_else = call(f"{base}/ack", "POST", body={"by": "ada"}, headers=headers)
    assert someone_else.status == 403
    assert (
        "'by' must be left out or be the authenticated user (carla)" in someone_else.json["error"]
    )
    assert status_of(conn, alert_id)[0] == "open"
    assert call(f"{base}/ack", "POST", body={"by": "carla"}, headers=headers).status == 200
    snoozed = call(f"{base}/snooze", "POST", body={"hours": 2, "reason": "r"}, headers=headers)
    assert snoozed.status == 200
    assert call(f"{base}/feedback", "POST", body={"useful": True}, headers=headers).status == 200
    history = call(base, headers=headers).json["history"]
    assert {h["actor"] for h in history if h["action"] != "opened"} == {"carla"}
    (carla_id,) = conn.execute("SELECT user_id FROM users WHERE username = 'carla'").fetchone() or (
        0,
    )
    audit = conn.execute(
        "SELECT actor_user_id, actor, action, source, details->>'via' FROM audit_log"
        " WHERE target = %s ORDER BY audit_id",
        (f"alert:{alert_id}",),
    ).fetchall()
    assert audit == [
        (carla_id, "carla", "alert.ack", "api", "token"),
        (carla_id, "carla", "alert.snooze", "api", "token"),
        (carla_id, "carla", "alert.feedback", "api", "token"),
    ]
    # a refused change leaves no audit row
    assert call(f"{base}/ack", "POST", body={}, headers=headers).status == 409
    assert len(conn.execute("SELECT 1 FROM audit_log WHERE action = 'alert.ack'").fetchall()) == 1
    # a page action by a session: source page
    session = session_of(sign_in(api, "mona"))
    token_field = csrf_of(call(f"{api}/csm/csm-a", headers=session, auth=False).text)
    page_url = f"{api}/csm/csm-a/alerts/{alert_id}/resolve"
    answer = form(page_url, {"csrf_token": token_field, "outcome": "won"}, session)
    assert answer.status == 303
    last = conn.execute(
        "SELECT actor, action, source, details->>'outcome' FROM audit_log"
        " ORDER BY audit_id DESC LIMIT 1"
    ).fetchone()
    assert last == ("mona", "alert.resolve", "page", "won")


def test_a_revoked_token_is_refused(api: str, conn: psycopg.Connection) -> None:
    row, token = create_token(conn, "mona", "export")
    assert call(f"{api}/nrr?month=2024-02", headers=bearer(token)).status == 200
    revoke_token(conn, row.token_id, now=dt_now())
    refused = call(f"{api}/nrr?month=2024-02", headers=bearer(token))
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="basewatch"'


def dt_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


# -- the authorization matrix ------------------------------------------------------------------

WHO = ("anonymous", "csm_own", "csm_other", "manager", "admin", "revoked")

# (method, route pattern) -> (an example request, the expected status for each of WHO). The
# example is built from the alert of acct-1 (csm-a's). Every route of the app (route_table) must
# be here: a new route without an entry fails test_the_matrix_names_every_route.
Example = Callable[[int], tuple[str, bytes | None, dict[str, str]]]
_J = {"Content-Type": "application/json"}


def _json(path: str, body: str = "{}") -> Example:
    return lambda n: (path.format(n=n), body.encode(), _J)


def _form(path: str, body: str = "") -> Example:
    return lambda n: (path.format(n=n), body.format(n=n).encode(), FORM)


def _get(path: str) -> Example:
    return lambda n: (path.format(n=n), None, {})


MATRIX: dict[tuple[str, str], tuple[Example, tuple[int, ...]]] = {
    ("GET", "/healthz"): (_get("/healthz"), (200, 200, 200, 200, 200, 200)),
    ("GET", "/livez"): (_get("/livez"), (200, 200, 200, 200, 200, 200)),
    ("GET", "/readyz"): (_get("/readyz"), (200, 200, 200, 200, 200, 200)),
    ("GET", "/metrics"): (_get("/metrics"), (200, 200, 200, 200, 200, 200)),
    ("GET", "/openapi.json"): (_get("/openapi.json"), (200, 200, 200, 200, 200, 200)),
    ("GET", "/alerts"): (_get("/alerts"), (401, 200, 200, 200, 200, 401)),
    ("GET", "/alerts/{alert_id:int}"): (_get("/alerts/{n}"), (401, 200, 404, 200, 200, 401)),
    ("POST", "/alerts/{alert_id:int}/ack"): (
        _json("/alerts/{n}/ack"),
        (401, 200, 404, 200, 200, 401),
    ),
    ("POST", "/alerts/{alert_id:int}/snooze"): (
        _json("/alerts/{n}/snooze", '{"hours": 1, "reason": "r"}'),
        (401, 200, 404, 200, 200, 401),
    ),
    ("POST", "/alerts/{alert_id:int}/resolve"): (
        _json("/alerts/{n}/resolve", '{"outcome": "won"}'),
        (401, 200, 404, 200, 200, 401),
    ),
    ("POST", "/alerts/{alert_id:int}/feedback"): (
        _json("/alerts/{n}/feedback", '{"useful": true}'),
        (401, 200, 404, 200, 200, 401),
    ),
    ("GET", "/accounts/{account_id}/health"): (
        _get("/accounts/acct-1/health"),
        (401, 200, 404, 200, 200, 401),
    ),
    ("GET", "/nrr"): (_get("/nrr?month=2024-02"), (401, 403, 403, 200, 200, 401)),
    ("GET", "/signin"): (_get("/signin"), (200, 200, 200, 200, 200, 200)),
    # a wrong password for a fresh name each time (public: the bearer token plays no part)
    ("POST", "/signin"): (
        lambda n: ("/signin", f"username=x{uuid.uuid4().hex[:8]}&password=p".encode(), FORM),
        (401, 401, 401, 401, 401, 401),
    ),
    # a bearer token has no session to end
    ("POST", "/signout"): (_form("/signout"), (401, 400, 400, 400, 400, 401)),
    ("GET", "/"): (_get("/"), (303, 303, 303, 200, 200, 401)),
    ("GET", "/csm/{csm_id}"): (_get("/csm/csm-a"), (303, 200, 404, 200, 200, 401)),
    ("POST", "/csm/{csm_id}/alerts/{alert_id:int}/{action}"): (
        _form("/csm/csm-a/alerts/{n}/ack"),
        (401, 303, 404, 303, 303, 401),
    ),
    ("GET", "/csm/{csm_id}/accounts"): (
        _get("/csm/csm-a/accounts"),
        (303, 200, 404, 200, 200, 401),
    ),
    # a csm is sent to their own list
    ("GET", "/accounts"): (_get("/accounts"), (303, 303, 303, 200, 200, 401)),
    ("GET", "/accounts/{account_id}"): (_get("/accounts/acct-1"), (303, 200, 404, 200, 200, 401)),
    ("GET", "/accounts/{account_id}/review"): (
        _get("/accounts/acct-1/review"),
        (303, 200, 404, 200, 200, 401),
    ),
    ("GET", "/team"): (_get("/team"), (303, 403, 403, 200, 200, 401)),
    ("GET", "/reports/nrr"): (_get("/reports/nrr?month=2024-02"), (303, 403, 403, 200, 200, 401)),
    ("POST", "/csm/{csm_id}/alerts/bulk"): (
        lambda n: ("/csm/csm-a/alerts/bulk", f"action=ack&alert={n}".encode(), FORM),
        (401, 303, 404, 303, 303, 401),
    ),
}


def test_the_matrix_names_every_route() -> None:
    routes = {(r.method, r.path) for r in route_table()}
    assert routes == set(MATRIX), (
        f"routes without a matrix entry: {sorted(routes - set(MATRIX))}; "
        f"entries without a route: {sorted(set(MATRIX) - routes)}"
    )


def _tokens(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    for who, name in (
        ("csm_own", "carla"),
        ("csm_other", "bert"),
        ("manager", "mona"),
        ("admin", "adam"),
    ):
        headers[who] = bearer(create_token(conn, name, "matrix")[1])
    row, revoked = create_token(conn, "adam", "revoked")
    revoke_token(conn, row.token_id, now=dt_now())
    headers["revoked"] = bearer(revoked)
    return headers


@pytest.mark.parametrize("route", list(MATRIX), ids=[f"{m} {p}" for m, p in MATRIX])
def test_authorization_matrix(api: str, conn: psycopg.Connection, route: tuple[str, str]) -> None:
    example, expected = MATRIX[route]
    method = route[0]
    headers_of = _tokens(conn)
    got = []
    for who in WHO:
        conn.execute("TRUNCATE alerts, alert_history, outbox")
        (alert_id,) = raise_alerts(conn, saturation())  # acct-1, csm-a's
        path, data, content = example(alert_id)
        answer = call(
            api + path, method, data=data, headers={**content, **headers_of[who]}, auth=False
        )
        got.append(answer.status)
    assert dict(zip(WHO, got, strict=True)) == dict(zip(WHO, expected, strict=True))
