"""Text a person reads: file names are attacker-controlled, tray fields are fixed-size.

`printable` escapes what a terminal or a log viewer would act on instead of showing:
C0/C1 control characters (escape sequences, newlines, carriage returns), bidi overrides
that reorder what follows (so `gpj.exe` cannot pose as `exe.jpg`) and the Unicode line
and paragraph separators, and lone surrogates (bytes of a name that is not valid UTF-8).
Everything else, accents, CJK and emoji included, stays as is.

`fit` shortens text to a Windows `NOTIFYICONDATAW` field, which counts UTF-16 code units
(an emoji is two) and keeps one for the terminating NUL.
"""

from __future__ import annotations

import sys
import unicodedata

ELLIPSIS = "…"
TOOLTIP_UNITS = 128
"""`szTip`: the tray tooltip, in WCHARs including the NUL."""
BALLOON_TEXT_UNITS = 256
"""`szInfo`: a notification's text."""
BALLOON_TITLE_UNITS = 64
"""`szInfoTitle`: a notification's title."""

_BIDI_AND_LINES = frozenset("\u061c\u200e\u200f\u2028\u2029"
                            "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unsafe(char: str) -> bool:
    """Controls, bidi/line separators, and lone surrogates (a name that is not valid UTF-8,
    decoded with surrogateescape), which no log file or console could encode."""
    return char in _BIDI_AND_LINES or unicodedata.category(char) in ("Cc", "Cs")


def printable(text: str) -> str:
    """`text` with every control, bidi or line-separator character written as an escape."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if _unsafe(c) else c for c in text)


def printable_lines(text: str) -> str:
    """`text` made `printable` line by line: its own line breaks stay line breaks."""
    return "\n".join(printable(line) for line in text.split("\n"))


def say(text: str) -> None:
    """Print `text` for the user, escaped (`printable_lines`)."""
    print(printable_lines(text), flush=True)


def warn(text: str) -> None:
    """Print `text` on stderr, escaped (`printable_lines`)."""
    print(printable_lines(text), file=sys.stderr, flush=True)


def utf16_units(text: str) -> int:
    """How many UTF-16 code units `text` takes (characters beyond U+FFFF take two)."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def fit(text: str, units: int) -> str:
    """`text` cut with an ellipsis so it fits a field of `units` WCHARs (NUL included).

    Cuts only between characters, so a surrogate pair is never split.
    """
    room = units - 1
    if utf16_units(text) <= room:
        return text
    kept: list[str] = []
    used = utf16_units(ELLIPSIS)
    for char in text:
        used += 2 if ord(char) > 0xFFFF else 1
        if used > room:
            break
        kept.append(char)
    return "".join(kept) + ELLIPSIS
