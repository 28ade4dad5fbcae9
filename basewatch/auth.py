"""Signing in, sessions and CSRF tokens for the pages (issue 15 item 2); framework-free.

Decisions:

- **Sign-in throttle and lockout.** Failed sign-ins are counted per username given (in
  ``signin_throttle``, whether or not such a user exists). :data:`MAX_FAILURES` failures, each
  within :data:`LOCKOUT` of the previous one, lock that username for :data:`LOCKOUT`: during
  it every attempt is refused without checking the password, with a message saying until
  when (minute, UTC) and that an admin can lift it (``basewatch users reset-password``). The
  same messages come for unknown and disabled users, and an unknown username costs one
  Argon2 verification too, so neither the wording nor the timing says who exists. A success
  clears the count. The count is kept in PostgreSQL, so it survives a restart and holds
  across API processes. There is no limit per client address: behind a reverse proxy every
  browser has the proxy's address, and one attacker could lock everybody out; what bounds a
  password-guessing burst across many usernames is the Argon2 cost, at most two
  verifications at once (``basewatch.users.ARGON2_AT_ONCE``).
- **Sessions.** The id is 256 random bits (``secrets.token_urlsafe(32)``), sent to the browser
  only; the table keeps its sha256. A session ends after :data:`SESSION_IDLE` without a
  request (``last_seen_at``), after :data:`SESSION_MAX_AGE` whatever happens (``expires_at``),
  at sign-out (``ended_at``, server-side: the old cookie no longer works), and when the user is
  disabled or their password is reset. :data:`SESSION_MAX_AGE` is the cookie's ``Max-Age``.
  Each new session deletes the rows of sessions dead for :data:`KEEP_DEAD`, and each failed
  sign-in the throttle rows that can no longer count, so neither table grows without bound.
- **CSRF.** Every session has one CSRF token, derived from the session id
  (``sha256("csrf" + id)``, hex): no column, it cannot be turned back into the id, and it dies
  with the session. State-changing requests authenticated by the cookie must carry it (form
  field ``csrf_token`` or header ``X-CSRF-Token``); it is compared in constant time. Requests
  with a bearer token need none: a browser on another site cannot send that header.
- **The cookie** is ``basewatch_session``: ``HttpOnly``, ``SameSite=Lax``, ``Path=/``, and
  ``Secure`` when ``BASEWATCH_API_PUBLIC_URL`` starts with ``https://``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from basewatch.users import (
    Actor,
    Conn,
    User,
    normalise_username,
    password_hash_of,
    record,
    user_columns,
    verify_password,
    waste_a_verification,
)

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
SESSION_IDLE = dt.timedelta(hours=12)
SESSION_MAX_AGE = dt.timedelta(days=7)
KEEP_DEAD = dt.timedelta(days=1)  # an ended or expired session's row is deleted after this
COOKIE_NAME = "basewatch_session"
WRONG = "wrong username or password"


class SignInRefused(Exception):
    """A refused sign-in; ``message`` is safe to show (it does not say whether the user
    exists); ``locked_until`` is set while the username is locked."""

    def __init__(self, message: str, locked_until: dt.datetime | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.locked_until = locked_until


def _locked_message(until: dt.datetime) -> str:
    return (
        f"too many failed sign-ins for this username: signing in is blocked until "
        f"{until.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC (an admin can lift it with "
        "basewatch users reset-password)"
    )


@dataclass(frozen=True)
class SignedIn:
    user: User
    session_id: str  # for the cookie only; never stored


Connect = Callable[[], AbstractContextManager[Conn]]


def sign_in(connect: Connect, username: str, password: str, *, now: dt.datetime) -> SignedIn:
    """Check the password and start a session; raises :class:`SignInRefused`. Audited
    (``session.signin``, ``session.signin_failed``, ``session.signin_locked``).

    ``connect`` hands out a connection committed when its block ends (the API's pool). No
    connection is held while Argon2 runs (about half a second, at most
    ``ARGON2_AT_ONCE`` at a time): the lock state and the hash are read on one, the password
    is verified with none, and the outcome is recorded on a second that re-reads the
    throttle row ``FOR UPDATE`` (concurrent failures for one username still add up, and a
    lock set meanwhile refuses) and checks that the hash verified is still the user's (a
    reset or a disable in between refuses)."""
    name = normalise_username(username)[:64]
    refused: SignInRefused | None = None
    with connect() as conn:
        until = _locked_until(conn, name, now)
        if until is not None:
            _audit_anonymous(conn, "session.signin_locked", name, now)
            refused = SignInRefused(_locked_message(until), until)
        found = password_hash_of(conn, name)
    if refused is not None:
        raise refused
    if found is None:
        waste_a_verification(password)
        ok, rehash = False, None
    else:
        ok, rehash = verify_password(found[1], password)
    with connect() as conn:
        row = conn.execute(
            "SELECT failures, last_failure_at, locked_until FROM signin_throttle"
            " WHERE username = %s FOR UPDATE",
            (name,),
        ).fetchone()
        if row is not None and row[2] is not None and row[2] > now:
            _audit_anonymous(conn, "session.signin_locked", name, now)
            refused = SignInRefused(_locked_message(row[2]), row[2])
        elif not ok:
            refused = _count_failure(conn, name, row, now)
        else:
            assert found is not None
            current = password_hash_of(conn, name)
            if current is None or current[1] != found[1]:  # reset or disabled meanwhile
                _audit_anonymous(conn, "session.signin_failed", name, now, changed=True)
                refused = SignInRefused(WRONG)
            else:
                return _start(conn, name, current[0], rehash, now)
    raise refused


def _locked_until(conn: Conn, name: str, now: dt.datetime) -> dt.datetime | None:
    row = conn.execute(
        "SELECT locked_until FROM signin_throttle WHERE username = %s", (name,)
    ).fetchone()
    if row is not None and row[0] is not None and row[0] > now:
        return row[0]  # type: ignore[no-any-return]
    return None


def _count_failure(
    conn: Conn, name: str, row: tuple[Any, ...] | None, now: dt.datetime
) -> SignInRefused:
    failures = 1
    if row is not None and row[1] > now - LOCKOUT and row[2] is None:
        failures = row[0] + 1
    locked = now + LOCKOUT if failures >= MAX_FAILURES else None
    conn.execute(  # counts that can no longer add up or lock go (names nobody has, too)
        "DELETE FROM signin_throttle WHERE last_failure_at < %(old)s"
        " AND coalesce(locked_until, last_failure_at) < %(now)s AND username <> %(name)s",
        {"old": now - LOCKOUT, "now": now, "name": name},
    )
    conn.execute(
        "INSERT INTO signin_throttle (username, failures, last_failure_at, locked_until)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (username) DO UPDATE SET"
        " failures = EXCLUDED.failures, last_failure_at = EXCLUDED.last_failure_at,"
        " locked_until = EXCLUDED.locked_until",
        (name, 0 if locked else failures, now, locked),
    )
    _audit_anonymous(conn, "session.signin_failed", name, now, failures=failures)
    if locked:
        return SignInRefused(_locked_message(locked), locked)
    return SignInRefused(WRONG)


def _start(conn: Conn, name: str, user: User, rehash: str | None, now: dt.datetime) -> SignedIn:
    conn.execute("DELETE FROM signin_throttle WHERE username = %s", (name,))
    if rehash:
        conn.execute(
            "UPDATE users SET password_hash = %s WHERE user_id = %s", (rehash, user.user_id)
        )
    conn.execute("UPDATE users SET last_signin_at = %s WHERE user_id = %s", (now, user.user_id))
    session_id = start_session(conn, user, now=now)
    record(
        conn,
        Actor(user.user_id, user.username),
        "session.signin",
        f"user:{user.username}",
        "page",
        now=now,
    )
    return SignedIn(user, session_id)


def _audit_anonymous(
    conn: Conn, action: str, username: str, now: dt.datetime, **details: object
) -> None:
    record(conn, Actor(None, username), action, f"user:{username}", "page", dict(details), now=now)


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def start_session(conn: Conn, user: User, *, now: dt.datetime) -> str:
    session_id = secrets.token_urlsafe(32)
    conn.execute(  # sessions dead for a day go (the audit log keeps sign-ins and sign-outs)
        "DELETE FROM sessions WHERE expires_at < %(gone)s OR last_seen_at < %(idle)s"
        " OR ended_at < %(gone)s",
        {"gone": now - KEEP_DEAD, "idle": now - SESSION_IDLE - KEEP_DEAD},
    )
    conn.execute(
        "INSERT INTO sessions (session_hash, user_id, created_at, expires_at, last_seen_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (session_hash(session_id), user.user_id, now, now + SESSION_MAX_AGE, now),
    )
    return session_id


def user_of_session(conn: Conn, session_id: str, *, now: dt.datetime) -> User | None:
    """The user of a live session (not ended, not idle too long, not past its maximum age,
    user enabled), noting the request; None for anything else."""
    if not session_id or len(session_id) > 100:
        return None
    digest = session_hash(session_id)
    row = conn.execute(
        sql.SQL(
            "UPDATE sessions s SET last_seen_at = %s FROM users u"
            " WHERE s.session_hash = %s AND s.ended_at IS NULL AND s.expires_at > %s"
            " AND s.last_seen_at > %s AND u.user_id = s.user_id AND NOT u.disabled"
            " RETURNING s.session_hash, {}"
        ).format(user_columns("u")),
        (now, digest, now, now - SESSION_IDLE),
    ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), digest):
        return None
    return User(*row[1:])


def end_session(conn: Conn, session_id: str, user: User, *, now: dt.datetime) -> None:
    """Sign-out: the session ends server-side (its cookie no longer works)."""
    conn.execute(
        "UPDATE sessions SET ended_at = %s WHERE session_hash = %s AND ended_at IS NULL",
        (now, session_hash(session_id)),
    )
    record(
        conn,
        Actor(user.user_id, user.username),
        "session.signout",
        f"user:{user.username}",
        "page",
        now=now,
    )


def csrf_token(session_id: str) -> str:
    return hashlib.sha256(b"csrf\0" + session_id.encode()).hexdigest()


def csrf_ok(session_id: str, given: str) -> bool:
    return hmac.compare_digest(csrf_token(session_id).encode(), given.encode())


def session_cookie(session_id: str, *, secure: bool) -> str:
    """The ``Set-Cookie`` value that starts a session."""
    max_age = int(SESSION_MAX_AGE.total_seconds())
    return f"{COOKIE_NAME}={session_id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax" + (
        "; Secure" if secure else ""
    )


def cleared_cookie(*, secure: bool) -> str:
    return f"{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax" + (
        "; Secure" if secure else ""
    )
