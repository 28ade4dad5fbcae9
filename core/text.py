"""Characters that must not reach a terminal or a stored name unescaped.

Device-supplied text (a dead letter's topic, payload and reason) and operator-supplied text (the
registry CSV) may carry characters that a terminal or an editor *acts on* instead of showing:
ESC and the other C0 controls (``ESC[2J`` clears the screen, ``ESC]0;…BEL`` retitles the window,
CR overwrites the line), DEL, the C1 controls (U+0080–U+009F; U+009B is a one-character CSI on
terminals that honour C1), and the Unicode bidirectional controls (U+202A–U+202E embeddings and
overrides, U+2066–U+2069 isolates, plus the marks U+200E, U+200F, U+061C), which reorder what is
displayed ("Trojan Source"), so that a name or a reason reads differently from what it is. The
line and paragraph separators U+2028/U+2029 break lines in editors and browsers and are treated
the same way.

:func:`escape_controls` makes such text safe to print: every one of those characters is shown
as a Python-style escape (``\\x1b``, ``\\x9b``, ``\\u202e``); everything else, backslashes
included, is left as it is, so the text form is for reading (``--json`` gives the exact text).
:func:`unsafe_character` names the first such character, for input validation that rejects it.
"""

from __future__ import annotations

import re

# C0 controls (TAB, LF and CR included), DEL, C1 controls, bidi marks, embeddings, overrides and
# isolates, line and paragraph separators.
UNSAFE_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)

_NAMES = {
    "\x00": "NUL",
    "\t": "tab",
    "\n": "line feed",
    "\r": "carriage return",
    "\x1b": "escape",
    "\x7f": "DEL",
    "\u061c": "Arabic letter mark",
    "\u200e": "left-to-right mark",
    "\u200f": "right-to-left mark",
    "\u2028": "line separator",
    "\u2029": "paragraph separator",
    "\u202a": "left-to-right embedding",
    "\u202b": "right-to-left embedding",
    "\u202c": "pop directional formatting",
    "\u202d": "left-to-right override",
    "\u202e": "right-to-left override",
    "\u2066": "left-to-right isolate",
    "\u2067": "right-to-left isolate",
    "\u2068": "first strong isolate",
    "\u2069": "pop directional isolate",
}


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control, bidi and line-separator character written as an escape."""
    return UNSAFE_CHARACTERS.sub(_escape, text)


def unsafe_character(text: str) -> str:
    """A description of the first control, bidi or separator character in ``text`` (such as
    ``"carriage return (U+000D) at position 5"``), or ``""`` when there is none."""
    match = UNSAFE_CHARACTERS.search(text)
    if match is None:
        return ""
    char = match.group()
    code = ord(char)
    kind = _NAMES.get(char) or ("control character" if code < 0x2000 else "bidi control")
    return f"{kind} (U+{code:04X}) at position {match.start() + 1}"
