"""Classify an SMTP reply (code + text) into a verdict. Pure and table-driven.

The table is read top to bottom; the first rule that matches wins. It is ordered by
what a reply *means* in RFC 3463 terms (class.subject.detail), and by how sure the text
is about that meaning:

  1. 2xx: the recipient is accepted.
  2. Microsoft 365 directory-based edge blocking (5.4.1 + "Recipient address rejected:
     Access denied"), which Microsoft documents as "no such recipient".
  3. Greylisting (4xx).
  4. Refusals about *us* that no mailbox wording can override (X.7.x in meaning): block
     lists, reputation, relay denial, our sender address/domain/IP/HELO, SPF/DKIM/DMARC,
     spam/content filters; then the sender codes 5.1.7/5.1.8. A sender-side block must
     never become Invalid, so these come before every mailbox rule.
  5. Rate limits on *our* sending (per IP, per hour, per day) -- not the mailbox.
  6. X.5.3 too many recipients: another session helps.
  7. Weaker policy words ("policy", "blocked", "access denied", "not authorized"): a
     reply that says both "user unknown" and "blocked" is ambiguous, hence not Invalid.
  8. What the text says outright about the mailbox (5xx): full (X.2.2), receiving too
     fast or temporarily locked (X.2.1, the mailbox exists), disabled (X.2.1), does not
     exist (X.1.1). Explicit text beats a contradicting code here -- "User unknown"
     under 5.7.1, "Recipient overquota" under 5.1.1 -- but only where the wording is
     unambiguous.
  9. The enhanced code alone: 5.7.x policy, 5.2.2 full (before any rate phrase),
     rate/temporary wording on a 5xx, 5.2.1 disabled, 5.1.x addressing.
 10. Anything else: 4xx retried, 5xx unknown.

Text is normalised before matching: addresses removed (a recipient called spam@ must
not look like a spam block), typographic quotes and dashes to ASCII, common misspellings
fixed, case folded, whitespace collapsed.

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

import functools
import re
import unicodedata
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


class LazyPattern:
    """A regular expression compiled when first used: the rules' patterns cost more to
    compile than a short run spends classifying, and a 2xx reply needs none of them."""

    __slots__ = ("source", "_rx")

    def __init__(self, source: str) -> None:
        self.source = source
        self._rx: re.Pattern[str] | None = None

    @property
    def compiled(self) -> re.Pattern[str]:
        if self._rx is None:
            self._rx = re.compile(self.source)
        return self._rx

    def search(self, text: str) -> re.Match[str] | None:
        return self.compiled.search(text)

    def fullmatch(self, text: str) -> re.Match[str] | None:
        return self.compiled.fullmatch(text)


@dataclass(frozen=True)
class Rule:
    name: str
    classes: frozenset[int]  # first digit of the reply code: 2, 4, 5
    verdict_kind: Kind
    reason: str | None
    enhanced: LazyPattern | None = None  # matched against "5.1.1"
    text: LazyPattern | None = None  # searched in the normalised text
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


def _rx(*alternatives: str) -> LazyPattern:
    return LazyPattern("|".join(f"(?:{a})" for a in alternatives))


# --------------------------------------------------------------------------- phrases
GREYLIST = _rx(
    r"gr[ae]y-?list", r"gr[ae]y list", r"not yet authori[sz]ed to deliver",
    r"greylisting in action", r"postgrey",
)

# Refusals about our client's *address* (block lists, reputation, the client host and its
# reverse DNS): another egress, leaving from another address, may well be accepted.
_CLIENT_ADDRESS = (
    # block lists and reputation
    r"spamhaus", r"spamcop", r"\bsorbs\b", r"barracuda", r"abuseat", r"abusix", r"\bcbl\b",
    r"\brbl\b", r"dnsbl", r"\buribl\b", r"\bsurbl\b", r"proofpoint", r"ipcheck\.", r"cloudmark",
    r"sender\.office\.com", r"senderbase", r"\bsbrs\b", r"block ?list", r"black ?list",
    r"deny ?list", r"white ?list", r"allow ?list", r"blacklisted", r"block listed",
    r"\blisted (?:at|on|in|by)\b", r"reputation", r"\[ts[s]?\d\d\]", r"\[bl\d\d\]",
    r"unexpected volume or user complaints", r"permanently deferred",
    r"excessive unknown recipients", r"too many invalid recipients",
    r"banned sending", r"banned sender", r"traffic not accepted",
    # our client host
    r"client host (?:rejected|blocked)", r"client \[[^\]]*\] blocked",
    r"reverse (?:dns|hostname|lookup)", r"cannot find your (?:reverse )?hostname",
    r"\bptr\b", r"\brdns\b", r"ip name lookup", r"your ip", r"from your ip", r"client ip",
    r"sender ip",
)
CLIENT_ADDRESS = _rx(*_CLIENT_ADDRESS)

# About *us* (IP, HELO, sender, relay, authentication, spam/content) and never about
# the mailbox, whatever else the reply says.
POLICY_STRONG = _rx(
    *_CLIENT_ADDRESS,
    # spam, content
    r"\bspam", r"unsolicited", r"\bube\b", r"\bjunk", r"\bvirus", r"content rejected",
    r"spoof", r"rejected due to security", r"violating our security",
    # relay
    r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed))", r"unable to relay",
    r"not (?:permitted|allowed|configured) to relay", r"(?:do|does) not relay", r"no relaying",
    r"open relay", r"unauthori[sz]ed relay", r"rcpthosts",
    # our HELO, sender
    r"helo command rejected", r"invalid ip", r"no access (?:for|from)",
    r"sender address", r"sender domain", r"domain of sender", r"sender verify",
    r"sender (?:is )?(?:not allowed|rejected|denied|refused)", r"invalid sender",
    r"unroutable sender", r"provide a valid from", r"mail from \S+ (?:refused|rejected)",
    r"not allowed to send", r"sending denied", r"recipient preferences",
    r"connections? (?:will )?not (?:be )?accepted", r"not accepting connections",
    r"administrative prohibition", r"administratively denied", r"envelope blocked",
    r"host network,? not allowed",
    # authentication
    r"\bdmarc\b", r"\bspf\b", r"sender policy framework", r"\bdkim\b", r"unauthenticated",
    r"authentication required", r"smtp authentication", r"anti-?spoofing",
    r"tls required", r"tls/ssl", r"tls connection", r"must issue a starttls",
)

# Limits on *our* sending: per IP, per hour, per day, per client.
SENDER_RATE = _rx(
    r"too many recipients from\b", r"(?:has|have) sent (?:to )?too many",
    r"\b(?:this|per) (?:hour|day|minute)\b", r"daily (?:\S+ ){0,3}limit",
    r"sending (?:limit|quota) (?:exceeded|reached)", r"submission (?:rate|quota)", r"too many (?:connections|sessions)",
    r"connection rate limit", r"too many concurrent",
)

TOO_MANY_RECIPIENTS = _rx(
    r"too many recipients", r"too many rcpt", r"recipient limit", r"recipients? limit exceeded",
    r"maximum (?:number of )?recipients", r"messages per session", r"open a new session",
)

# Policy in weaker words: still never a verdict on the mailbox.
POLICY_WEAK = _rx(
    r"\bpolic(?:y|ies)\b", r"(?<!recipient account is )\bblocked\b", r"\bbanned\b",
    r"not authori[sz]ed", r"access denied", r"\bdenied\b", r"\bforbidden\b", r"\bprohibited\b",
)

# The mailbox is full (X.2.2). Not "sending quota", not "message size".
FULL = _rx(
    r"mailbox (?:is )?full", r"inbox (?:is )?full", r"full mailbox", r"mailfolder is full",
    r"over ?quota", r"(?<!sending )(?<!submission )quota (?:exceeded|full)",
    r"exceeded storage allocation", r"out of (?:storage|disk) space",
    r"insufficient (?:storage|disk space) (?:for|in) (?:the )?(?:user|mailbox|recipient)",
    r"not enough (?:storage|disk) space", r"mailbox size limit", r"mailbox.{0,20}capacity",
    r"mailbox has reached its maximum", r"too many messages (?:on the server|in (?:the |this |his |her )?mailbox)",
    r"quotaexceeded",
)

# The mailbox exists but takes no more right now (X.2.1 transient).
MAILBOX_RATE = _rx(r"receiving (?:e-?)?mail (?:too quickly|at a rate)", r"\btoo quickly\b")
MAILBOX_TEMPORARY = _rx(r"temporar(?:il)?y (?:locked|disabled|suspended|blocked)")

# The mailbox is disabled (X.2.1 permanent).
DISABLED = _rx(
    r"(?:account|mailbox|user|recipient|address)(?: has been| is)? (?:disabled|deactivated|suspended|inactive|closed|terminated)",
    r"disabled (?:recipient|user|account|mailbox)", r"inactive (?:email )?(?:address|account|mailbox|user)",
    r"account (?:has been |is )?(?:disabled|closed|terminated|locked|blocked by its owner)",
    r"(?:account|mailbox|user|address) (?:is )?no longer (?:active|in use|available|valid)",
    r"\bis no longer (?:valid|active|in use)\b", r"mailbox (?:is )?(?:not active|expired|frozen)",
    r"recipient(?:'s)? account (?:is |has been )?(?:blocked|suspended|disabled|locked)",
    r"archived recipient", r"disabled or discontinued", r"tried to reach is (?:disabled|inactive)",
)

# The mailbox does not exist (X.1.1), or its domain does not (X.1.2).
USER_UNKNOWN = _rx(
    r"user unknown", r"unknown user", r"unknown (?:recipient|mailbox|address|local[- ]?part|account)",
    r"no such (?:user|mailbox|recipient|account|address|person)",
    r"(?:user|mailbox|recipient|address|account|person|email)(?: \S+)? (?:does not|doesn't|do not) exist",
    r"does not exist", r"doesn't exist",
    r"(?:user|mailbox|recipient|address|account) (?:is )?not exist",
    r"(?:user|mailbox|recipient|address|account|addressee) (?:not found|unknown|invalid|not (?:listed|valid))",
    r"not (?:a )?valid (?:user|mailbox|recipient|address|account)",
    r"invalid (?:user|mailbox|recipient|address|account)",
    r"recip(?:ient)?notfound", r"doesn't have an? .{0,40}?account", r"no mailbox",
    r"mailbox (?:is )?unavailable", r"unrouteable address", r"undeliverable address",
    r"unknown or illegal (?:alias|user)", r"bad destination mailbox", r"not our (?:customer|user)",
    r"no account by that name", r"not a registered (?:\S+ )?user", r"\bhost unknown\b",
    r"couldn't find the recipient domain", r"weren't able to find the recipient domain",
)

# Rate or "try later" wording on a 5xx that nothing above explained.
RATE = _rx(
    r"rate limit", r"rate-limit", r"\bthrottl", r"frequency limit",
    r"try (?:again )?later", r"temporar(?:il)?y",
)

ENH_SENDER = LazyPattern(r"5\.1\.[78]")  # bad *sender* address: about our MAIL FROM
ENH_POLICY = LazyPattern(r"5\.7\.\d{1,3}")
ENH_FULL = LazyPattern(r"[45]\.2\.2")
ENH_DISABLED = LazyPattern(r"5\.2\.1")
ENH_UNKNOWN = LazyPattern(r"5\.1\.(?:[0-69]|1\d)")  # 5.1.0-5.1.6, 5.1.9, 5.1.10-5.1.19
ENH_TOO_MANY = LazyPattern(r"[45]\.5\.3")
ENH_M365_DIRECTORY = LazyPattern(r"5\.4\.1")
M365_DIRECTORY = LazyPattern(r"recipient address rejected: access denied")

_2, _4, _5, _45 = frozenset({2}), frozenset({4}), frozenset({5}), frozenset({4, 5})

RULES: tuple[Rule, ...] = (
    Rule("accepted", _2, "safe", None),
    # Microsoft 365 directory-based edge blocking: documented as "recipient not found"
    Rule("m365_recipient_not_found", _5, "invalid", "user_unknown",
         enhanced=ENH_M365_DIRECTORY, text=M365_DIRECTORY, mode="all"),
    Rule("greylisted", _4, "retry", "greylisted", text=GREYLIST),
    # --- about us: never a verdict on the mailbox ------------------------------------
    Rule("policy_4xx", _4, "retry", "antispam_block", text=POLICY_STRONG),
    Rule("policy", _5, "unknown", "antispam_block", text=POLICY_STRONG),
    Rule("sender_rejected", _5, "unknown", "antispam_block", enhanced=ENH_SENDER),
    Rule("too_many_recipients", _45, "too_many", None, enhanced=ENH_TOO_MANY),
    Rule("sender_rate_4xx", _4, "retry", "temporary_failure", text=SENDER_RATE),
    Rule("sender_rate", _5, "unknown", "temporary_failure", text=SENDER_RATE),
    Rule("too_many_recipients_text", _45, "too_many", None, text=TOO_MANY_RECIPIENTS),
    Rule("policy_words_4xx", _4, "retry", "antispam_block", text=POLICY_WEAK),
    Rule("policy_words", _5, "unknown", "antispam_block", text=POLICY_WEAK),
    # --- 4xx: the mailbox is full, else retried ----------------------------------------
    Rule("full_mailbox_4xx", _4, "risky", "full_inbox", enhanced=ENH_FULL, text=FULL),
    Rule("temporary", _4, "retry", "temporary_failure"),
    # --- 5xx: what the text says outright about the mailbox ---------------------------
    Rule("full_mailbox_text", _5, "risky", "full_inbox", text=FULL),
    Rule("mailbox_rate", _5, "unknown", "temporary_failure", text=MAILBOX_RATE),
    Rule("mailbox_temporary", _5, "unknown", "temporary_failure", text=MAILBOX_TEMPORARY),
    Rule("disabled_text", _5, "invalid", "disabled", text=DISABLED),
    Rule("user_unknown_text", _5, "invalid", "user_unknown", text=USER_UNKNOWN),
    # --- 5xx: the enhanced code ---------------------------------------------------------
    Rule("policy_5.7.x", _5, "unknown", "antispam_block", enhanced=ENH_POLICY),
    Rule("full_mailbox", _5, "risky", "full_inbox", enhanced=ENH_FULL),
    Rule("rate_limited", _5, "unknown", "temporary_failure", text=RATE),
    Rule("disabled", _5, "invalid", "disabled", enhanced=ENH_DISABLED),
    Rule("user_unknown", _5, "invalid", "user_unknown", enhanced=ENH_UNKNOWN),
    Rule("unclassified_5xx", _5, "unknown", "provider_error"),
)

_ENH_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_ANGLE = re.compile(r"<[^<>]*>")
_EMAILISH = re.compile(r"\S+@\S+")
_WS = re.compile(r"\s+")
_PUNCT = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
})
# misspellings seen in real replies, and their ASCII-apostrophe-less forms
_TYPOS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:recipent|reciepient|recepient|receipient|recipiant)(s?)\b"), r"recipient\1"),
    (re.compile(r"\b(?:dosn't|dosen't|does'nt|doesnt|dosent|dose not)\b"), "doesn't"),
    (re.compile(r"\badress(es)?\b"), r"address\1"),
)


def enhanced_code(message: str) -> str | None:
    """The first RFC 3463 enhanced status code in the text, e.g. ``"5.1.1"``."""
    m = _ENH_RE.search(message or "")
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def clean_text(message: str) -> str:
    """One case-folded line without addresses (a recipient called spam@ must not look like
    a spam block), typographic quotes and dashes as ASCII, known misspellings fixed.

    An ASCII reply (NFKC leaves it as it is) is cleaned once per text left without its
    <address>: a server's replies then repeat (every unknown user of a bulk gets the same)."""
    message = message or ""
    if message.isascii():
        return _clean_ascii(_ANGLE.sub(" ", message))
    return _clean_rest(_ANGLE.sub(" ", unicodedata.normalize("NFKC", message).translate(_PUNCT)))


