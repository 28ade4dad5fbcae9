"""How a command prints its result: one JSON document with ``--json``, else text.

Conventions (DESIGN.md): ``--json`` prints exactly one JSON document on stdout. ``json.dump``
keeps ``ensure_ascii`` (the default, on purpose): control, C1 and bidi characters that devices
sent come out as ``\\uXXXX`` escapes, never raw (``core.text``); text output escapes them
itself where it shows device-supplied text. Every command module prints through :func:`emit`;
it lives apart from ``basewatch.cli`` so that no command module imports the CLI module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def emit(args: argparse.Namespace, document: Any, text: Callable[[], str]) -> None:
    """Print ``document`` as JSON with ``--json``, else the human-readable ``text()``."""
    if getattr(args, "json", False):
        json.dump(document, sys.stdout, indent=2, default=str, ensure_ascii=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text().rstrip("\n") + "\n")
    sys.stdout.flush()
