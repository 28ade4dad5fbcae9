"""Users, their roles, personal API tokens and the audit log (issue 15 item 2).

Storage is ``basewatch/migrations/001_users.sql``; this module is independent of the web
framework (the API, the pages and the CLI call it with a connection). Decisions:

- **Roles.** ``admin`` (users and settings; sees everything), ``manager`` (head of customer
  success / service sales: every account and the NRR figures), ``csm`` (only the accounts
  whose ``csm_id`` is theirs, and their alerts). A csm user names its CSM (``--csm``, a row of
  core's ``csms``); the other roles have none (a CHECK keeps it so). What a role may see is
  decided by :func:`may_see_everything` and :func:`may_see_nrr`, used by the API.
- **No default credentials.** There is no built-in user; the first admin comes from the CLI
  (``basewatch users create NAME --role admin``), whose password is generated
  (:func:`generate_password`, 120 random bits) and printed once, or read from stdin.
- **Passwords** are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's low-memory
  profile); a stored hash made with other parameters is replaced at the next successful
  sign-in (:func:`verify_password` returns the new hash). A chosen password must have at least
  :data:`MIN_PASSWORD_LENGTH` characters. One hash or verification takes 64 MiB and about
  0.1-0.2 s of a core (190 ms measured on the 2-core test machine under load), so at most
  :data:`ARGON2_AT_ONCE` run at once in a process: a burst of sign-ins from the API's 16
  threads waits its turn instead of taking a gigabyte.
- **Personal tokens** are ``bwt_`` + 43 url-safe characters (256 random bits): the prefix lets
  a secret scanner or a person recognise one. The token is returned once by
  :func:`create_token`; the table keeps its sha256 (a hash of 256 random bits needs no salt
  or slow hash) and its first :data:`TOKEN_HINT_LENGTH` characters for lists. A token acts
  with its owner's current role; a revoked token, or one of a disabled user, is refused.
  Looking a token up by its hash is an index search on a value the caller cannot steer
  towards a prefix, so it leaks no timing worth having; the stored and given hashes are then
  compared again with :func:`hmac.compare_digest`.
- **Disabling** a user ends their sessions at once; their tokens stop working while they are
  disabled (not revoked: re-enabling is not offered by the CLI, so disabling is final).
- **Audit.** :func:`record` writes one ``audit_log`` row: the actor (user id and name; the CLI
  and the deprecated service token have no user id and give a name), the action
  (``alert.ack``, ``user.create``, ``session.signin``...), the target (``alert:12``,
  ``user:ada``, ``token:3``), details as JSON and the source (``api``, ``page``, ``cli``).
  Callers write it in the transaction of the change it records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from core.errors import InputError, NotFound

Conn = psycopg.Connection[TupleRow]
Role = Literal["admin", "manager", "csm"]
Source = Literal["api", "page", "cli"]

ROLES: tuple[Role, ...] = ("admin", "manager", "csm")
USERNAME = re.compile(r"[a-z0-9_.-]{1,64}")
MIN_PASSWORD_LENGTH = 12
TOKEN_PREFIX = "bwt_"  # noqa: S105 - a prefix, not a secret
TOKEN_HINT_LENGTH = 10  # "bwt_" + 6 characters
_TOKEN = re.compile(r"bwt_[A-Za-z0-9_-]{43}")

_HASHER = PasswordHasher()
ARGON2_AT_ONCE = 2
_ARGON2_SLOTS = threading.BoundedSemaphore(ARGON2_AT_ONCE)


@dataclass(frozen=True)
class User:
    user_id: int
    username: str
    display_name: str
    email: str | None
    role: Role
    csm_id: str | None
    disabled: bool
    created_at: dt.datetime
    last_signin_at: dt.datetime | None

    def document(self) -> dict[str, Any]:
        """The user as ``users list --json`` prints it (never the password hash)."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "role": self.role,
            "csm_id": self.csm_id,
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
            "last_signin_at": self.last_signin_at.isoformat() if self.last_signin_at else None,
        }


@dataclass(frozen=True)
class Actor:
    """Who does something: a user (``user_id``), or the CLI / the service token (None)."""

    user_id: int | None
    name: str


def may_see_everything(user: User) -> bool:
    """admin and manager see every account and alert; a csm only their own."""
    return user.role in ("admin", "manager")


def may_see_nrr(user: User) -> bool:
    return user.role in ("admin", "manager")


# -- passwords --------------------------------------------------------------------------------


