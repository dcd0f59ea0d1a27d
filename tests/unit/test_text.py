"""The one "printable" rule (engine/domain/text.py) is what the Unicode database says."""
from __future__ import annotations

import unicodedata

import pytest

from engine.domain.text import REFUSED_RANGES, printable

REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def _refused(code: int) -> bool:
    category = unicodedata.category(chr(code))
    return category in REFUSED_CATEGORIES or (category == "Zs" and code != 0x20)


def test_the_ranges_are_the_refused_categories_of_this_unicode_database():
    in_ranges = {code for first, last in REFUSED_RANGES for code in range(first, last + 1)}
    assert in_ranges == {code for code in range(0x110000) if _refused(code)}


def test_it_is_str_isprintable_but_for_unassigned_code_points():
    for code in range(0x110000):
        if unicodedata.category(chr(code)) != "Cn":
            assert printable(chr(code)) == chr(code).isprintable(), hex(code)


@pytest.mark.parametrize("text", ["", "Acme GmbH", "café ☕", "名前", "\U0001F600", "\U000300FF"])
def test_printable(text):
    assert printable(text)


@pytest.mark.parametrize("text", ["tab\there", "line\n", "\n", "nbsp\u00a0", "zero\u200bwidth", "\u202eevil", "\ud800"])
def test_not_printable(text):
    assert not printable(text)


def test_the_published_pattern_escapes_the_bmp_and_writes_astral_characters_as_themselves():
    # ECMA-262 and Rust read \uXXXX alike only inside the BMP (engine/domain/text.py)
    from engine.domain.text import PRINTABLE_PATTERN, _char

    assert (_char(0x00AD), _char(0xFFFF), _char(0x10000), _char(0x110BD)) == (
        "\\u00AD", "\\uFFFF", "\U00010000", "\U000110BD")
    assert "\\uFEFF" in PRINTABLE_PATTERN and "\U000110BD" in PRINTABLE_PATTERN
