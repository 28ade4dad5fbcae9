"""Months as dates on their first day, and the ``YYYY-MM`` text form used in files and options.

Month arithmetic has one home here: nrr's ledger moves first days, signals' renewal dates move
contract start dates (a day of any month, clamped to the last day of a shorter month).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: str) -> dt.date:
    """``YYYY-MM`` -> the month's first day; ValueError when malformed."""
    match = _MONTH.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a month (YYYY-MM)")
    year, month = int(match[1]), int(match[2])
    if not 1 <= month <= 12 or year < 1900:
        raise ValueError(f"{text!r} is not a month (YYYY-MM)")
    return dt.date(year, month, 1)


def format_month(month: dt.date) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def month_of(day: dt.date) -> dt.date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def add_months(day: dt.date, count: int) -> dt.date:
    """``day`` moved by ``count`` months, kept on its day of the month or, in a shorter month,
    on the month's last day (2024-01-31 + 1 month = 2024-02-29); a first day stays a first day."""
    year, index = divmod(day.year * 12 + day.month - 1 + count, 12)
    if day.day <= 28:
        return dt.date(year, index + 1, day.day)
    return dt.date(year, index + 1, min(day.day, calendar.monthrange(year, index + 1)[1]))


def months_between(first: dt.date, last: dt.date) -> int:
    """Whole months from ``first`` to ``last`` (both first days); negative when last < first."""
    return (last.year - first.year) * 12 + last.month - first.month


def month_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every month from ``first`` to ``last`` inclusive."""
    return [add_months(first, i) for i in range(months_between(first, last) + 1)]


def last_day(month: dt.date) -> dt.date:
    return add_months(month, 1) - dt.timedelta(days=1)


def previous_complete_month(today: dt.date) -> dt.date:
    """The last month that has ended by ``today``."""
    return add_months(month_of(today), -1)