def generate_password() -> str:
    """A random password (120 bits, url-safe characters) for ``users create`` and resets."""
    return secrets.token_urlsafe(15)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if password != password.strip() or "\n" in password:
        raise InputError("the password must not start or end with spaces or hold a line break")


def hash_password(password: str) -> str:
    with _ARGON2_SLOTS:
        return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches ``stored_hash`` (Argon2 compares in constant time), and
    a new hash when it matches but the stored one was made with other parameters."""
    try:
        with _ARGON2_SLOTS:
            _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if _HASHER.check_needs_rehash(stored_hash):
        return True, hash_password(password)
    return True, None


_DUMMY_HASH: list[str] = []


def waste_a_verification(password: str) -> None:
    """Spend the time of one verification (for an unknown username), so that the answer's
    timing does not tell whether the user exists."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(_HASHER.hash(secrets.token_hex(16)))
    verify_password(_DUMMY_HASH[0], password)


# -- users ------------------------------------------------------------------------------------

_USER_FIELDS = (
    "user_id",
    "username",
    "display_name",
    "email",
    "role",
    "csm_id",
    "disabled",
    "created_at",
    "last_signin_at",
)


def user_columns(alias: str = "") -> sql.Composable:
    """The columns of :class:`User`, in its order (``alias.column`` with an alias)."""
    return sql.SQL(", ").join(
        sql.Identifier(alias, c) if alias else sql.Identifier(c) for c in _USER_FIELDS
    )


def _user(row: tuple[Any, ...]) -> User:
    return User(*row)


def normalise_username(username: str) -> str:
    return username.strip().lower()


def check_username(username: str) -> str:
    name = normalise_username(username)
    if not USERNAME.fullmatch(name):
        raise InputError(f"{username!r} is not a username (1 to 64 of a-z, 0-9, '_', '.', '-')")
    return name


def create_user(
    conn: Conn,
    username: str,
    role: str,
    password: str,
    *,
    csm_id: str | None = None,
    email: str | None = None,
    display_name: str = "",
) -> User:
    """Add a user; raises InputError for a bad or taken name, a role without its CSM (or a
    CSM given to another role), NotFound for an unknown CSM."""
    name = check_username(username)
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if role == "csm" and not csm_id:
        raise InputError("a csm user needs a CSM (--csm CSM_ID)")
    if role != "csm" and csm_id:
        raise InputError(f"only a csm user has a CSM (the role given is {role})")
    check_password_strength(password)
    if csm_id and not conn.execute("SELECT 1 FROM csms WHERE csm_id = %s", (csm_id,)).fetchone():
        raise NotFound(f"no CSM {csm_id!r} (basewatch registry import adds them)")
    taken = conn.execute("SELECT 1 FROM users WHERE username = %s", (name,)).fetchone()
    if taken:
        raise InputError(f"a user {name!r} exists already")
    row = conn.execute(
        sql.SQL(
            "INSERT INTO users (username, display_name, email, role, csm_id, password_hash)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING {}"
        ).format(user_columns()),
        (name, display_name, email or None, role, csm_id or None, hash_password(password)),
    ).fetchone()
    assert row is not None
    return _user(row)


def list_users(conn: Conn) -> list[User]:
    return [
        _user(r)
        for r in conn.execute(
            sql.SQL("SELECT {} FROM users ORDER BY username").format(user_columns())
        )
    ]


def get_user(conn: Conn, username: str) -> User:
    row = conn.execute(
        sql.SQL("SELECT {} FROM users WHERE username = %s").format(user_columns()),
        (normalise_username(username),),
    ).fetchone()
    if row is None:
        raise NotFound(f"no user {normalise_username(username)!r}")
    return _user(row)


def password_hash_of(conn: Conn, username: str) -> tuple[User, str] | None:
    """The enabled user ``username`` and their password hash; None when there is none."""
    row = conn.execute(
        sql.SQL("SELECT {}, password_hash FROM users WHERE username = %s AND NOT disabled").format(
            user_columns()
        ),
        (normalise_username(username),),
    ).fetchone()
    if row is None:
        return None
    return _user(row[:-1]), str(row[-1])


def disable_user(conn: Conn, username: str, *, now: dt.datetime) -> User:
    """Disable ``username`` and end their sessions (their tokens stop working too)."""
    user = get_user(conn, username)
    conn.execute(
        "UPDATE users SET disabled = true, updated_at = %s WHERE user_id = %s",
        (now, user.user_id),
    )
    end_sessions_of(conn, user.user_id, now=now)
    return get_user(conn, username)


