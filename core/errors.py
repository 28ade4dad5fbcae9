"""One error hierarchy, split by what the caller does about it.

::

    BasewatchError
     ├── ConfigError          stop and tell the user (bad setting, bad command-line value)
     ├── InputError           stop and tell the user which input is wrong (file, line, field)
     │    ├── ImportRejected  a CSV import refused whole: every problem as file:line: message
     │    └── InvalidPayload  dead-letter the message, with the field and the reason
     ├── NotFound             the named object does not exist
     └── StorageUnavailable   the database cannot be reached now: retry later

Details live in attributes, never only in the message text.
"""

from __future__ import annotations


class BasewatchError(Exception):
    """Base of every error basewatch raises on purpose."""


class ConfigError(BasewatchError):
    """A setting or command-line value is wrong; ``name`` is the variable or option at fault."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class InputError(BasewatchError):
    """User input (a file, a row, a payload) is wrong and nothing of it was written."""


class ImportRejected(InputError):
    """A CSV file (registry, contracts, invoices, rates) has bad rows and nothing of it was
    written; ``errors`` lists ``file:line: [column: ]message`` for each, the message shows the
    first ``MAX_LISTED``. ``counted`` names what the total counts (``problem(s)``, ``bad
    row(s)``)."""

    MAX_LISTED = 50

    def __init__(self, errors: list[str], counted: str = "problem(s)") -> None:
        shown = errors[: self.MAX_LISTED]
        more = len(errors) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more" if more else "")
        super().__init__(f"{len(errors)} {counted}, nothing imported:\n{text}")
        self.errors = errors


class InvalidPayload(InputError):
    """A message cannot be decoded or validated; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = str(self)


class NotFound(BasewatchError):
    """The object named by the caller does not exist."""


class StorageUnavailable(BasewatchError):
    """The database cannot be reached or refused the connection; the operation may be retried."""
