"""``basewatch users create|list|disable|reset-password`` and ``users token create|list|revoke``.

The CLI is where users come from: there are no default credentials, the first admin is
created here (whoever can run the CLI against the database is trusted as an admin). A
password is generated and printed once (``create``, ``reset-password``), or read from the
first line of stdin with ``--password-stdin`` (then nothing secret is printed); a token is
printed once by ``token create`` and only its hint is shown later. Every change is written to
the audit log with source ``cli`` and the login name as actor (``basewatch.users.record``).
Unknown users, CSMs and tokens, a taken name or a weak password are exit 1 with one line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys

from basewatch.argtypes import positive
from basewatch.commands import Commands
from basewatch.output import emit
from core.errors import InputError
from core.settings import Settings


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cli_actor() -> str:
    """The audit log's actor of a CLI change: the login name."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to set and whether it was generated (and must be printed)."""
    from basewatch.users import generate_password

    if not args.password_stdin:
        return generate_password(), True
    line = sys.stdin.readline()
    if not line:
        raise InputError("--password-stdin: stdin is empty")
    return line.rstrip("\r\n"), False


def cmd_create(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.users import Actor, create_user, record
    from basewatch.wiring import open_database

    password, generated = _password(args)
    with open_database(settings) as conn:
        user = create_user(
            conn,
            args.username,
            args.role,
            password,
            csm_id=args.csm,
            email=args.email,
            display_name=args.name or "",
        )
        record(
            conn,
            Actor(None, cli_actor()),
            "user.create",
            f"user:{user.username}",
            "cli",
            {"role": user.role, "csm_id": user.csm_id},
        )
    document = {"user": user.document(), "password": password if generated else None}
    emit(
        args,
        document,
        lambda: (
            f"user {user.username} created ({user.role}"
            + (f" of CSM {user.csm_id}" if user.csm_id else "")
            + ")"
            + (f"\npassword: {password}\n(shown once: pass it on securely)" if generated else "")
        ),
    )
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.users import list_users
    from basewatch.wiring import open_database

    with open_database(settings) as conn:
        users = list_users(conn)
    document = {"users": [u.document() for u in users]}
    emit(
        args,
        document,
        lambda: (
            "\n".join(
                f"{u.username:<20} {u.role:<8} {u.csm_id or '-':<12} "
                f"{'disabled' if u.disabled else 'active':<8} {u.display_name}"
                for u in users
            )
            or "no users (create the first admin: basewatch users create NAME --role admin)"
        ),
    )
    return 0


def cmd_disable(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.users import Actor, disable_user, record
    from basewatch.wiring import open_database

    with open_database(settings) as conn:
        user = disable_user(conn, args.username, now=_now())
        record(conn, Actor(None, cli_actor()), "user.disable", f"user:{user.username}", "cli")
    emit(
        args,
        {"user": user.document()},
        lambda: f"user {user.username} disabled (sessions ended, tokens refused)",
    )
    return 0


def cmd_reset_password(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.users import Actor, record, set_password
    from basewatch.wiring import open_database

    password, generated = _password(args)
    with open_database(settings) as conn:
        user = set_password(conn, args.username, password, now=_now())
        record(
            conn, Actor(None, cli_actor()), "user.reset_password", f"user:{user.username}", "cli"
        )
    document = {"user": user.document(), "password": password if generated else None}
    emit(
        args,
        document,
        lambda: (
            f"password of {user.username} reset (lockout cleared, sessions ended)"
            + (f"\npassword: {password}\n(shown once: pass it on securely)" if generated else "")
        ),
    )
    return 0


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.users import Actor, create_token, record
    from basewatch.wiring import open_database

    with open_database(settings) as conn:
        row, token = create_token(conn, args.username, args.name)
        record(
            conn,
            Actor(None, cli_actor()),
            "token.create",
            f"token:{row.token_id}",
            "cli",
            {"owner": row.username, "name": row.name},
        )
    emit(
        args,
        {**row.document(), "token": token},
        lambda: (
            f"token #{row.token_id} {row.name!r} of {row.username} ({row.role}):\n{token}\n"
            "(shown once: only its hash is stored; send it as Authorization: Bearer <token>)"
        ),
    )
    return 0


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.users import list_tokens
    from basewatch.wiring import open_database

    with open_database(settings) as conn:
        tokens = list_tokens(conn)
    emit(
        args,
        {"tokens": [t.document() for t in tokens]},
        lambda: (
            "\n".join(
                f"#{t.token_id:<5} {t.hint}...  {t.username:<20} {t.name:<24} "
                + (f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active")
                + (f", last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "")
                for t in tokens
            )
            or "no tokens"
        ),
    )
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.users import Actor, record, revoke_token
    from basewatch.wiring import open_database

    with open_database(settings) as conn:
        token = revoke_token(conn, args.token_id, now=_now())
        record(conn, Actor(None, cli_actor()), "token.revoke", f"token:{token.token_id}", "cli")
    emit(args, token.document(), lambda: f"token #{token.token_id} revoked")
    return 0


def register(commands: Commands) -> None:
    """Add ``users`` and its subcommands."""
    from basewatch.users import ROLES

    users = commands.group("users", "users of the API and the CSM pages, and their tokens")
    create = users.add("create", cmd_create, "add a user (its password is printed once)")
    create.add_argument("username", metavar="USERNAME")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--csm", metavar="CSM_ID", help="the CSM a csm user is (required then)")
    create.add_argument("--email")
    create.add_argument("--name", help="display name")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    create.set_defaults(validate=_validate_create)

    users.add("list", cmd_list, "list the users")
    disable = users.add("disable", cmd_disable, "disable a user: sessions end, tokens are refused")
    disable.add_argument("username", metavar="USERNAME")
    reset = users.add(
        "reset-password", cmd_reset_password, "set a new password (printed once), lift a lockout"
    )
    reset.add_argument("username", metavar="USERNAME")
    reset.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )

    tokens = users.group("token", "personal API tokens (for scripts)")
    create_token = tokens.add("create", cmd_token_create, "create a token (printed once)")
    create_token.add_argument("username", metavar="USERNAME")
    create_token.add_argument("--name", required=True, help="what the token is for")
    tokens.add("list", cmd_token_list, "list the tokens (never the tokens themselves)")
    tokens.add("revoke", cmd_token_revoke, "revoke a token").add_argument(
        "token_id", type=positive, metavar="TOKEN_ID"
    )


def _validate_create(args: argparse.Namespace) -> str | None:
    if args.role == "csm" and not args.csm:
        return "argument --csm: required for --role csm"
    if args.role != "csm" and args.csm:
        return f"argument --csm: only for --role csm (got --role {args.role})"
    return None
