"""The demo's workspace users (``basewatch.demo.ensure_demo_users``) on a real database: an
admin and one csm user per CSM, generated passwords that verify, a second run that resets them
instead of failing or duplicating, and a user of the same name that is not the demo's left
alone; and what the demo prints about opening the workspace."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest

from basewatch.demo import (
    DEMO_ADMIN,
    ensure_demo_users,
    render_workspace,
    signin_url,
    workspace,
)
from basewatch.users import create_user, disable_user, generate_password, password_hash_of
from basewatch.users import verify_password as verify
from core.settings import Settings

NOW = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
CSMS = [{"csm_id": "csm-01", "name": "Ada Alvarez"}, {"csm_id": "CSM-02", "name": "Ben Brook"}]


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE users, audit_log RESTART IDENTITY CASCADE")
        connection.execute(
            "INSERT INTO csms (csm_id, name) VALUES ('csm-01', 'Ada Alvarez'),"
            " ('CSM-02', 'Ben Brook'), ('csm-03', 'Cy Cole') ON CONFLICT DO NOTHING"
        )
        yield connection


def signs_in(conn: psycopg.Connection, username: str, password: str) -> bool:
    found = password_hash_of(conn, username)
    return found is not None and verify(found[1], password)[0]


def test_the_demo_users_are_created_with_generated_passwords(conn: psycopg.Connection) -> None:
    users = ensure_demo_users(conn, CSMS, now=NOW)
    assert [(u["username"], u["role"], u["csm_id"], u["status"]) for u in users] == [
        (DEMO_ADMIN, "admin", None, "created"),
        ("csm-01", "csm", "csm-01", "created"),
        ("csm-02", "csm", "CSM-02", "created"),  # usernames are lower case
    ]
    passwords = [u["password"] for u in users]
    assert len(set(passwords)) == 3
    assert all(len(p) >= 12 for p in passwords)
    for u in users:
        assert signs_in(conn, u["username"], u["password"])
    rows = conn.execute("SELECT username, role, csm_id FROM users ORDER BY username").fetchall()
    assert rows == [
        ("csm-01", "csm", "csm-01"),
        ("csm-02", "csm", "CSM-02"),
        (DEMO_ADMIN, "admin", None),
    ]
    audit = conn.execute("SELECT action, target, actor FROM audit_log ORDER BY audit_id").fetchall()
    assert audit[0] == ("user.create", f"user:{DEMO_ADMIN}", "basewatch demo")
    assert len(audit) == 3


def test_a_second_run_resets_the_passwords_without_duplicating(conn: psycopg.Connection) -> None:
    first = ensure_demo_users(conn, CSMS, now=NOW)
    second = ensure_demo_users(conn, CSMS, now=NOW + dt.timedelta(minutes=5))
    assert [u["status"] for u in second] == ["password reset"] * 3
    row = conn.execute("SELECT count(*) FROM users").fetchone()
    assert row == (3,)
    for old, new in zip(first, second, strict=True):
        assert new["password"] != old["password"]
        assert signs_in(conn, new["username"], new["password"])  # every printed one works
        assert not signs_in(conn, old["username"], old["password"])


def test_a_user_of_that_name_that_is_not_the_demos_is_left_alone(
    conn: psycopg.Connection,
) -> None:
    theirs = generate_password()
    create_user(conn, "csm-01", "csm", theirs, csm_id="csm-03")  # another CSM
    create_user(conn, DEMO_ADMIN, "admin", generate_password())
    disable_user(conn, DEMO_ADMIN, now=NOW)
    users = {u["username"]: u for u in ensure_demo_users(conn, CSMS, now=NOW)}
    for name in ("csm-01", DEMO_ADMIN):
        assert users[name]["password"] is None
        assert users[name]["status"] == "not the demo's user: left alone"
    assert signs_in(conn, "csm-01", theirs)
    assert users["csm-02"]["status"] == "created"
    assert signs_in(conn, "csm-02", users["csm-02"]["password"])


def test_the_workspace_says_how_to_open_it() -> None:
    users = [
        {"username": DEMO_ADMIN, "role": "admin", "csm_id": None, "name": "Demo admin",
         "password": "pw-admin-123456", "status": "created"},
        {"username": "csm-01", "role": "csm", "csm_id": "csm-01", "name": "Ada Alvarez",
         "password": None, "status": "not the demo's user: left alone"},
    ]  # fmt: skip
    url = "host=db.example.test port=5433 user=bw password=s3cret dbname=basewatch_demo"
    ws = workspace(Settings(api_port=8181), url, users)
    assert ws["signin_url"] == "http://127.0.0.1:8181/signin"
    assert ws["start_api"].endswith(" basewatch api")
    assert "dbname=basewatch_demo" in ws["start_api"]
    assert "port=5433" in ws["start_api"]
    assert "s3cret" not in ws["start_api"]  # the reader's own database password is not printed
    text = render_workspace(ws)
    assert text.startswith("Open the workspace")
    assert "pw-admin-123456" in text
    assert "(not the demo's user: left alone)" in text
    assert "basewatch users reset-password" in text
    public = Settings(api_public_url="https://bw.example.test/", api_host="0.0.0.0")
    assert signin_url(public) == "https://bw.example.test/signin"
    assert signin_url(Settings(api_host="0.0.0.0")) == "http://127.0.0.1:8080/signin"
    assert signin_url(Settings(api_host="::1", api_port=9000)) == "http://[::1]:9000/signin"
