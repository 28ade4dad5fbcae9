"""``basewatch account review ACCOUNT [--from D] [--to D] --out FILE``: the business review of
``/accounts/<id>/review`` (``basewatch.pages.review``) written as one self-contained HTML file
(its style inline, no navigation, no link back to the server). With ``--json`` it prints what
was written (path, bytes) and the figures.

Wrong dates, ``--from`` after ``--to`` or a period over 366 days are usage errors (exit 2,
before the database is touched); an unknown account is exit 1. No PDF: the well-kept HTML to
PDF library (WeasyPrint) needs Pango and friends from the system; print the HTML from a browser
(the page has a print stylesheet) instead."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from basewatch.commands import Commands
from basewatch.output import emit
from core.errors import InputError, NotFound
from core.settings import Settings


def _day(text: str) -> str:
    """Checks ``YYYY-MM-DD`` (the value stays text: the period is settled in :func:`_period`)."""
    from basewatch.pages.review import parse_day

    try:
        parse_day(text, "date")
    except InputError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None
    return text


def _period(args: argparse.Namespace) -> tuple[dt.date, dt.date]:
    from basewatch.pages.review import review_period

    return review_period(args.from_day, args.to_day, dt.datetime.now(dt.UTC).date())


def _validate(args: argparse.Namespace) -> str | None:
    try:
        _period(args)
    except InputError as exc:
        return f"argument --from/--to: {exc}"
    return None


def cmd_account_review(settings: Settings, args: argparse.Namespace) -> int:
    from basewatch.currency import reporting_currency
    from basewatch.pages.review import build_review, render_review
    from basewatch.wiring import open_database
    from core.registry import accounts_of

    first, last = _period(args)
    with open_database(settings) as conn:
        found = accounts_of(conn, account_id=args.account)
        if not found:
            raise NotFound(f"no account {args.account!r}")
        review = build_review(
            conn, found[0], first, last, reporting_currency(settings), dt.datetime.now(dt.UTC)
        )
    out: Path = args.out
    data = render_review(review, standalone=True).encode()
    out.write_bytes(data)
    figures = review.document()
    emit(
        args,
        {"html": str(out), "bytes": len(data), **figures},
        lambda: (
            f"business review of {review.account.account_id}, {first} to {last}: {out} "
            f"({len(data):,} bytes)"
        ),
    )
    return 0


def register(commands: Commands) -> None:
    account = commands.group("account", "account: the business review")
    review = account.add(
        "review",
        cmd_account_review,
        "write an account's business review (air, energy, availability, failures, alerts and "
        "their outcomes, recommendations) for a period as one HTML file",
    )
    review.add_argument("account", metavar="ACCOUNT", help="the account id")
    review.add_argument(
        "--from", dest="from_day", type=_day, help="first day YYYY-MM-DD (default: see --to)"
    )
    review.add_argument(
        "--to",
        dest="to_day",
        type=_day,
        help="last day YYYY-MM-DD, included (default: the last full calendar quarter; with "
        "--from alone, yesterday; with --to alone, the 91 days ending on it); at most 366 days",
    )
    review.add_argument("--out", type=Path, required=True, metavar="FILE", help="the HTML file")
    review.set_defaults(validate=_validate)
