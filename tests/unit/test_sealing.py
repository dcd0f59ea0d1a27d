"""Sealing (engine/keyring.py Sealer): deterministic AES-SIV in URL-safe base64 without padding."""
from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import given, strategies as st

from engine.domain.errors import InvariantViolation
from engine.keyring import SEALED, Sealer
from events.base import is_sealed

KEY = bytes(range(64))


@given(st.text().filter(lambda text: not is_sealed(text)))
def test_any_text_opens_to_itself_and_seals_as_the_stored_values_were_sealed(text):
    """The texts already in stores were written with base64.urlsafe_b64encode, padding cut:
    the faster encoding must write and read exactly those."""
    sealer = Sealer(KEY)
    sealed = sealer.seal(text)
    stored_before = SEALED + base64.urlsafe_b64encode(AESSIV(KEY).encrypt(text.encode(), None)).decode().rstrip("=")
    assert sealed == stored_before
    assert Sealer(KEY).open(sealed) == text  # a fresh sealer: nothing remembered


@pytest.mark.parametrize("damage", [lambda s: s[:-1], lambda s: s[:-2], lambda s: s[:5] + ("A" if s[5] != "A" else "B") + s[6:],
                                    lambda s: s + "é"])
def test_a_damaged_sealed_text_is_an_invariant_violation_not_a_crash(damage):
    sealed = Sealer(KEY).seal("ann@example.com")
    with pytest.raises(InvariantViolation, match="does not open"):
        Sealer(KEY).open(damage(sealed))


@pytest.mark.parametrize("plain", ["§x@example.com", "§", "§AAAA", "§" + "A" * 30 + "@x.org", "§ hello"])
def test_a_plain_text_that_starts_like_a_sealed_one_is_sealed_too(plain):
    """An address "§x@example.com" is valid (SMTPUTF8): taken for a sealed value, it was stored
    in plain text, and opening it failed the whole bulk."""
    sealed = Sealer(KEY).seal(plain)
    assert sealed != plain and is_sealed(sealed)
    assert Sealer(KEY).open(sealed) == plain
    assert Sealer(KEY).seal(sealed) == sealed  # a sealed value passes as it is
