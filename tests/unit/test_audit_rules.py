"""The audit's rules, fast (what mutation testing runs against engine/audit.py and
engine/chain.py, docs/mutation.md): the tamper catalogue of
tests/integration/test_tamper_catalogue.py run in process on a temp SQLite file.

The log is made once per module through the engine's own commands (make_log: every money
path), copied for each case, tampered with straight in the store, its read models rebuilt
so that they agree with the lie, and `audit` must name exactly the rules the tamper
breaks, each as often as it breaks it. The integration catalogue proves the same through
`vec audit` on both stores; this one runs in a fraction of a second per case.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import uuid
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Optional

import pytest

from engine import chain
from engine.audit import MAX_PER_RULE, AuditReport, audit, shape_error
from entrypoints.settings import EngineSettings
from engine.domain.errors import InvariantViolation
from engine.service import Engine
from engine.store import open_database
from tests.integration.test_tamper_catalogue import (
    CATALOGUE,
    REFUND,
    T0,
    RawLog,
    Tamper,
    alter,
    both,
    delete,
    duplicate,
    first_task_stream,
    pick,
    make_log,
    renumbered,
    swap,
)


_BASE_LOG: list[bytes] = []  # the SQLite file make_log leaves, made once per process


@pytest.fixture
def base(tmp_path_factory) -> Any:
    """The file of the log made through the engine. Made once per process and kept in memory:
    mutmut forks a process per mutant from one that has run these tests, so each mutant of
    the auditor reuses it instead of making the log again (the auditor is not on its path)."""
    if not _BASE_LOG:
        folder = tmp_path_factory.mktemp("audit-made")
        make_log(f"sqlite:///{folder}/vec.db", folder)
        _BASE_LOG.append((folder / "vec.db").read_bytes())
    path = tmp_path_factory.mktemp("audit-base") / "vec.db"
    path.write_bytes(_BASE_LOG[0])
    return path


def audited(base, tmp_path, change=None, renumber: bool = True, anchor: tuple[int, str] | None = None):
    """The audit of a copy of the base log, tampered with by `change` (rows -> rows)."""
    shutil.copy(base, tmp_path / "vec.db")
    url = f"sqlite:///{tmp_path}/vec.db"
    if change is not None:
        raw = RawLog(url)
        rows = change(raw.rows())
        raw.write(renumbered(rows) if renumber else rows)
    db = open_database(url)
    try:
        try:
            db.projector.rebuild()  # the read models agree with the lie: only the rules can tell
        except InvariantViolation:
            pass  # a malformed event stops them; the audit names it
        return audit(db, anchor)
    finally:
        db.close()


def test_the_log_made_through_the_engine_holds_every_rule(base, tmp_path):
    rows = RawLog(f"sqlite:///{base}").rows()
    report = audited(base, tmp_path)
    assert report.ok and report.violations == [] and report.found == 0 and dict(report.broken) == {}
    assert (report.events, report.accounts, report.tasks) == (len(rows), 1, 7)
    assert (report.mode, report.since, report.head) == ("full", 0, len(rows))
    assert report.chain_head == rows[-1]["chain"].hex()
    assert report.to_json() == {"ok": True, "events": len(rows), "accounts": 1, "tasks": 7, "violations": [],
                                "broken_rules": {}, "mode": "full", "since": 0, "head": len(rows),
                                "chain_head": rows[-1]["chain"].hex()}


# tamper -> every rule the tampered log breaks, with its number of violations: the rule the
# tamper names, the chain (each link it breaks: an event inserted, deleted or moved renumbers
# the rest), and what the lie breaks downstream (a missing debit unbalances the account's
# later debits, a dropped result leaves its task unsettled...). Exact, so that a rule that
# fires too often, too rarely or for a neighbour's fault is caught.
EXPECTED: dict[str, dict[str, int]] = {
    'an event deleted, its gap left': {'chain': 1, 'chunk-failed': 1, 'chunk-submitted': 2, 'positions': 1, 'refund-cause': 1, 'result': 3, 'settlement': 2, 'stream-versions': 1, 'task-completed': 2},
    'an event moved past the head': {'chain': 2, 'positions': 2, 'stream-versions': 2, 'task-deleted': 2, 'task-erased': 1},
    'two events of one stream reordered': {'chain': 3, 'result': 1, 'settlement': 1, 'stream-versions': 3, 'task-completed': 2},
    'a grant put in a task stream': {'chain': 35, 'stream-kind': 1, 'welcome': 1},
    'a result put in an account stream': {'chain': 29, 'settlement': 1, 'stream-kind': 1, 'task-completed': 2},
    'a stream of no known kind': {'chain': 7, 'stream-kind': 1, 'task-erased': 5},
    'a payload that is not JSON': {'chain': 1, 'monthly-expiry': 2, 'monthly-first': 3, 'monthly-period': 2, 'refund-outstanding': 2, 'settlement': 2, 'well-formed': 1},
    'an unknown event type': {'balance': 4, 'chain': 1, 'refund-outstanding': 4, 'well-formed': 1},
    'a field missing': {'balance': 4, 'chain': 1, 'refund-outstanding': 4, 'well-formed': 1},
    'a schema version from the future': {'chain': 1, 'debit': 1, 'refund-cause': 2, 'settlement': 2, 'task-created': 10, 'well-formed': 1},
    'an amount that is text': {'chain': 1, 'read-models': 1, 'well-formed': 1},
    'a negative count': {'chain': 1, 'late-result': 1, 'refund-cause': 1, 'settlement': 1, 'task-erased': 1, 'well-formed': 1},
    # the audit reads the log sealed, as the read models store it, and opens each sealed value
    # once to prove it opens: the event that does not is named, and both folds agree on the rest
    'a sealed address that opens with no key': {'chain': 1, 'refund-cause': 1, 'result': 1, 'settlement': 1, 'task-completed': 2, 'well-formed': 1},
    'the account opened twice': {'account-opened': 1, 'chain': 67, 'welcome': 2},
    'the account opened under another id': {'account-opened': 1, 'chain': 1},
    'a welcome of 300': {'chain': 1, 'welcome': 1},
    'an address settled twice in one batch': {'chain': 1, 'result': 1, 'settlement': 1, 'task-completed': 2},
    'a batch settling an address of another chunk': {'chain': 1, 'result': 1, 'settlement': 1, 'task-completed': 2},
    'a batch whose evidence column is shorter than its addresses': {'chain': 1, 'settlement': 1, 'task-completed': 2, 'well-formed': 1},
    'a batch of Unknowns with a reason no Unknown has': {'chain': 1, 'refund-cause': 1, 'settlement': 1, 'task-completed': 2, 'well-formed': 1},
    'an Unknown of a batch relabelled safe (its refund left)': {'chain': 1, 'refund-cause': 1, 'settlement': 2, 'task-completed': 1},
    'the welcome grant deleted': {'chain': 65, 'welcome': 1},
    'a purchase relabelled a welcome': {'chain': 1, 'welcome': 1},
    'PAYG credits that expire': {'chain': 1, 'grant': 1},
    'a Monthly grant expired before it was granted': {'chain': 1, 'monthly-expiry': 4, 'monthly-period': 1},
    "a new period without the leftover's expiry": {'chain': 2, 'monthly-expiry': 1, 'monthly-period': 1, 'read-models': 2},
    'an expiry of more than the leftover': {'chain': 1, 'monthly-expiry': 1, 'read-models': 2},
    'the leftover expired early, no new period': {'chain': 1, 'monthly-expiry': 1},
    'Monthly credits spent after their expiry': {'chain': 1, 'monthly-expiry': 3},
    'PAYG taken while Monthly credits were left': {'chain': 1, 'monthly-expiry': 2, 'monthly-first': 3, 'monthly-period': 2, 'read-models': 2},
    'more Monthly taken than the bucket held': {'balance': 1, 'chain': 1, 'monthly-expiry': 2, 'monthly-first': 2, 'monthly-period': 2, 'read-models': 2, 'refund-outstanding': 1},
    'a debit of one credit less than the addresses': {'chain': 1, 'debit': 1, 'monthly-expiry': 2, 'monthly-first': 3, 'monthly-period': 2, 'read-models': 2, 'settlement': 2},
    'a debit before its task was created': {'chain': 3, 'debit': 1},
    'a debit moved to another task': {'chain': 1, 'debit': 1, 'monthly-expiry': 2, 'monthly-first': 3, 'monthly-period': 2, 'read-models': 2, 'refund-outstanding': 1, 'settlement': 4},
    'a refund deleted': {'chain': 57, 'refund-cause': 2, 'settlement': 2},
    'a refund duplicated': {'chain': 46, 'read-models': 2, 'refund-cause': 1, 'refund-outstanding': 1, 'settlement': 2},
    "a refund's reason changed": {'chain': 1, 'refund-cause': 1},
    'a refund before its cause': {'chain': 3, 'refund-cause': 3},
    "a refund's causation changed": {'chain': 1, 'refund-cause': 1},
    'a refund beyond the outstanding': {'chain': 2, 'invariant': 1, 'read-models': 2, 'refund-cause': 1, 'refund-outstanding': 1, 'settlement': 1, 'task-cancelled': 1, 'task-erased': 1},
    'a task created for no account': {'chain': 1, 'debit': 1, 'refund-cause': 2, 'task-created': 1},
    'a task created twice': {'chain': 63, 'task-created': 1},
    'a chunk submitted twice': {'chain': 61, 'chunk-submitted': 1},
    'a chunk short of an address': {'chain': 1, 'chunk-submitted': 1, 'result': 1},
    'a result duplicated': {'chain': 60, 'result': 1},
    'a late result charged': {'chain': 1, 'invariant': 1, 'late-result': 1, 'settlement': 1},
    'a result marked late while the task ran': {'chain': 1, 'late-result': 1, 'settlement': 1, 'task-completed': 2},
    'a failed chunk refunding an address less': {'chain': 2, 'chunk-failed': 1, 'settlement': 1, 'task-completed': 2},
    'completed with a count changed': {'chain': 1, 'task-completed': 1},
    'the completion deleted': {'chain': 51, 'task-completed': 1, 'task-deleted': 1, 'task-erased': 1},
    'a cancel refunding fewer than were unverified (and its refund to match)': {'chain': 2, 'settlement': 1, 'task-cancelled': 1},
    'a partial failure called a provider error': {'chain': 1, 'task-failed': 1},
    'a system failure refunding more than was unverified': {'chain': 2, 'settlement': 1, 'system-failure': 1},
    'a task deleted twice': {'chain': 18, 'task-deleted': 2},
    'erased for retention before the retention ran out': {'chain': 1, 'task-erased': 1},
    'erased twice': {'chain': 17, 'task-erased': 1},
    "a task's debit deleted": {'chain': 42, 'monthly-expiry': 2, 'monthly-first': 3, 'monthly-period': 2, 'read-models': 2, 'settlement': 2},
    'a payload byte altered': {'chain': 1},
    'an event deleted, the rest renumbered': {'chain': 59, 'settlement': 1, 'task-completed': 2},
    'two events of different streams reordered, renumbered': {'chain': 4},
    'a forged grant linked to its predecessor, the next link left broken': {'chain': 63},
    "an event's metadata changed (its actor)": {'chain': 1},
    "an event's hash recomputed alone after its payload changed": {'chain': 1},
    'a purchase forged before the audit point, the whole chain recomputed': {'audit-point': 1},
}


@pytest.mark.parametrize("tamper", CATALOGUE, ids=lambda t: f"{t.rule}: {t.name}")
def test_the_audit_names_the_rule_a_tampered_log_breaks(base, tmp_path, tamper: Tamper):
    anchor = None
    if tamper.anchored:
        clean = audited(base, tmp_path)
        anchor = (clean.head, clean.chain_head)
    report = audited(base, tmp_path, tamper.change, tamper.renumber, anchor)
    assert not report.ok and tamper.rule in report.broken, report.violations
    assert any(v.startswith(f"[{tamper.rule}] ") for v in report.violations), report.violations
    assert report.found == sum(report.broken.values())
    listed = {rule: min(count, MAX_PER_RULE) + (count > MAX_PER_RULE) for rule, count in report.broken.items()}
    assert len(report.violations) == sum(listed.values())  # 50 a rule, then "... and N more"
    assert dict(report.broken) == EXPECTED[tamper.name], report.violations
    assert said(report, tamper.rule) == MESSAGES[tamper.name]  # what the operator reads, and where it points


def said(report: AuditReport, rule: str) -> list[str]:
    """The first three violations of `rule`, then every one of the catch-all rules."""
    named = [normalised(v) for v in report.violations if v.startswith(f"[{rule}] ")][:3]
    return named + [normalised(v) for v in report.violations
                    if v.startswith(("[invariant] ", "[read-models] ")) and not v.startswith(f"[{rule}] ")]


# tamper -> the first (up to three) violations of the rule it names, then those of the catch-all
# rules (invariant, read-models), as `vec audit` prints them
MESSAGES: dict[str, list[str]] = {
    'an address settled twice in one batch': [
        '[result] one event settles an address of chunk 0 twice, at task-<task>@3 (position 8, ResultsRecorded)',
    ],
    'a batch settling an address of another chunk': [
        '[result] result for <sealed> (chunk 1), which is settled or was never submitted, at task-<task>@8 (position 15, ResultsRecorded)',
    ],
    'a batch whose evidence column is shorter than its addresses': [
        "[well-formed] impossible task-<task>@3 (position 8, ResultsRecorded): a batch of 1 results with columns ['mx_hosts'] of other lengths",
    ],
    'a batch of Unknowns with a reason no Unknown has': [
        "[well-formed] impossible task-<task>@4 (position 9, ResultsRecorded): a batch of unknown results with reason 'user_unknown', which no Unknown has",
    ],
    'an Unknown of a batch relabelled safe (its refund left)': [
        '[refund-cause] task <task>: refund of 1 (unknown) that no task event before it frees, at account-acme@6 (position 10, CreditsRefunded)',
    ],
    'an event deleted, its gap left': [
        '[positions] expected position 7, found 8 (task-<task>@3 (position 8, ResultsRecorded))',
    ],
    'an event moved past the head': [
        '[positions] expected position 16, found 17 (task-<task>@1 (position 17, TaskCreated))',
        '[positions] expected position 68, found 10016 (task-<task>@9 (position 10016, TaskCompleted))',
    ],
    'two events of one stream reordered': [
        '[stream-versions] expected version 2 of task-<task>, found task-<task>@3 (position 7, ResultsRecorded)',
        '[stream-versions] expected version 4 of task-<task>, found task-<task>@2 (position 8, ChunkSubmitted)',
        '[stream-versions] expected version 3 of task-<task>, found task-<task>@4 (position 9, ResultsRecorded)',
    ],
    'a grant put in a task stream': [
        '[stream-kind] CreditsGranted does not belong in stream task-<task> (task-<task>@1 (position 2, CreditsGranted))',
    ],
    'a result put in an account stream': [
        '[stream-kind] ResultsRecorded does not belong in stream account-acme (account-acme@6 (position 8, ResultsRecorded))',
    ],
    'a stream of no known kind': [
        '[stream-kind] RetentionSet does not belong in stream ledger-acme (ledger-acme@1 (position 52, RetentionSet))',
    ],
    'a payload that is not JSON': [
        '[well-formed] cannot decode account-acme@5 (position 6, CreditsDebited): JSONDecodeError: unexpected character, expected a string key: line 1 column 2 (char 1)',
    ],
    'an unknown event type': [
        '[well-formed] cannot decode account-acme@3 (position 3, CreditsStolen): UnknownEventType: CreditsStolen',
    ],
    'a field missing': [
        "[well-formed] cannot decode account-acme@3 (position 3, CreditsGranted): TypeError: CreditsGranted.__init__() missing 1 required positional argument: 'amount'",
    ],
    'a schema version from the future': [
        '[well-formed] cannot decode task-<task>@1 (position 5, TaskCreated): ValueError: TaskCreated v99 is newer than this code (v3)',
    ],
    'an amount that is text': [
        "[well-formed] impossible account-acme@4 (position 4, CreditsGranted): field amount = '50' is not of its declared type",
        "[read-models] the credits read model stopped before position 4: CreditsGranted at position 4: TypeError: unsupported operand type(s) for +=: 'int' and 'str' (run `vec audit`; after a fix, `vec rebuild`)",
    ],
    'a negative count': [
        '[well-formed] impossible task-<task>@4 (position 21, TaskCancelled): field unverified_count = -3 is not of its declared type',
    ],
    'a sealed address that opens with no key': [
        "[well-formed] cannot decode task-<task>@2 (position 61, ChunkSubmitted): InvariantViolation: a sealed value does not open with its task's key",
    ],
    'the account opened twice': [
        "[account-opened] AccountOpened for 'acme' at account-acme@2 (position 2, AccountOpened) (opened twice)",
    ],
    'the account opened under another id': [
        "[account-opened] AccountOpened for 'other' at account-acme@1 (position 1, AccountOpened) (names another account)",
    ],
    'a welcome of 300': [
        "[welcome] the welcome grant is 200 PAYG at version 2, once: found CreditsGranted(bucket='payg', amount=300, reason='welcome', expires_at=None) at account-acme@2 (position 2, CreditsGranted)",
    ],
    'the welcome grant deleted': [
        "[welcome] the welcome grant is 200 PAYG at version 2, once: found CreditsGranted(bucket='monthly', amount=14, reason='subscription', expires_at='2026-07-01T10:00:00+00:00') at account-acme@2 (position 2, CreditsGranted)",
    ],
    'a purchase relabelled a welcome': [
        "[welcome] the welcome grant is 200 PAYG at version 2, once: found CreditsGranted(bucket='payg', amount=50, reason='welcome', expires_at=None) at account-acme@4 (position 4, CreditsGranted)",
    ],
    'PAYG credits that expire': [
        '[grant] PAYG credits granted with an expiry (2026-07-01T00:00:00+00:00) at account-acme@4 (position 4, CreditsGranted)',
    ],
    'a Monthly grant expired before it was granted': [
        "[monthly-period] Monthly grant expiring '2026-05-01T00:00:00+00:00', granted 2026-06-01T10:00:00+00:00 at account-acme@3 (position 3, CreditsGranted)",
    ],
    "a new period without the leftover's expiry": [
        '[monthly-period] a new Monthly period (expiring 2026-08-30T10:00:00+00:00) began with 19 credits of the previous one not expired at account-acme@23 (position 65, CreditsGranted)',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 280, balance is 285',
    ],
    'an expiry of more than the leftover': [
        '[monthly-expiry] expiry of 6 while the Monthly bucket holds 5 at account-acme@25 (position 67, MonthlyCreditsExpired)',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 260, balance is 266',
    ],
    'the leftover expired early, no new period': [
        '[monthly-expiry] account acme: Monthly credits expired before their expiry, and no new period followed',
    ],
    'Monthly credits spent after their expiry': [
        '[monthly-expiry] debit spent 4 Monthly credits that expired 2026-06-01T11:30:00+00:00 at account-acme@8 (position 18, CreditsDebited)',
        '[monthly-expiry] debit spent 1 Monthly credits that expired 2026-06-01T11:30:00+00:00 at account-acme@10 (position 25, CreditsDebited)',
        '[monthly-expiry] debit spent 4 Monthly credits that expired 2026-06-01T11:30:00+00:00 at account-acme@11 (position 30, CreditsDebited)',
    ],
    'PAYG taken while Monthly credits were left': [
        '[monthly-first] debit took 2 PAYG while 1 Monthly credits were left at account-acme@11 (position 30, CreditsDebited)',
        '[monthly-first] debit took 6 PAYG while 1 Monthly credits were left at account-acme@13 (position 35, CreditsDebited)',
        '[monthly-first] debit took 2 PAYG while 1 Monthly credits were left at account-acme@17 (position 45, CreditsDebited)',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 261, balance is 285',
    ],
    'more Monthly taken than the bucket held': [
        '[balance] debit of 5 Monthly + 0 PAYG from a balance of 4 Monthly + 256 PAYG at account-acme@11 (position 30, CreditsDebited)',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 261, balance is 285',
    ],
    'a debit of one credit less than the addresses': [
        '[debit] debit of 4 for task <task> of 5 unique addresses at account-acme@5 (position 6, CreditsDebited)',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 262, balance is 286',
    ],
    'a debit before its task was created': [
        '[debit] debit for task <task>, which acme did not create before it, at account-acme@5 (position 5, CreditsDebited)',
    ],
    'a debit moved to another task': [
        '[debit] task <task> debited twice, at account-acme@8 (position 18, CreditsDebited)',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 261, balance is 286',
    ],
    'a refund deleted': [
        '[refund-cause] task <task>: refund of 2 (partial_failure) to acme for a cause that frees 1 (unknown) of acme, at account-acme@6 (position 12, CreditsRefunded)',
        '[refund-cause] task <task>: event <event> frees 2 (partial_failure), never refunded',
    ],
    'a refund duplicated': [
        '[refund-cause] task <task>: refund of 3 (cancelled) that no task event before it frees, at account-acme@10 (position 23, CreditsRefunded)',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 264, balance is 261',
    ],
    "a refund's reason changed": [
        '[refund-cause] task <task>: refund of 1 (support) to acme for a cause that frees 1 (unknown) of acme, at account-acme@6 (position 10, CreditsRefunded)',
    ],
    'a refund before its cause': [
        '[refund-cause] task <task>: refund of 1 (unknown) that no task event before it frees, at account-acme@6 (position 9, CreditsRefunded)',
        '[refund-cause] task <task>: refund of 2 (partial_failure) to acme for a cause that frees 1 (unknown) of acme, at account-acme@7 (position 13, CreditsRefunded)',
        '[refund-cause] task <task>: event <event> frees 2 (partial_failure), never refunded',
    ],
    "a refund's causation changed": [
        '[refund-cause] task <task>: refund caused by <event>, not by the event that frees it (<event>), at account-acme@9 (position 22, CreditsRefunded)',
    ],
    'a refund beyond the outstanding': [
        '[refund-outstanding] refund of 9 for task <task> with 4 outstanding at account-acme@9 (position 22, CreditsRefunded)',
        "[invariant] task-<task>@5 (position 23, ResultsRecorded): settled more than debited on ResultsRecorded(chunk_no=0, status='invalid', reason='user_unknown', tier='', late=True, addresses=('<sealed>',), details=(), replies=(), mx_hosts=(), flags=(), texts=())",
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 267, balance is 258',
    ],
    'a task created for no account': [
        "[task-created] task created for 'ghost', not an open account, at task-<task>@1 (position 5, TaskCreated)",
    ],
    'a task created twice': [
        '[task-created] task created twice, at task-<task>@2 (position 6, TaskCreated)',
    ],
    'a chunk submitted twice': [
        '[chunk-submitted] chunk 0 out of order (next is 1 of 3) at task-<task>@3 (position 8, ChunkSubmitted)',
    ],
    'a chunk short of an address': [
        '[chunk-submitted] chunk 0 holds 1 addresses (1 distinct), not 2, at task-<task>@2 (position 19, ChunkSubmitted)',
    ],
    'a result duplicated': [
        '[result] result for <sealed> (chunk 0), which is settled or was never submitted, at task-<task>@4 (position 9, ResultsRecorded)',
    ],
    'a late result charged': [
        '[late-result] result marked late=False while the task is cancelled, at task-<task>@5 (position 23, ResultsRecorded)',
        "[invariant] task-<task>@6 (position 53, TaskDataErased): settled more than debited on TaskDataErased(reason='retention')",
    ],
    'a result marked late while the task ran': [
        '[late-result] result marked late=True while the task is processing, at task-<task>@3 (position 8, ResultsRecorded)',
    ],
    'a failed chunk refunding an address less': [
        '[chunk-failed] chunk 1 failed with 1 addresses while 2 were unsettled (task processing) at task-<task>@6 (position 12, ChunkFailed)',
    ],
    'completed with a count changed': [
        "[task-completed] completed with counts {'failed': 2, 'invalid': 0, 'risky': 0, 'safe': 3, 'unknown': 1} while the results count {'safe': 2, 'invalid': 0, 'risky': 0, 'unknown': 1, 'failed': 2} and 0 are unsettled, at task-<task>@9 (position 16, TaskCompleted)",
    ],
    'the completion deleted': [
        '[task-completed] task <task>: every address settled, yet the task is still processing',
    ],
    'a cancel refunding fewer than were unverified (and its refund to match)': [
        '[task-cancelled] TaskCancelled refunds 2 unverified addresses while 3 are unsettled, at task-<task>@4 (position 21, TaskCancelled)',
    ],
    'a partial failure called a provider error': [
        '[task-failed] TaskFailed (provider_error) after 2 of 3 chunks failed, at task-<task>@6 (position 41, TaskFailed)',
    ],
    'a system failure refunding more than was unverified': [
        '[system-failure] SystemFailure refunds 4 unverified addresses while 5 are unsettled, at task-<task>@3 (position 32, SystemFailure)',
    ],
    'a task deleted twice': [
        '[task-deleted] TaskDeleted after the task was deleted, at task-<task>@11 (position 51, TaskDeleted)',
        '[task-deleted] deleted while completed (again), at task-<task>@11 (position 51, TaskDeleted)',
    ],
    'erased for retention before the retention ran out': [
        '[task-erased] erased for retention 2026-06-01T22:00:00+00:00, before the 1 days after it finished (2026-06-01 12:00:00+00:00) ran out, at task-<task>@6 (position 53, TaskDataErased)',
    ],
    'erased twice': [
        '[task-erased] erased while completed (again), at task-<task>@12 (position 52, TaskDataErased)',
    ],
    "a task's debit deleted": [
        '[settlement] task <task>: debited 0 for 1 unique addresses',
        '[settlement] task <task>: debited 0 != consumed 1 + refunded 0',
        '[read-models] account acme: balance read model differs from the log',
        '[read-models] account acme: history rows sum to 262, balance is 286',
    ],
    'a payload byte altered': [
        '[chain] the chain breaks at position 4 (account-acme): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
    ],
    'an event deleted, the rest renumbered': [
        '[chain] the chain breaks at position 8 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
        '[chain] the chain breaks at position 9 (account-acme): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
        '[chain] the chain breaks at position 10 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
    ],
    'two events of different streams reordered, renumbered': [
        '[chain] the chain breaks at position 50 (account-acme): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
        '[chain] the chain breaks at position 51 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
        '[chain] the chain breaks at position 52 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
    ],
    'a forged grant linked to its predecessor, the next link left broken': [
        '[chain] the chain breaks at position 6 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
        '[chain] the chain breaks at position 7 (account-acme): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
        '[chain] the chain breaks at position 8 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
    ],
    "an event's metadata changed (its actor)": [
        '[chain] the chain breaks at position 50 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
    ],
    "an event's hash recomputed alone after its payload changed": [
        '[chain] the chain breaks at position 5 (task-<task>): stored hash <hash>… is not the hash of this row after the previous one (<hash>…)',
    ],
    'a purchase forged before the audit point, the whole chain recomputed': [
        '[audit-point] position 67 (account-acme) has the chain hash <hash>…, not the <hash>… recorded at the last audit point: the log before it was rewritten',
    ],
}


def test_every_tamper_of_the_catalogue_has_its_expected_rules():
    assert set(EXPECTED) == set(MESSAGES) == {t.name for t in CATALOGUE} and len(EXPECTED) == len(CATALOGUE)


def test_past_fifty_violations_of_a_rule_the_rest_are_counted_in_one_line(base, tmp_path):
    report = audited(base, tmp_path, duplicate("AccountOpened"))  # every later link breaks: 67
    assert report.broken["chain"] == report.found - 3 == 67
    chain_lines = [v for v in report.violations if v.startswith("[chain] ")]
    assert len(chain_lines) == MAX_PER_RULE + 1 and chain_lines[-1] == "[chain] ... and 17 more"
    assert report.violations[-1] == "[chain] ... and 17 more"  # the counts come after every listed one
    assert report.to_json()["broken_rules"] == {"account-opened": 1, "chain": 67, "welcome": 2}
    assert list(report.to_json()["broken_rules"]) == ["account-opened", "chain", "welcome"]  # sorted
    assert report.to_json()["ok"] is False


def test_a_violation_of_a_rule_the_audit_does_not_know_is_a_programming_error():
    report = AuditReport()
    with pytest.raises(ValueError, match="^no audit rule 'chains'$"):
        report.add("chains", "a typo in a rule's name")
    assert report.violations == [] and report.found == 0 and dict(report.broken) == {}
    report.add("chain", "named")
    assert report.violations == ["[chain] named"] and report.found == 1 and dict(report.broken) == {"chain": 1}


def normalised(violation: str) -> str:
    """A violation with the ids and hashes each run draws anew replaced by placeholders."""
    violation = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<event>", violation)
    violation = re.sub(r"[0-9a-f]{32}", "<task>", violation)
    violation = re.sub(r"erased:[0-9a-z]+", "erased:<address>", violation)  # an erased address's stand-in
    violation = re.sub(r"§[0-9A-Za-z_-]+", "<sealed>", violation)  # an address as stored, sealed with its task's key
    return re.sub(r"[0-9a-f]{16}…", "<hash>…", violation)


def _shape(**fields: Any) -> Any:
    """An event type of every field kind the log's events declare; a new class each call,
    so that the audit derives its checks afresh."""

    @dataclass(frozen=True)
    class Shaped:
        flag: bool = True
        count: int = 0
        name: str = ""
        bucket: Literal["payg", "monthly"] = "payg"
        expires_at: str | None = None
        reason: Optional[int] = None
        addresses: tuple[str, ...] = ()
        counts: dict[str, int] = field(default_factory=dict)

    return Shaped(**fields)


@pytest.mark.parametrize("fields", [{}, {"flag": False, "count": 7, "name": "x", "bucket": "monthly",
                                         "expires_at": "2026-07-01", "reason": 3, "addresses": ("a", "b"),
                                         "counts": {"safe": 2, "unknown": 0}}])
def test_a_field_of_its_declared_type_is_well_formed(fields):
    assert shape_error(_shape(**fields)) is None


@pytest.mark.parametrize("name, value", [
    ("flag", 1), ("flag", None),  # a bool is true or false, not a number
    ("count", True), ("count", -1), ("count", "1"), ("count", 1.0), ("count", None),  # counts are whole, >= 0
    ("name", 1), ("name", None), ("name", b"x"),
    ("bucket", "weekly"), ("bucket", ["payg"]), ("bucket", None),
    ("expires_at", 5), ("reason", -2), ("reason", "3"),
    ("addresses", ["a"]), ("addresses", ("a", 1)), ("addresses", "ab"),
    ("counts", [("safe", 1)]), ("counts", {"safe": -1}), ("counts", {1: 1}), ("counts", {"safe": "1"}),
])
def test_a_field_of_another_type_is_named(name, value):
    assert shape_error(_shape(**{name: value})) == f"field {name} = {value!r} is not of its declared type"


def test_the_first_field_out_of_type_is_the_one_named():
    assert shape_error(_shape(count=-1, name=2)) == "field count = -1 is not of its declared type"


def test_a_field_type_the_audit_does_not_know_stops_it_loudly():
    @dataclass(frozen=True)
    class Odd:
        ratio: float = 0.5

    with pytest.raises(TypeError, match=r"^the audit knows no field type <class 'float'>: teach engine/audit.py$"):
        shape_error(Odd())


def test_a_live_read_model_edited_by_hand_is_named_with_its_table(base, tmp_path):
    shutil.copy(base, tmp_path / "vec.db")
    raw = RawLog(f"sqlite:///{tmp_path}/vec.db")  # the log untouched, not rebuilt: only the read models lie
    db = open_database(f"sqlite:///{tmp_path}/vec.db")
    db.catch_up()  # the read models reach the head first (else the later history rows fold the lie on)
    db.close()
    raw.sql("UPDATE rm_balances SET payg = payg + 1")
    db = open_database(f"sqlite:///{tmp_path}/vec.db")
    try:
        report = audit(db)
    finally:
        db.close()
    assert report.violations == [
        "[read-models] read model rm_balances differs from a fresh fold of the log (1 rows missing or changed, "
        "1 rows extra)"]
    assert report.events == 67  # the log itself holds every rule


def test_an_audit_point_the_log_still_holds_passes_and_one_past_its_end_is_named(base, tmp_path):
    rows = RawLog(f"sqlite:///{base}").rows()
    for position in (1, 30, len(rows)):
        assert audited(base, tmp_path, anchor=(position, rows[position - 1]["chain"].hex())).ok
    report = audited(base, tmp_path, anchor=(len(rows) + 5, "00" * 32))
    assert report.violations == [f"[audit-point] the log ends at position {len(rows)}, before the last audit "
                                 f"point ({len(rows) + 5})"]
    report = audited(base, tmp_path, anchor=(30, rows[31]["chain"].hex()))
    assert dict(report.broken) == {"audit-point": 1}
    assert normalised(report.violations[0]) == (
        f"[audit-point] position 30 ({normalised(rows[29]['stream'])}) has the chain hash <hash>…, not the <hash>… recorded at the last audit point: the log before it was rewritten")


def test_an_event_id_seen_twice_is_named_on_a_log_restored_without_the_unique_index():
    """The stores' unique index refuses a repeated id; the in-memory log, rewritten by hand,
    stands for a copy restored without it."""
    db = open_database("memory://")
    try:
        engine = Engine(db, EngineSettings(), lambda: T0)
        engine.open_account("acme")
        engine.grant_credits("acme", "payg", 50, "purchase")
        log = db.events.log
        grant = log.rows[-1]
        again = dataclasses.replace(grant, position=grant.position + 1, version=grant.version + 1,
                                    data=grant.data.replace('"amount":50', '"amount":7'))
        log.rows.append(again)
        log.by_stream[again.stream].append(again)
        report = audit(db)
    finally:
        db.close()
    assert dict(report.broken) == {"event-ids": 1, "chain": 1}, report.violations
    assert report.violations[1] == (f"[event-ids] event id {grant.event_id} appears twice "
                                    f"(account-acme@4 (position 4, CreditsGranted))")


ENDINGS = ("TaskCompleted", "TaskCancelled", "TaskFailed", "SystemFailure")


def erased_at(offset: timedelta):
    """The first retention erasure restamped `offset` after its task's retention ran out."""

    def tamper(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        erasure = rows[pick(rows, "TaskDataErased", reason="retention")]
        ended = [r for r in rows if r["stream"] == erasure["stream"] and r["type"] in ENDINGS][0]
        erasure["occurred_at"] = ended["occurred_at"] + timedelta(days=1) + offset  # retention: 1 day
        return rows

    return tamper


def test_a_retention_erasure_is_due_at_the_very_moment_the_retention_runs_out(base, tmp_path):
    assert dict(audited(base, tmp_path, erased_at(timedelta(0))).broken) == {"chain": 1}
    early = audited(base, tmp_path, erased_at(-timedelta(microseconds=1)))
    assert dict(early.broken) == {"chain": 1, "task-erased": 1}
    assert normalised(early.violations[1]).startswith("[task-erased] erased for retention ")


def test_erasing_a_running_task_is_named(base, tmp_path):
    def erased_while_running(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        erasure = rows.pop(pick(rows, "TaskDataErased", reason="retention"))
        ended = [i for i, r in enumerate(rows) if r["stream"] == erasure["stream"] and r["type"] in ENDINGS][0]
        rows.insert(ended, erasure)  # just before the event that ended its task
        return rows

    report = audited(base, tmp_path, erased_while_running)
    erased = [normalised(v) for v in report.violations if v.startswith("[task-erased] ")]
    assert erased == ["[task-erased] erased while processing, at task-<task>@4 (position 21, TaskDataErased)"]


def test_a_head_without_a_chain_hash_is_named_and_reported_as_no_chain_head(base, tmp_path):
    def unhashed_head(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[-1]["chain"] = None  # as an older log not yet migrated stores it
        return rows

    report = audited(base, tmp_path, unhashed_head, renumber=False)
    assert dict(report.broken) == {"chain": 1} and report.chain_head == "" and report.head == report.events
    assert report.violations == [f"[chain] the chain breaks at position {report.head} (account-acme): no chain hash "
                                 "(an older log: run `vec migrate`)"]


def restamped(type_name: str, n: int, at: datetime) -> Any:
    def tamper(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[pick(rows, type_name, n)]["occurred_at"] = at
        return rows

    return tamper


def test_the_monthly_leftover_is_due_to_expire_at_the_very_moment_of_its_expiry(base, tmp_path):
    due = T0 + timedelta(days=90)  # the last Monthly grant's expiry; the engine expired it a day later
    assert dict(audited(base, tmp_path, restamped("MonthlyCreditsExpired", 1, due)).broken) == {"chain": 1}
    early = audited(base, tmp_path, restamped("MonthlyCreditsExpired", 1, due - timedelta(microseconds=1)))
    assert early.violations[1:] == ["[monthly-expiry] account acme: Monthly credits expired before their expiry, "
                                    "and no new period followed"]


def test_an_expiry_of_a_single_credit_left_is_no_violation_and_one_of_nothing_is(base, tmp_path):
    one_left = both(alter("CreditsGranted", match={"bucket": "monthly", "amount": 5}, amount=1),
                    alter("MonthlyCreditsExpired", 1, amount=1))
    assert dict(audited(base, tmp_path, one_left).broken) == {"chain": 2}
    nothing = both(duplicate("MonthlyCreditsExpired", 1), alter("MonthlyCreditsExpired", 2, amount=0))
    report = audited(base, tmp_path, nothing)
    assert [v for v in report.violations if not v.startswith("[chain] ")] == [
        "[monthly-expiry] expiry of 0 while the Monthly bucket holds 0 at account-acme@26 (position 68, "
        "MonthlyCreditsExpired)"]


def test_a_task_out_of_the_deciders_bounds_is_named_with_its_id(base, tmp_path):
    report = audited(base, tmp_path, alter("TaskCreated", chunk_size=0))
    task = first_task_stream(RawLog(f"sqlite:///{base}").rows()).removeprefix("task-")
    invariant = [v for v in report.violations if v.startswith("[invariant] ")]
    assert len(invariant) == 1 and f"task {task} out of bounds: TaskCreated(" in invariant[0], report.violations


def test_a_debit_of_the_whole_payg_balance_is_no_violation(tmp_path):
    db = open_database("memory://")
    try:
        engine = Engine(db, EngineSettings(), lambda: T0)
        engine.open_account("acme")  # the welcome grant: 200 PAYG
        path = tmp_path / "all.csv"
        path.write_text("email\n" + "".join(f"a{i}@a.test\n" for i in range(200)))
        engine.create_bulk("acme", path)
        report = audit(db)
        debits = [r.event for r in db.events.read_all() if r.event.type_name() == "CreditsDebited"]
    finally:
        db.close()
    assert [(d.monthly, d.payg) for d in debits] == [(0, 200)]  # every PAYG credit the account held
    assert report.ok and report.events == 4, report.violations


def monthly_expiring(at: str) -> Any:
    return alter("CreditsGranted", match={"bucket": "monthly"}, expires_at=at)  # the first period's


def test_a_debit_may_take_monthly_credits_until_the_clock_slack_past_their_expiry(base, tmp_path):
    """The first Monthly debit is stamped 11:00:00; the engine may stamp it up to 5 s after it decided."""
    late = audited(base, tmp_path, monthly_expiring("2026-06-01T10:59:55+00:00"))
    in_time = audited(base, tmp_path, monthly_expiring("2026-06-01T10:59:55.000001+00:00"))
    assert late.broken["monthly-expiry"] == in_time.broken["monthly-expiry"] + 1
    assert [normalised(v) for v in late.violations if v.startswith("[monthly-expiry] ")][0] == (
        "[monthly-expiry] debit spent 5 Monthly credits that expired 2026-06-01T10:59:55+00:00 at account-acme@5 "
        "(position 6, CreditsDebited)")
    assert "(position 6, CreditsDebited)" not in " ".join(in_time.violations)


@pytest.mark.parametrize("changes", [{"sha256": "0" * 64}, {"at": "2026-06-01T12:00:00+00:00"}, {"at": "noon"}])
def test_a_bulk_debit_names_its_own_file_and_time(base, tmp_path, changes):
    report = audited(base, tmp_path, alter("CreditsDebited", **changes))
    at = changes.get("at", "2026-06-01T11:00:00+00:00")
    assert [normalised(v) for v in report.violations if not v.startswith("[chain] ")] == [
        f"[debit] debit's file digest or time ({at!r}) is not its task's at account-acme@5 (position 6, "
        "CreditsDebited)"]


def test_a_task_debited_twice_is_named_and_counted_twice_in_its_settlement(base, tmp_path):
    report = audited(base, tmp_path, duplicate("CreditsDebited"))
    settlement = [normalised(v) for v in report.violations if v.startswith("[settlement] ")]
    assert settlement[0] == "[settlement] task <task>: debited 10 for 5 unique addresses"
    assert report.broken["debit"] == 1


def test_a_refund_of_nothing_is_named(base, tmp_path):
    report = audited(base, tmp_path, alter(REFUND, match={"reason": "unknown"}, amount=0))
    assert [normalised(v) for v in report.violations if v.startswith("[refund-outstanding] ")] == [
        "[refund-outstanding] refund of 0 for task <task> with 5 outstanding at account-acme@6 (position 10, "
        "CreditsRefunded)"]


def test_a_failed_chunk_naming_an_address_it_never_held_is_named(base, tmp_path):
    report = audited(base, tmp_path, alter("ChunkFailed", addresses=lambda a: [a[0], "other@x.test"]))
    assert [normalised(v) for v in report.violations if v.startswith("[chunk-failed] ")] == [
        "[chunk-failed] chunk 1 failed with 2 addresses while 2 were unsettled (task processing) at task-<task>@6 "
        "(position 12, ChunkFailed)"]


def test_a_chunk_failing_after_its_task_failed_is_named(base, tmp_path):
    report = audited(base, tmp_path, swap(("ChunkFailed", 3), ("TaskFailed", 1)))  # the provider error's
    assert [normalised(v) for v in report.violations if v.startswith("[chunk-failed] ")] == [
        "[chunk-failed] chunk 0 failed with 2 addresses while 2 were unsettled (task failed) at task-<task>@4 "
        "(position 48, ChunkFailed)"]


def test_a_failed_chunk_naming_an_address_twice_is_named(base, tmp_path):
    report = audited(base, tmp_path, alter("ChunkFailed", addresses=lambda a: [*a, a[0]]))
    assert [normalised(v) for v in report.violations if v.startswith("[chunk-failed] ")] == [
        "[chunk-failed] chunk 1 failed with 3 addresses while 2 were unsettled (task processing) at task-<task>@6 "
        "(position 12, ChunkFailed)"]


def test_a_single_task_of_two_addresses_is_named(base, tmp_path):
    report = audited(base, tmp_path, alter("TaskCreated", match={"kind": "single"}, address_count=2))
    assert [normalised(v) for v in report.violations if v.startswith("[task-created] ")] == [
        "[task-created] single task of 2 addresses at task-<task>@1 (position 24, TaskCreated)"]


def test_a_task_event_before_its_task_was_created_is_named(base, tmp_path):
    report = audited(base, tmp_path, swap(("TaskCreated", 0), ("ChunkSubmitted", 0)))
    assert [normalised(v) for v in report.violations if v.startswith("[task-created] ")][0] == (
        "[task-created] ChunkSubmitted before TaskCreated at task-<task>@1 (position 5, ChunkSubmitted)")


def test_a_chunk_submitted_after_its_task_stopped_is_named(base, tmp_path):
    def submitted_after_failure(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        failed = pick(rows, "TaskFailed", 1)  # the provider error's, whose only chunk failed
        submitted = [r for r in rows if r["type"] == "ChunkSubmitted" and r["stream"] == rows[failed]["stream"]][0]
        rows.insert(failed + 1, {**submitted, "event_id": uuid.uuid4()})
        return rows

    report = audited(base, tmp_path, submitted_after_failure)
    assert [normalised(v) for v in report.violations if v.startswith("[chunk-submitted] ")] == [
        "[chunk-submitted] chunk 0 submitted after the task stopped (failed) at task-<task>@5 (position 49, "
        "ChunkSubmitted)"]


@pytest.mark.parametrize("name, rule, status", [
    ("TaskCompleted", "task-completed", "completed"), ("TaskCancelled", "task-cancelled", "cancelled"),
    ("TaskFailed", "task-failed", "failed"), ("SystemFailure", "system-failure", "failed"),
])
def test_a_task_that_ends_twice_is_named_under_the_rule_of_its_ending(base, tmp_path, name, rule, status):
    report = audited(base, tmp_path, duplicate(name))
    assert [normalised(v).split(", at ")[0] for v in report.violations if v.startswith(f"[{rule}] ")] == [
        f"[{rule}] {name} while the task is {status}"]


def test_a_single_task_cancelled_is_named(base, tmp_path):
    report = audited(base, tmp_path, alter("TaskCreated", 1, kind="single"))  # the cancelled bulk's
    assert [normalised(v).split(" at ")[0] for v in report.violations if v.startswith("[task-cancelled] ")] == [
        "[task-cancelled] single task cancelled"]


@pytest.mark.parametrize("expires_at", ["2026-07-01T10:00:00", None])  # no time zone; none at all
def test_a_monthly_grant_needs_an_expiry_with_its_offset(base, tmp_path, expires_at):
    report = audited(base, tmp_path, monthly_expiring(expires_at))
    assert [normalised(v) for v in report.violations if v.startswith("[monthly-period] ")][0] == (
        f"[monthly-period] Monthly grant expiring {expires_at!r}, granted 2026-06-01T10:00:00+00:00 at "
        "account-acme@3 (position 3, CreditsGranted)")


def test_a_bulk_debit_s_time_may_lag_its_stamp_by_the_clock_slack(base, tmp_path):
    """The first bulk debit is stamped 11:00:00."""
    assert dict(audited(base, tmp_path, alter("CreditsDebited", at="2026-06-01T10:59:55+00:00")).broken) == {"chain": 1}
    report = audited(base, tmp_path, alter("CreditsDebited", at="2026-06-01T10:59:54.999999+00:00"))
    assert dict(report.broken) == {"chain": 1, "debit": 1}


def test_a_chunk_past_the_last_is_named_out_of_order(base, tmp_path):
    past = both(duplicate("ChunkSubmitted", 2), alter("ChunkSubmitted", 3, chunk_no=3))  # the first task has 3
    assert [normalised(v) for v in audited(base, tmp_path, past).violations
            if v.startswith("[chunk-submitted] ")] == [
        "[chunk-submitted] chunk 3 out of order (next is 3 of 3) at task-<task>@8 (position 15, ChunkSubmitted)"]


def test_the_settlement_names_refunds_the_task_never_settled_and_a_completion_left_unsettled(base, tmp_path):
    report = audited(base, tmp_path, duplicate(REFUND, match={"reason": "cancelled"}))
    assert [normalised(v) for v in report.violations if v.startswith("[settlement] ")] == [
        "[settlement] task <task>: account refunds 6 differ from the task's settled refunds 3",
        "[settlement] task <task>: debited 4 != consumed 1 + refunded 6"]
    report = audited(base, tmp_path, delete("ResultsRecorded", 2))  # the first task's last result
    assert "[task-completed] task <task>: completed with 1 addresses unsettled" in [
        normalised(v) for v in report.violations]


def test_the_incremental_audit_verifies_the_chain_on_from_its_point(base, tmp_path):
    from engine.audit_points import audit_since_last

    shutil.copy(base, tmp_path / "vec.db")
    db = open_database(f"sqlite:///{tmp_path}/vec.db")
    try:
        first = audit_since_last(db)  # no point yet: a full audit, which records one
        Engine(db, EngineSettings(), lambda: T0 + timedelta(days=100)).grant_credits("acme", "payg", 5, "purchase")
        since = audit_since_last(db)
    finally:
        db.close()
    assert first.ok and since.ok, since.violations
    assert (since.mode, since.since, since.head) == ("incremental", first.head, first.head + 1)


def test_refunds_still_owed_survive_an_audit_point():
    """An audit point taken between a batch of Unknowns and its refunds (the same append
    settles them, so rarely) keeps what the task still owes, in order."""
    from collections import deque
    from types import SimpleNamespace

    import orjson

    from engine.audit import _Task
    from engine.audit_points import _dump_task, _load_task
    from engine.domain import tasks

    owed = deque([("cause-1", 1, "unknown"), ("cause-1", 1, "unknown"), ("cause-2", 3, "cancelled")])
    ledger = _Task(tasks.TaskState(task_id="t1"), "ab" * 32, 5, 0, owed)
    keyring = SimpleNamespace(sealer=lambda task_id: None)
    saved = orjson.loads(orjson.dumps(_dump_task(ledger, keyring)))  # as the point is stored
    assert _load_task(saved).owed == owed


def test_deleting_a_running_task_is_named(base, tmp_path):
    report = audited(base, tmp_path, swap(("TaskCompleted", 0), ("TaskDeleted", 0)))  # the first task's
    assert [normalised(v).split(", at ")[0] for v in report.violations if v.startswith("[task-deleted] ")][0] == (
        "[task-deleted] deleted while processing")
