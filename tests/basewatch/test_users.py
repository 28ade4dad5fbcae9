"""Users, passwords, the sign-in lockout, sessions, personal tokens and the ``basewatch users``
CLI, on a real database (``basewatch.users``, ``basewatch.auth``, ``basewatch.users_commands``).
The API's use of them is in ``test_users_api.py``."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from argon2 import PasswordHasher

from basewatch.auth import (
    LOCKOUT,
    MAX_FAILURES,
    SESSION_IDLE,
    SESSION_MAX_AGE,
    WRONG,
    SignInRefused,
    csrf_ok,
    csrf_token,
    end_session,
    sign_in,
    user_of_session,
)
from basewatch.users import (
    create_token,
    create_user,
    disable_user,
    hash_password,
    revoke_token,
    set_password,
    token_hash,
    user_of_token,
    verify_password,
)
from core.errors import InputError, NotFound
from tests.basewatch.test_cli import run

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        connection.execute("TRUNCATE users, signin_throttle, sessions, api_tokens, audit_log")
        connection.execute(
            "INSERT INTO csms (csm_id, name) VALUES ('csm-a', 'Ada'), ('csm-b', 'Ben')"
            " ON CONFLICT DO NOTHING"
        )
        yield connection


def on(
    conn: psycopg.Connection,
) -> Callable[[], contextlib.AbstractContextManager[psycopg.Connection]]:
    """``sign_in``'s connection source for a test: the test's one connection each time."""
    return lambda: contextlib.nullcontext(conn)


# -- passwords --------------------------------------------------------------------------------


def test_passwords_are_argon2id_hashes_that_verify_only_the_password() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert verify_password(stored, PASSWORD) == (True, None)
    assert verify_password(stored, PASSWORD + "!") == (False, None)
    assert verify_password("not a hash", PASSWORD) == (False, None)


def test_at_most_two_argon2_computations_run_at_once() -> None:
    """Each takes 64 MiB: a burst of sign-ins waits for a slot instead of taking a gigabyte."""

    from basewatch import users

    stored = hash_password(PASSWORD)
    for _ in range(users.ARGON2_AT_ONCE):
        assert users._ARGON2_SLOTS.acquire(timeout=5)  # every slot busy
    done = threading.Event()

    def verify() -> None:
        verify_password(stored, PASSWORD)
        done.set()

    waiting = threading.Thread(target=verify)
    waiting.start()
    try:
        assert not done.wait(0.5)  # it waits for a slot
    finally:
        for _ in range(users.ARGON2_AT_ONCE):
            users._ARGON2_SLOTS.release()
    assert done.wait(10)
    waiting.join()


def test_a_hash_with_old_parameters_is_replaced_at_sign_in(conn: psycopg.Connection) -> None:
    user = create_user(conn, "ada", "admin", PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    conn.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (weak, user.user_id))
    ok, new_hash = verify_password(weak, PASSWORD)
    assert ok
    assert new_hash is not None
    assert "m=65536" in new_hash
    sign_in(on(conn), "ada", PASSWORD, now=NOW)
    (stored,) = conn.execute("SELECT password_hash FROM users").fetchone() or ("",)
    assert stored != weak
    assert "m=65536" in stored
    assert verify_password(stored, PASSWORD) == (True, None)


def test_no_connection_is_held_while_the_password_is_checked(conn: psycopg.Connection) -> None:
    """A burst of sign-ins waits for Argon2 slots without taking the API's pooled
    connections: the lock state and hash are read, the connection handed back, and only then
    the password checked."""
    from basewatch import users

    create_user(conn, "ada", "admin", PASSWORD)
    held = {"open": 0, "opened": 0}

    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        held["open"] += 1
        held["opened"] += 1
        try:
            yield conn
        finally:
            held["open"] -= 1

    result: list[object] = []
    for _ in range(users.ARGON2_AT_ONCE):
        assert users._ARGON2_SLOTS.acquire(timeout=5)  # every slot busy: the check must wait
    signing = threading.Thread(
        target=lambda: result.append(sign_in(connect, "ada", PASSWORD, now=NOW))
    )
    signing.start()
    try:
        for _ in range(100):
            if held["opened"]:
                break
            threading.Event().wait(0.02)
        threading.Event().wait(0.2)
        assert held == {"open": 0, "opened": 1}  # read, handed back, now waiting for a slot
    finally:
        for _ in range(users.ARGON2_AT_ONCE):
            users._ARGON2_SLOTS.release()
    signing.join(10)
    assert held == {"open": 0, "opened": 2}
    assert [type(r).__name__ for r in result] == ["SignedIn"]


def test_a_password_reset_during_the_check_refuses_the_old_password(
    conn: psycopg.Connection,
) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    calls = {"n": 0}

    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        calls["n"] += 1
        if calls["n"] == 2:  # between the read and the record: an admin resets the password
            set_password(conn, "ada", "a brand new password", now=NOW)
        yield conn

    with pytest.raises(SignInRefused) as refused:
        sign_in(connect, "ada", PASSWORD, now=NOW)
    assert refused.value.message == WRONG
    assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)


def test_user_rules(conn: psycopg.Connection) -> None:
    create_user(conn, "Ada", "admin", PASSWORD)  # stored lower-case
    with pytest.raises(InputError, match="exists already"):
        create_user(conn, "ada", "manager", PASSWORD)
    with pytest.raises(InputError, match="needs a CSM"):
        create_user(conn, "carla", "csm", PASSWORD)
    with pytest.raises(InputError, match="only a csm user has a CSM"):
        create_user(conn, "mona", "manager", PASSWORD, csm_id="csm-a")
    with pytest.raises(NotFound, match="no CSM 'csm-z'"):
        create_user(conn, "carla", "csm", PASSWORD, csm_id="csm-z")
    with pytest.raises(InputError, match="at least 12 characters"):
        create_user(conn, "carla", "csm", "short", csm_id="csm-a")
    with pytest.raises(InputError, match="not a username"):
        create_user(conn, "carla smith", "csm", PASSWORD, csm_id="csm-a")
    with pytest.raises(InputError, match="role must be one of"):
        create_user(conn, "root", "superuser", PASSWORD)
    carla = create_user(conn, "carla", "csm", PASSWORD, csm_id="csm-a", email="c@example.test")
    assert (carla.role, carla.csm_id, carla.disabled) == ("csm", "csm-a", False)
    # the table refuses a csm without a CSM even when written around the library
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO users (username, role, password_hash) VALUES ('x', 'csm', '$argon2id$')"
        )


# -- sign-in and lockout ----------------------------------------------------------------------


def test_lockout_after_repeated_bad_passwords_says_until_when_and_a_reset_lifts_it(
    conn: psycopg.Connection,
) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    for n in range(MAX_FAILURES - 1):
        with pytest.raises(SignInRefused) as wrong:
            sign_in(on(conn), "ada", "guess", now=NOW + dt.timedelta(seconds=n))
        assert (wrong.value.message, wrong.value.locked_until) == (WRONG, None)
    with pytest.raises(SignInRefused) as locked:
        sign_in(on(conn), "ada", "guess", now=NOW + dt.timedelta(seconds=10))
    until = NOW + dt.timedelta(seconds=10) + LOCKOUT
    assert locked.value.locked_until == until
    assert f"blocked until {until:%Y-%m-%d %H:%M} UTC" in locked.value.message
    assert "basewatch users reset-password" in locked.value.message
    # locked: even the right password is refused until then
    with pytest.raises(SignInRefused, match="blocked until"):
        sign_in(on(conn), "ada", PASSWORD, now=NOW + dt.timedelta(minutes=5))
    # an admin's reset lifts it at once
    set_password(conn, "ada", "a brand new password", now=NOW + dt.timedelta(minutes=6))
    signed = sign_in(on(conn), "ada", "a brand new password", now=NOW + dt.timedelta(minutes=7))
    assert signed.user.username == "ada"
    actions = [
        a for (a,) in conn.execute("SELECT action FROM audit_log ORDER BY audit_id").fetchall()
    ]
    assert actions == [
        *["session.signin_failed"] * MAX_FAILURES,
        "session.signin_locked",
        "session.signin",
    ]


def test_the_lockout_ends_by_itself_and_counts_only_recent_failures(
    conn: psycopg.Connection,
) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    for n in range(MAX_FAILURES):
        with pytest.raises(SignInRefused):
            sign_in(on(conn), "ada", "guess", now=NOW + dt.timedelta(seconds=n))
    after = NOW + dt.timedelta(seconds=MAX_FAILURES) + LOCKOUT
    assert sign_in(on(conn), "ada", PASSWORD, now=after).user.username == "ada"
    # failures further apart than the lockout period never add up to a lockout
    for n in range(MAX_FAILURES + 2):
        with pytest.raises(SignInRefused) as wrong:
            sign_in(on(conn), "ada", "guess", now=after + (LOCKOUT + dt.timedelta(seconds=1)) * n)
        assert wrong.value.locked_until is None


def test_unknown_and_disabled_users_get_the_same_answers(conn: psycopg.Connection) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    disable_user(conn, "ada", now=NOW)
    for name in ("ada", "nobody"):
        for n in range(MAX_FAILURES - 1):
            with pytest.raises(SignInRefused) as wrong:
                sign_in(on(conn), name, PASSWORD, now=NOW + dt.timedelta(seconds=n))
            assert wrong.value.message == WRONG
        with pytest.raises(SignInRefused, match="blocked until"):
            sign_in(on(conn), name, PASSWORD, now=NOW + dt.timedelta(seconds=9))


# -- sessions ---------------------------------------------------------------------------------


def test_a_session_lives_until_idle_max_age_sign_out_or_disable(conn: psycopg.Connection) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    signed = sign_in(on(conn), "ada", PASSWORD, now=NOW)
    sid = signed.session_id
    stored = conn.execute("SELECT session_hash FROM sessions").fetchall()
    assert stored == [(token_hash(sid),)]  # the id itself is never stored
    user = user_of_session(conn, sid, now=NOW + dt.timedelta(hours=1))
    assert user is not None
    assert user.username == "ada"
    assert user_of_session(conn, sid + "x", now=NOW) is None
    # idle: 12 h after the last request
    last = NOW + dt.timedelta(hours=1)
    assert user_of_session(conn, sid, now=last + SESSION_IDLE + dt.timedelta(seconds=1)) is None

    # kept busy, it still ends at its maximum age
    busy = sign_in(on(conn), "ada", PASSWORD, now=NOW).session_id
    at = NOW
    while at + SESSION_IDLE / 2 < NOW + SESSION_MAX_AGE:
        at += SESSION_IDLE / 2
        assert user_of_session(conn, busy, now=at) is not None
    assert user_of_session(conn, busy, now=NOW + SESSION_MAX_AGE) is None

    # sign-out ends it server-side
    out = sign_in(on(conn), "ada", PASSWORD, now=NOW).session_id
    end_session(conn, out, user, now=NOW + dt.timedelta(minutes=1))
    assert user_of_session(conn, out, now=NOW + dt.timedelta(minutes=2)) is None

    # disabling the user ends the others
    other = sign_in(on(conn), "ada", PASSWORD, now=NOW).session_id
    disable_user(conn, "ada", now=NOW + dt.timedelta(minutes=3))
    assert user_of_session(conn, other, now=NOW + dt.timedelta(minutes=4)) is None


def test_dead_sessions_and_stale_failure_counts_are_deleted(conn: psycopg.Connection) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    sign_in(on(conn), "ada", PASSWORD, now=NOW)
    later = NOW + SESSION_MAX_AGE + dt.timedelta(days=1, seconds=1)
    live = sign_in(on(conn), "ada", PASSWORD, now=later - dt.timedelta(hours=1)).session_id
    sign_in(on(conn), "ada", PASSWORD, now=later)
    assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (2,)  # the first went
    assert user_of_session(conn, live, now=later) is not None
    for name in ("nobody", "ada"):
        with pytest.raises(SignInRefused):
            sign_in(on(conn), name, "guess", now=NOW)
    with pytest.raises(SignInRefused):
        sign_in(on(conn), "somebody", "guess", now=NOW + LOCKOUT + dt.timedelta(seconds=1))
    names = conn.execute("SELECT username FROM signin_throttle ORDER BY 1").fetchall()
    assert names == [("somebody",)]


def test_a_password_reset_ends_the_sessions(conn: psycopg.Connection) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    sid = sign_in(on(conn), "ada", PASSWORD, now=NOW).session_id
    set_password(conn, "ada", "another long password", now=NOW + dt.timedelta(minutes=1))
    assert user_of_session(conn, sid, now=NOW + dt.timedelta(minutes=2)) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    assert csrf_ok("session-1", csrf_token("session-1"))
    assert not csrf_ok("session-2", csrf_token("session-1"))
    assert not csrf_ok("session-1", "")
    assert "session-1" not in csrf_token("session-1")


# -- personal tokens --------------------------------------------------------------------------


def test_a_token_is_shown_once_stored_hashed_and_revocable(conn: psycopg.Connection) -> None:
    create_user(conn, "ada", "manager", PASSWORD)
    row, token = create_token(conn, "ada", "nightly export")
    assert token.startswith("bwt_")
    assert len(token) == 47
    assert row.hint == token[:10]
    (text,) = conn.execute(
        "SELECT string_agg(row_to_json(t)::text, '') FROM api_tokens t"
    ).fetchone() or ("",)
    assert token not in text  # only its hash and hint are kept
    user = user_of_token(conn, token, now=NOW)
    assert user is not None
    assert (user.username, user.role) == ("ada", "manager")
    assert conn.execute("SELECT last_used_at FROM api_tokens").fetchone() == (NOW,)
    assert user_of_token(conn, token[:-1] + ("A" if token[-1] != "A" else "B"), now=NOW) is None
    assert user_of_token(conn, "not-a-token", now=NOW) is None
    revoked = revoke_token(conn, row.token_id, now=NOW)
    assert revoked.revoked_at == NOW
    assert user_of_token(conn, token, now=NOW) is None
    # a disabled owner's tokens are refused too
    _, second = create_token(conn, "ada", "other")
    assert user_of_token(conn, second, now=NOW) is not None
    disable_user(conn, "ada", now=NOW)
    assert user_of_token(conn, second, now=NOW) is None
    with pytest.raises(InputError, match="disabled"):
        create_token(conn, "ada", "third")


# -- the CLI ----------------------------------------------------------------------------------


def test_users_cli_create_list_disable_reset_with_exit_codes(
    db_url: str, conn: psycopg.Connection
) -> None:
    created = run("users", "create", "Ada", "--role", "admin", "--name", "Ada A", db_url=db_url)
    assert created.returncode == 0, created.stderr
    password = created.stdout.split("password: ")[1].split()[0]
    assert "shown once" in created.stdout
    assert sign_in(on(conn), "ada", password, now=NOW).user.role == "admin"

    as_json = run(
        "users", "create", "carla", "--role", "csm", "--csm", "csm-a", "--json", db_url=db_url
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["user"]["csm_id"] == "csm-a"
    assert len(document["password"]) >= 12

    stdin = run_with_stdin(
        ["users", "create", "mona", "--role", "manager", "--password-stdin", "--json"],
        "mona's own password\n",
        db_url,
    )
    assert stdin.returncode == 0, stdin.stderr
    assert json.loads(stdin.stdout)["password"] is None
    assert sign_in(on(conn), "mona", "mona's own password", now=NOW).user.role == "manager"

    listed = run("users", "list", "--json", db_url=db_url)
    assert listed.returncode == 0
    users = json.loads(listed.stdout)["users"]
    assert [(u["username"], u["role"]) for u in users] == [
        ("ada", "admin"),
        ("carla", "csm"),
        ("mona", "manager"),
    ]
    assert "password" not in listed.stdout

    # user-fixable failures: exit 1, one line on stderr, nothing on stdout
    for argv in (
        ["users", "create", "ada", "--role", "admin"],
        ["users", "create", "zed", "--role", "csm", "--csm", "csm-z"],
        ["users", "disable", "nobody"],
        ["users", "reset-password", "nobody"],
        ["users", "token", "create", "nobody", "--name", "x"],
        ["users", "token", "revoke", "999"],
    ):
        failed = run(*argv, "--json", db_url=db_url)
        assert failed.returncode == 1, (argv, failed.stderr)
        assert failed.stdout == ""
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    weak = run_with_stdin(["users", "reset-password", "ada", "--password-stdin"], "short\n", db_url)
    assert weak.returncode == 1
    assert "at least 12 characters" in weak.stderr
    # wrong usage: exit 2
    for argv in (
        ["users", "create", "zed", "--role", "csm"],
        ["users", "create", "zed", "--role", "manager", "--csm", "csm-a"],
        ["users", "create", "zed", "--role", "root"],
        ["users", "token", "revoke", "first"],
    ):
        assert run(*argv, db_url=db_url).returncode == 2, argv

    reset = run("users", "reset-password", "carla", "--json", db_url=db_url)
    assert reset.returncode == 0
    new_password = json.loads(reset.stdout)["password"]
    assert sign_in(on(conn), "carla", new_password, now=NOW).user.username == "carla"
    assert run("users", "disable", "carla", db_url=db_url).returncode == 0
    with pytest.raises(SignInRefused):
        sign_in(on(conn), "carla", new_password, now=NOW)
    audit = conn.execute(
        "SELECT action, target, source FROM audit_log WHERE source = 'cli' ORDER BY audit_id"
    ).fetchall()
    assert audit == [
        ("user.create", "user:ada", "cli"),
        ("user.create", "user:carla", "cli"),
        ("user.create", "user:mona", "cli"),
        ("user.reset_password", "user:carla", "cli"),
        ("user.disable", "user:carla", "cli"),
    ]


def test_users_token_cli_prints_the_token_once(db_url: str, conn: psycopg.Connection) -> None:
    create_user(conn, "ada", "admin", PASSWORD)
    created = run("users", "token", "create", "ada", "--name", "export", "--json", db_url=db_url)
    assert created.returncode == 0, created.stderr
    document = json.loads(created.stdout)
    token = document["token"]
    assert user_of_token(conn, token, now=NOW) is not None
    text = run("users", "token", "create", "ada", "--name", "backup", db_url=db_url)
    assert "shown once" in text.stdout
    listed = run("users", "token", "list", "--json", db_url=db_url)
    assert listed.returncode == 0
    tokens = json.loads(listed.stdout)["tokens"]
    assert [(t["name"], t["username"], t["revoked_at"]) for t in tokens] == [
        ("export", "ada", None),
        ("backup", "ada", None),
    ]
    assert token not in listed.stdout
    assert tokens[0]["hint"] == token[:10]
    revoked = run("users", "token", "revoke", str(document["token_id"]), db_url=db_url)
    assert revoked.returncode == 0, revoked.stderr
    assert user_of_token(conn, token, now=NOW) is None
    assert "revoked" in run("users", "token", "list", db_url=db_url).stdout


def test_cli_alert_actions_are_audited(db_url: str, conn: psycopg.Connection) -> None:
    from tests.basewatch.test_api import REGISTRY, raise_alerts, saturation

    conn.execute("TRUNCATE alerts, alert_history, outbox")
    conn.execute(REGISTRY)
    (alert_id,) = raise_alerts(conn, saturation())
    assert run("alerts", "ack", str(alert_id), "--by", "ada", db_url=db_url).returncode == 0
    rows = conn.execute(
        "SELECT actor_user_id, actor, action, target, source, details->>'status' FROM audit_log"
    ).fetchall()
    assert rows == [(None, "ada", "alert.ack", f"alert:{alert_id}", "cli", "acknowledged")]


def run_with_stdin(argv: list[str], text: str, db_url: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    environ["BASEWATCH_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "basewatch", *argv],
        env=environ,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
