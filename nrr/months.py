"""Months as dates on their first day, and the ``YYYY-MM`` text form used in files and options."""

from __future__ import annotations

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


def add_months(month: dt.date, count: int) -> dt.date:
    """``month`` (a first day) moved by ``count`` months."""
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


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
