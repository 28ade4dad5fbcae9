"""Domain identifiers: accounts, assets and metric names share one shape (DESIGN.md)."""

from __future__ import annotations

import re

IDENTIFIER_PATTERN = r"[A-Za-z0-9_.\-]{1,64}"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


def is_identifier(value: object) -> bool:
    """True when ``value`` is a string of 1-64 characters from ``[A-Za-z0-9_.-]``."""
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None