def set_password(conn: Conn, username: str, password: str, *, now: dt.datetime) -> User:
    """Replace the password, clear the sign-in lockout and end the user's sessions."""
    user = get_user(conn, username)
    check_password_strength(password)
    conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = %s WHERE user_id = %s",
        (hash_password(password), now, user.user_id),
    )
    conn.execute("DELETE FROM signin_throttle WHERE username = %s", (user.username,))
    end_sessions_of(conn, user.user_id, now=now)
    return user


def end_sessions_of(conn: Conn, user_id: int, *, now: dt.datetime) -> None:
    conn.execute(
        "UPDATE sessions SET ended_at = %s WHERE user_id = %s AND ended_at IS NULL",
        (now, user_id),
    )


# -- personal API tokens ----------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    token_id: int
    hint: str
    name: str
    username: str
    role: Role
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def document(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "hint": self.hint,
            "name": self.name,
            "username": self.username,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(text: str) -> bool:
    return bool(_TOKEN.fullmatch(text))


def create_token(conn: Conn, username: str, name: str) -> tuple[Token, str]:
    """A new token of ``username``: its row, and the token itself (shown once, never stored)."""
    user = get_user(conn, username)
    if user.disabled:
        raise InputError(f"user {user.username!r} is disabled")
    if not name.strip():
        raise InputError("a token needs a name (what it is for)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO api_tokens (token_hash, hint, name, user_id) VALUES (%s, %s, %s, %s)"
        " RETURNING token_id",
        (token_hash(token), token[:TOKEN_HINT_LENGTH], name.strip(), user.user_id),
    ).fetchone()
    assert row is not None
    return get_token(conn, int(row[0])), token


_ISSUED_KEYS_QUERY = (
    "SELECT t.token_id, t.hint, t.name, u.username, u.role, t.created_at, t.last_used_at,"
    " t.revoked_at FROM api_tokens t JOIN users u ON u.user_id = t.user_id"
    " WHERE %(id)s::bigint IS NULL OR t.token_id = %(id)s ORDER BY t.token_id"
)


def get_token(conn: Conn, token_id: int) -> Token:
    row = conn.execute(_ISSUED_KEYS_QUERY, {"id": token_id}).fetchone()
    if row is None:
        raise NotFound(f"no token #{token_id}")
    return Token(*row)


def list_tokens(conn: Conn) -> list[Token]:
    return [Token(*r) for r in conn.execute(_ISSUED_KEYS_QUERY, {"id": None})]


def revoke_token(conn: Conn, token_id: int, *, now: dt.datetime) -> Token:
    """Revoke a token (revoking it again keeps the first time)."""
    get_token(conn, token_id)
    conn.execute(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, %s) WHERE token_id = %s",
        (now, token_id),
    )
    return get_token(conn, token_id)


def user_of_token(conn: Conn, token: str, *, now: dt.datetime) -> User | None:
    """The owner of a valid token (not revoked, owner not disabled), noting its use; None for
    anything else."""
    if not looks_like_token(token):
        return None
    digest = token_hash(token)
    row = conn.execute(
        sql.SQL(
            "UPDATE api_tokens t SET last_used_at = %s FROM users u"
            " WHERE t.token_hash = %s AND t.revoked_at IS NULL AND u.user_id = t.user_id"
            " AND NOT u.disabled RETURNING t.token_hash, {}"
        ).format(user_columns("u")),
        (now, digest),
    ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), digest):
        return None
    return _user(row[1:])


# -- audit ------------------------------------------------------------------------------------


def record(
    conn: Conn,
    actor: Actor,
    action: str,
    target: str,
    source: Source,
    details: dict[str, Any] | None = None,
    *,
    now: dt.datetime | None = None,
) -> None:
    """One audit row (in the caller's transaction)."""
    conn.execute(
        "INSERT INTO audit_log (at, actor_user_id, actor, action, target, details, source)"
        " VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s, %s)",
        (now, actor.user_id, actor.name, action, target, Jsonb(details or {}), source),
    )


def audit_rows(conn: Conn, *, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest audit rows, newest first (all, or one target's)."""
    rows = conn.execute(
        "SELECT audit_id, at, actor_user_id, actor, action, target, details, source"
        " FROM audit_log WHERE %s::text IS NULL OR target = %s"
        " ORDER BY audit_id DESC LIMIT %s",
        (target, target, limit),
    ).fetchall()
    names = ("audit_id", "at", "actor_user_id", "actor", "action", "target", "details", "source")
    return [dict(zip(names, r, strict=True)) for r in rows]
