"""Classify an SMTP reply (code + text) into a verdict. Pure and table-driven.

The table is read top to bottom; the first rule that matches wins. Order matters:
reputation and policy refusals (Spamhaus, block lists, "blocked", 5.7.x, relay denied,
missing reverse DNS, sender/HELO/client restrictions that Postfix reports at RCPT time)
come *before* every "user unknown" phrase, because calling a reputation block Invalid is
the most expensive mistake a verifier can make.

Verdict kinds:
  safe            2xx: the server accepts the recipient
  invalid         permanent and about this mailbox (reason: user_unknown | disabled)
  risky           deliverable in principle, but (reason: full_inbox)
  unknown         final, no retry (reason: antispam_block | temporary_failure | provider_error)
  retry           4xx: try again inside the retry window; if it never clears, unknown
                  with ``reason`` (greylisted | temporary_failure | antispam_block)
  too_many        "452 too many recipients": open another session for the rest
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["safe", "invalid", "risky", "unknown", "retry", "too_many"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str | None
    rule: str

    @property
    def final(self) -> bool:
        return self.kind in ("safe", "invalid", "risky", "unknown")


@dataclass(frozen=True)
class Rule:
    name: str
    classes: frozenset[int]  # first digit of the reply code: 2, 4, 5
    verdict_kind: Kind
    reason: str | None
    enhanced: re.Pattern[str] | None = None  # matched against "5.1.1"
    text: re.Pattern[str] | None = None  # matched against the cleaned, lower-case text
    # how enhanced and text combine when both are given
    mode: Literal["any", "all"] = "any"

    def matches(self, code: int, enh: str | None, text: str) -> bool:
        if code // 100 not in self.classes:
            return False
        tests = []
        if self.enhanced is not None:
            tests.append(enh is not None and bool(self.enhanced.fullmatch(enh)))
        if self.text is not None:
            tests.append(bool(self.text.search(text)))
        if not tests:
            return True
        return all(tests) if self.mode == "all" else any(tests)


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


TOO_MANY_RECIPIENTS = _rx(
    r"too many recipients", r"too many rcpt", r"recipient limit", r"recipients? limit exceeded",
    r"maximum (?:number of )?recipients",
)

GREYLIST = _rx(
    r"gr[ae]y-?list", r"gr[ae]y list", r"not yet authori[sz]ed to deliver",
    r"greylisting in action", r"postgrey",
)

# Reputation and policy: about *us* (IP, HELO, sender, rate of spam), never the mailbox.
POLICY = _rx(
    r"spamhaus", r"spamcop", r"\bsorbs\b", r"barracuda", r"abuseat", r"\bcbl\b", r"\brbl\b",
    r"dnsbl", r"\buribl\b", r"\bsurbl\b", r"ipcheck\.proofpoint", r"sender\.office\.com",
    r"block ?list", r"black ?list", r"deny ?list", r"\bblocked\b", r"\bbanned\b",
    r"\bblacklisted\b", r"\blisted (?:at|on|in|by)\b", r"reputation", r"\bspam\b", r"spammer",
    r"unsolicited", r"\bjunk\b", r"\bpolic(?:y|ies)\b",
    r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed))", r"unable to relay",
    r"not (?:permitted|allowed) to relay", r"(?:do|does) not relay", r"no relaying",
    r"client host rejected", r"sender address rejected", r"helo command rejected",
    r"reverse (?:dns|hostname|lookup)", r"cannot find your (?:reverse )?hostname",
    r"\bptr\b", r"\brdns\b", r"not authori[sz]ed", r"authentication required",
    r"\bdmarc\b", r"\bspf\b", r"\bdkim\b", r"unauthenticated", r"anti-?spoofing",
    r"administrative prohibition", r"envelope blocked", r"\[ts[s]?\d\d\]", r"\[bl\d\d\]",
    r"access denied, (?:banned|traffic)", r"traffic not accepted", r"your ip", r"from your ip",
    r"mail from \S+ refused", r"connections? (?:will )?not (?:be )?accepted",
    r"permanently deferred", r"rejected due to security", r"not allowed to send",
    r"sender (?:is )?(?:not allowed|rejected|denied)", r"bad reputation", r"\bsenderbase\b",
)

# Server-side rate limits on a 5xx: they are about us and pass with time.
RATE = _rx(
    r"receiving mail at a rate", r"rate limit", r"rate-limit", r"too many (?:messages|mails|emails|connections|sessions)",
    r"try (?:again )?later", r"temporar(?:il)?y", r"\bthrottl",
)

FULL = _rx(
    r"mailbox (?:is )?full", r"inbox (?:is )?full", r"over ?quota", r"quota (?:exceeded|full)",
    r"exceed(?:s|ed)? (?:\S+ )?(?:storage|quota|mailbox size)", r"mailbox size limit",
    r"insufficient (?:storage|disk space) (?:for|in) (?:the )?(?:user|mailbox|recipient)",
    r"out of (?:storage|disk) space", r"not enough (?:storage|disk) space", r"mailbox.{0,20}capacity",
    r"quotaexceeded",
)

DISABLED = _rx(
    r"\bdisabled\b", r"\bdeactivated\b", r"\binactive\b", r"\bsuspended\b",
    r"account (?:has been |is )?(?:closed|terminated|locked|blocked by its owner)",
    r"no longer (?:active|in use|available|valid)", r"mailbox (?:is )?(?:not active|expired|frozen)",
)

USER_UNKNOWN = _rx(
    r"user unknown", r"unknown user", r"unknown (?:recipient|mailbox|address|local[- ]?part|account)",
    r"no such (?:user|mailbox|recipient|account|address|person)",
    r"(?:user|mailbox|recipient|address|account|person)(?: \S+)? (?:does not|doesn't|doesnt|does n't) exist",
    r"does not exist", r"doesn't exist",
    r"(?:user|mailbox|recipient|address|account) (?:not found|unknown|invalid|unavailable|not (?:listed|valid))",
    r"not (?:a )?valid (?:user|mailbox|recipient|address|account)",
    r"invalid (?:user|mailbox|recipient|address|account)",
    r"recip(?:ient)?notfound", r"doesn'?t have an? \S+ account", r"no mailbox", r"mailbox unavailable",
    r"unrouteable address", r"undeliverable address", r"no such recipient here",
    r"recipient address rejected: access denied",  # Microsoft 365 directory-based edge blocking
    r"address rejected", r"user not found", r"unknown or illegal alias", r"bad destination mailbox",
    r"addressee unknown", r"mailbox not found", r"not our customer", r"no account by that name",
)

ENH_SENDER = re.compile(r"5\.1\.[78]")  # bad *sender* address: about our MAIL FROM
ENH_POLICY = re.compile(r"5\.7\.\d{1,3}")
ENH_FULL = re.compile(r"[45]\.2\.2")
ENH_DISABLED = re.compile(r"5\.2\.1")
ENH_UNKNOWN = re.compile(r"5\.1\.(?:[0-69]|1\d)|5\.4\.1")


RULES: tuple[Rule, ...] = (
    Rule("accepted", frozenset({2}), "safe", None),
    # --- transient (4xx) ---------------------------------------------------------------
    Rule("too_many_recipients", frozenset({4, 5}), "too_many", None,
         enhanced=re.compile(r"[45]\.5\.3"), text=TOO_MANY_RECIPIENTS),
    Rule("greylisted", frozenset({4}), "retry", "greylisted", text=GREYLIST),
    Rule("full_mailbox_4xx", frozenset({4}), "risky", "full_inbox", enhanced=ENH_FULL, text=FULL),
    Rule("policy_4xx", frozenset({4}), "retry", "antispam_block", text=POLICY),
    Rule("temporary", frozenset({4}), "retry", "temporary_failure"),
    # --- permanent (5xx): policy first, then the mailbox --------------------------------
    Rule("policy", frozenset({5}), "unknown", "antispam_block", text=POLICY),
    Rule("policy_5.7.x", frozenset({5}), "unknown", "antispam_block", enhanced=ENH_POLICY),
    Rule("sender_rejected", frozenset({5}), "unknown", "antispam_block", enhanced=ENH_SENDER),
    Rule("rate_limited", frozenset({5}), "unknown", "temporary_failure", text=RATE),
    Rule("full_mailbox", frozenset({5}), "risky", "full_inbox", enhanced=ENH_FULL, text=FULL),
    Rule("disabled", frozenset({5}), "invalid", "disabled", enhanced=ENH_DISABLED, text=DISABLED),
    Rule("user_unknown", frozenset({5}), "invalid", "user_unknown", enhanced=ENH_UNKNOWN, text=USER_UNKNOWN),
    Rule("unclassified_5xx", frozenset({5}), "unknown", "provider_error"),
)

_ENH_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_ANGLE = re.compile(r"<[^<>]*>")
_EMAILISH = re.compile(r"\S+@\S+")
_WS = re.compile(r"\s+")


def enhanced_code(message: str) -> str | None:
    """The first RFC 3463 enhanced status code in the text, e.g. ``"5.1.1"``."""
    m = _ENH_RE.search(message or "")
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def clean_text(message: str) -> str:
    """Lower case, one line, without addresses (a recipient called spam@ must not look
    like a spam block)."""
    t = _ANGLE.sub(" ", message or "")
    t = _EMAILISH.sub(" ", t)
    return _WS.sub(" ", t).strip().lower()


def classify(code: int, message: str | None) -> Verdict:
    """Verdict for the reply to RCPT TO (or to a command before it)."""
    text = clean_text(message or "")
    enh = enhanced_code(message or "")
    for rule in RULES:
        if rule.matches(code, enh, text):
            return Verdict(rule.verdict_kind, rule.reason, rule.name)
    return Verdict("unknown", "provider_error", "unexpected_code")


def classify_session_reply(code: int, message: str | None) -> Verdict:
    """Verdict for a refusal before any RCPT (greeting, EHLO, MAIL FROM).

    Such a refusal is never about a mailbox: a 5xx there is policy (unknown,
    antispam_block), a 4xx is retried.
    """
    v = classify(code, message)
    if v.kind in ("safe", "retry"):
        return v
    if v.kind == "too_many":
        return Verdict("retry", "temporary_failure", "session_" + v.rule)
    if code // 100 == 4:
        return Verdict("retry", "temporary_failure", "session_temporary")
    if v.reason == "temporary_failure":
        return Verdict("unknown", "temporary_failure", "session_" + v.rule)
    return Verdict("unknown", "antispam_block", "session_refused")
