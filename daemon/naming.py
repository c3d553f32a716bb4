"""Names Windows can create, and the error notes' names.

Windows refuses reserved device names (`CON`, `NUL.txt`, `com1.ply`...), names ending in a
dot or a space, and the characters `<>:"/\\|?*`; it also sees `Cat_1.ply` and `cat_1.ply`
as one file. Photos can carry such names on other file systems (a Linux share, a camera
card), so every name the daemon makes from a photo's is checked here rather than trusted.
Result names (timestamped, never over an old one) are `daemon.results`'.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePath

from pipeline.atomic import MAX_NAME_BYTES

_RESERVED = {"CON", "PRN", "AUX", "NUL",
             *(f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789¹²³")}
_INVALID = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
NOTE_SUFFIX = ".error.txt"
"""An error note is `<photo name>.error.txt` (see `note_name`)."""


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def windows_name_problem(name: str) -> str | None:
    """Why Windows cannot create a file called `name`, or None if it can."""
    if not name:
        return "the name is empty"
    bad = _INVALID.search(name)
    if bad is not None:
        return f"it contains {bad.group()!r}, which Windows does not allow in names"
    if name[-1] in ". ":
        return "it ends in a dot or a space, which Windows drops"
    base = name.split(".", 1)[0].rstrip(" ")
    if base.upper() in _RESERVED:
        return f"{base!r} is a device name Windows reserves (with any extension)"
    return None


def windows_safe_name(name: str) -> str:
    """`name` changed just enough to be valid on Windows (bad characters become `_`)."""
    name = _INVALID.sub("_", name) or "_"
    if name[-1] in ". ":
        name += "_"
    base, dot, rest = name.partition(".")
    if base.rstrip(" ").upper() in _RESERVED:
        name = f"{base}_{dot}{rest}"
    return name


def shorten(text: str, max_bytes: int) -> str:
    """`text`, cut to `max_bytes` UTF-8 bytes with a hash of the whole kept, so two long
    texts stay distinct."""
    if _utf8_len(text) <= max_bytes:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    cut = text[:max_bytes - 9]  # every character is at least one byte
    while _utf8_len(cut) > max_bytes - 9:
        cut = cut[:-1]
    return f"{cut}~{digest}"


def _escape(part: str) -> str:
    """Percent-encode `%` and what Windows refuses, so distinct paths stay distinct."""
    return "".join(f"%{ord(c):02X}" if c == "%" or _INVALID.match(c) else c for c in part)


def note_name(photo: PurePath) -> str:
    """The error note's name for `photo` (a path relative to the inputs folder).

    One note per photo, not per stem: `photo.jpg` and `photo.png` get
    `photo.jpg.error.txt` and `photo.png.error.txt`; `a/photo.jpg` gets
    `a%2Fphoto.jpg.error.txt`. The encoding is one-to-one (`%` itself is escaped), valid
    on Windows, and cut with a hash to fit in 255 bytes with its temp name.
    """
    name = "%2F".join(_escape(part) for part in photo.parts if part not in ("", ".", "/"))
    base, dot, rest = name.partition(".")
    if windows_name_problem(base + NOTE_SUFFIX) is not None:
        # A reserved device name (`CON.jpg`): escaping its last letter keeps the encoding
        # one-to-one. Bad characters are escaped already and the suffix ends the name.
        name = f"{base[:-1]}%{ord(base[-1]):02X}{dot}{rest}"
    return shorten(name, MAX_NAME_BYTES - len(NOTE_SUFFIX)) + NOTE_SUFFIX
