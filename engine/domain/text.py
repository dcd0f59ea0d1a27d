"""One rule for the text people name things with (account ids, task names, key labels,
webhook descriptions, Idempotency-Keys): "printable" means no control, format, surrogate,
private-use or separator character except the space. That is what `str.isprintable`
refuses, less the code points Unicode has not assigned yet (no client can know which those
are, and they harm nothing).

Written once, as a regular expression: the engine checks text with it (`printable`) and
the API publishes the very same pattern in its OpenAPI document (`PRINTABLE_PATTERN`), so
the document allows exactly what the server takes. tests/unit/test_text.py checks the
ranges against the Unicode database.
"""
from __future__ import annotations

import re

# (first, last) code points refused: Unicode categories Cc, Cf, Cs, Co, Zl, Zp, and Zs but U+0020
REFUSED_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x1680, 0x1680),
    (0x180E, 0x180E), (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F),
    (0x3000, 0x3000), (0xD800, 0xF8FF), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD),
)


def _char(code: int) -> str:
    # \uXXXX is read alike by Python's re, ECMA-262 and Rust's regex; past the BMP the
    # character itself (ECMA-262 has no portable escape for it)
    return f"\\u{code:04X}" if code <= 0xFFFF else chr(code)


_CLASS = "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in REFUSED_RANGES)
PRINTABLE_PATTERN = f"^[^{_CLASS}]*$"  # the empty text too: a length bound says when one is needed
_PRINTABLE = re.compile(PRINTABLE_PATTERN)


def printable(text: str) -> bool:
    return _PRINTABLE.fullmatch(text) is not None  # fullmatch: Python's `$` also matches before a final "\n"