@functools.lru_cache(maxsize=4096)
def _clean_ascii(text: str) -> str:
    return _clean_rest(text.translate(_PUNCT))  # the translation touches no < or >


def _clean_rest(t: str) -> str:
    """clean_text after <addresses> are gone."""
    t = _EMAILISH.sub(" ", t)
    t = _WS.sub(" ", t).strip().casefold()
    for rx, repl in _TYPOS:
        t = rx.sub(repl, t)
    return t


def classify(code: int, message: str | None) -> Verdict:
    """Verdict for the reply to RCPT TO (or to a command before it)."""
    by_class = _BY_CLASS.get(code // 100)
    if by_class is not None:
        return by_class
    return _verdict(code, enhanced_code(message or ""), clean_text(message or ""))


def _class_only(digit: int) -> Verdict | None:
    """The verdict of every reply of this class, when the first rule for it tests nothing
    else (2xx: "accepted"); None when the text or the enhanced code matters."""
    for rule in RULES:
        if digit in rule.classes:
            if rule.enhanced is None and rule.text is None:
                return Verdict(rule.verdict_kind, rule.reason, rule.name)
            return None
    return None


_BY_CLASS = {d: v for d in (2, 4, 5) if (v := _class_only(d)) is not None}


@functools.lru_cache(maxsize=4096)
def _verdict(code: int, enh: str | None, text: str) -> Verdict:
    """The first rule that matches. Cached: the cleaned text has no addresses left, so a
    server's replies repeat (every unknown user of a bulk gets the same one)."""
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


def about_our_address(message: str | None) -> bool:
    """True when a refusal is about the address our session came from (a block list, our
    reputation, our client host): a session from another egress may be answered."""
    return bool(CLIENT_ADDRESS.search(clean_text(message or "")))
