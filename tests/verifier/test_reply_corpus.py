"""The classifier against a corpus of real SMTP replies that no one here wrote.

Every row of ``corpus/replies.csv`` is one reply as a public source gives it (mail-server
source and test output, provider postmaster pages, a public collection of real bounces),
with the source, the RFC 3463 class the reply means, and the verdict that meaning calls
for. Rows are ordered by that class (class.subject.detail). See ``corpus/README.md``.

The test classifies every row and reports all mismatches at once.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from verifier.classify import classify

CORPUS = Path(__file__).parent / "corpus" / "replies.csv"
COLUMNS = ["rfc3463_class", "code", "enhanced", "text", "expected_kind", "expected_reason", "source", "note"]
KINDS = {"safe", "invalid", "risky", "unknown", "retry", "too_many"}
REASONS = {
    "safe": {""}, "too_many": {""},
    "invalid": {"user_unknown", "disabled"},
    "risky": {"full_inbox"},
    "unknown": {"antispam_block", "temporary_failure", "provider_error"},
    "retry": {"greylisted", "temporary_failure", "antispam_block"},
}


def _load() -> list[dict[str, str]]:
    with CORPUS.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def _class_key(cls: str) -> tuple[int, ...]:
    return tuple(int(p) for p in cls.split("."))


def _message(row: dict[str, str]) -> str:
    """The reply text as aiosmtplib hands it over: the code apart, the enhanced code first."""
    return f"{row['enhanced']} {row['text']}" if row["enhanced"] else row["text"]


ROWS = _load()


def test_corpus_is_well_formed():
    assert len(ROWS) >= 200
    keys = [(r["code"], r["enhanced"], r["text"]) for r in ROWS]
    assert len(keys) == len(set(keys)), "duplicate replies"
    for r in ROWS:
        assert r["source"], r
        assert r["code"].isdigit() and len(r["code"]) == 3, r
        assert r["expected_kind"] in KINDS, r
        assert r["expected_reason"] in REASONS[r["expected_kind"]], r
    classes = [_class_key(r["rfc3463_class"]) for r in ROWS]
    assert classes == sorted(classes), "rows must be ordered by RFC 3463 class.subject.detail"


def test_corpus_covers_the_meanings_that_matter():
    seen = Counter(r["rfc3463_class"] for r in ROWS)
    for cls in ("2.1.5", "4.2.1", "4.2.2", "4.3.0", "4.5.3", "4.7.1", "5.1.1", "5.1.2", "5.1.10",
                "5.2.1", "5.2.2", "5.2.3", "5.5.3", "5.7.1"):
        assert seen[cls], cls
    texts = " ".join(r["text"] for r in ROWS).casefold()
    for variant in ("\u2019", "\u2018", "dosn't", "mailbox is unavailable", "no mailbox here by that name",
                    "too many messages", "spamhaus", "barracuda", "spamcop", "sorbs", "dmarc", "spf"):
        assert variant in texts, variant


def test_every_corpus_reply():
    """All rows at once: one failure lists every mismatch."""
    wrong = []
    for i, r in enumerate(ROWS, start=2):  # line 1 is the header
        v = classify(int(r["code"]), _message(r))
        got = (v.kind, v.reason or "")
        want = (r["expected_kind"], r["expected_reason"])
        if got != want:
            wrong.append(f"line {i}: {r['code']} {_message(r)[:110]!r}\n"
                         f"    want {want[0]}/{want[1] or '-'}  got {got[0]}/{got[1] or '-'} (rule {v.rule})")
    assert not wrong, f"{len(wrong)} of {len(ROWS)} corpus replies misclassified:\n" + "\n".join(wrong)


@pytest.mark.parametrize("row", [r for r in ROWS if r["expected_kind"] != "invalid"
                                 and r["expected_reason"] == "antispam_block"],
                         ids=lambda r: f"{r['code']}-{r['text'][:30]}")
def test_sender_side_blocks_are_never_invalid(row):
    assert classify(int(row["code"]), _message(row)).kind != "invalid"
