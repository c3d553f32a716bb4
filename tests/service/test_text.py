"""Text a person reads: control characters escaped, tray fields fitted in UTF-16 units."""

from __future__ import annotations

import os

import pytest

from service.text import (
    BALLOON_TEXT_UNITS,
    BALLOON_TITLE_UNITS,
    ELLIPSIS,
    TOOLTIP_UNITS,
    fit,
    printable,
    utf16_units,
)

HOSTILE = ["\x1b[2J", "\x1b]0;pwned\x07", "a\nb", "a\rb", "\x00", "\x7f", "\x85", "\x9b31m",
           "\u202egpj.exe", "\u2066x\u2069", "\u200e", "\u061c", "l1\u2028l2", "p1\u2029p2", "\t"]


@pytest.mark.parametrize("text", HOSTILE)
def test_control_bidi_and_line_separators_are_escaped(text):
    shown = printable(text)
    assert shown.isprintable(), repr(shown)
    assert "\\" in shown
    assert printable(shown) == shown, "escaping twice changes nothing"


def test_escapes_are_readable_and_exact():
    assert printable("evil\n2026-01-01 | ERROR | x.jpg") == "evil\\n2026-01-01 | ERROR | x.jpg"
    assert printable("\x1b[2J\r.jpg") == "\\x1b[2J\\r.jpg"
    assert printable("photo\u202egpj.exe") == "photo\\u202egpj.exe"
    assert printable("\x9b") == "\\x9b"


def test_a_name_that_is_not_valid_utf8_becomes_writable_text():
    """`os.fsdecode(b"caf\xe9.jpg")` holds a lone surrogate, which no UTF-8 log file or
    console can encode: it is shown as an escape instead of failing the log record."""
    name = os.fsdecode(b"caf\xe9.jpg")
    shown = printable(name)
    assert shown == "caf\\udce9.jpg"
    assert shown.encode("utf-8").decode("utf-8") == shown


@pytest.mark.parametrize("text", ["café crème.jpg", "猫の写真.png", "😀👍🏽 party.heic",
                                  "👨\u200d👩\u200d👧 family.jpg", "C:\\Users\\Zoë\\in\\a b.jpg",
                                  "e\u0301\u0301.jpg", ""])
def test_ordinary_unicode_stays_as_it_is(text):
    assert printable(text) == text


def test_utf16_units_count_astral_characters_twice():
    assert utf16_units("abc") == 3
    assert utf16_units("é猫") == 2
    assert utf16_units("😀") == 2
    assert utf16_units("a😀b") == 4


@pytest.mark.parametrize("units", [TOOLTIP_UNITS, BALLOON_TEXT_UNITS, BALLOON_TITLE_UNITS])
def test_fit_keeps_text_that_fits_exactly(units):
    exact = "x" * (units - 1)
    assert fit(exact, units) == exact
    emoji = "😀" * ((units - 1) // 2) + "x" * ((units - 1) % 2)
    assert utf16_units(emoji) == units - 1
    assert fit(emoji, units) == emoji


@pytest.mark.parametrize("units", [TOOLTIP_UNITS, BALLOON_TEXT_UNITS, BALLOON_TITLE_UNITS])
def test_fit_cuts_one_unit_over_with_an_ellipsis(units):
    over = "x" * units
    cut = fit(over, units)
    assert utf16_units(cut) == units - 1
    assert cut == "x" * (units - 2) + ELLIPSIS


@pytest.mark.parametrize("units", [TOOLTIP_UNITS, BALLOON_TEXT_UNITS, BALLOON_TITLE_UNITS])
@pytest.mark.parametrize("prefix", ["", "a"])
def test_fit_never_splits_a_surrogate_pair(units, prefix):
    text = prefix + "😀" * units
    cut = fit(text, units)
    assert cut.endswith(ELLIPSIS)
    assert utf16_units(cut) <= units - 1
    assert utf16_units(cut) >= units - 2, "at most the one unit a pair could not use is lost"
    body = cut[:-1]
    assert body == prefix + "😀" * (len(body) - len(prefix))
    encoded = cut.encode("utf-16-le")
    assert encoded.decode("utf-16-le") == cut, "a whole number of characters"


def test_fit_with_mixed_long_names():
    name = "Überraschungsparty 🎉 東京 " * 20
    cut = fit(name, TOOLTIP_UNITS)
    assert utf16_units(cut) <= TOOLTIP_UNITS - 1
    assert name.startswith(cut[:-1]) and cut.endswith(ELLIPSIS)
