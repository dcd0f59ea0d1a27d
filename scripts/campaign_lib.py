"""What the fault campaigns share (scripts/kill-campaign, scripts/fault-campaign): strict
commands, the loopback mail world, bulks with a settlement bound, recovery times and the
final money checks on the log.

Strict means: every command's exit status is checked (a failing `vec` raises CommandFailed,
so a failing read can never look like a clean log), and everything the campaign waits for
has a stated bound; what misses its bound is a violation, never a long figure.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
MAILWORLD = REPO / "scripts" / "mailworld"
UNSETTLED = ("pending", "processing")


def in_venv(script: str) -> None:
    """Re-executes the campaign with the project's venv (it imports the test helpers)."""
    if Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        if not VENV_PYTHON.exists():
            sys.exit(f"{Path(script).name}: no {VENV_PYTHON}; run scripts/install test first")
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), script, *sys.argv[1:]])
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


class CommandFailed(Exception):
    """A command the campaign ran did not succeed: the campaign stops with an error."""


def checked(argv: list[str], timeout_s: float, env: dict | None = None) -> str:
    """Runs a set-up or fault command; its exit status is checked. Returns stdout."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{' '.join(argv)}: no answer within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def strict(vec, *args: str, timeout_s: float = 120) -> str:
    """`vec ARGS` through tests.e2e.cli.Vec, its exit status checked."""
    try:
        return vec.run(*args, timeout=timeout_s).stdout
    except (AssertionError, subprocess.TimeoutExpired) as e:
        text = str(e).strip()
        raise CommandFailed(text if len(text) < 2000 else f"{text[:200]} ... {text[-1500:]}") from None


def strict_json(vec, *args: str, timeout_s: float = 120):
    return json.loads(strict(vec, *args, "--json", timeout_s=timeout_s))


def read_events(vec) -> list[dict]:
    """The whole log (`vec events`); a failing read raises, it never reads as an empty log."""
    return [json.loads(line) for line in strict(vec, "events", timeout_s=600).splitlines() if line.strip()]


# --------------------------------------------------------------------------- signals, world

@contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGTERM and SIGINT unwind like Ctrl-C, so every `finally` stops what it started, by PID
    (SIGINT too: a campaign started in the background inherits it ignored)."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def mail_world(work: Path) -> Iterator[object]:
    """The loopback mail world: reused when VEC_MAILWORLD_STATE_DIR names a running one (a
    pytest session that holds it), else started here (waiting for another session's world)
    and stopped at the end."""
    from tests.mailworld import MailWorld

    reuse = os.environ.get("VEC_MAILWORLD_STATE_DIR")
    if reuse:
        checked([str(MAILWORLD), "status", reuse], timeout_s=30)
        yield MailWorld(state_dir=Path(reuse))
        return
    state_dir = work / "mailworld"
    checked([str(MAILWORLD), "start", str(state_dir), "--owner", str(os.getpid()), "--wait", "300"], timeout_s=500)
    try:
        yield MailWorld(state_dir=state_dir)
    finally:
        subprocess.run([str(MAILWORLD), "stop", str(state_dir)], capture_output=True, timeout=120, check=False)


def verifier_env(world) -> dict[str, str]:
    """The verifier pointed at the mail world, with timings short enough for a campaign."""
    return {**world.env(), "VEC_PROVIDER": "smtp", "VEC_ALLOW_TEST_DOMAINS": "true", "VEC_LOOPBACK_ONLY": "true",
            "VEC_SMTP_TIMEOUT": "3", "VEC_ADDRESS_DEADLINE": "10", "VEC_CHUNK_SIZE": "4",
            # greylist.test wants 2 s between tries: a 4 s retry window lets a greylisted address pass
            "VEC_RETRY_WINDOW": "4", "VEC_RETRY_BACKOFF": "1",
            "VEC_RESULTS_FLUSH_INTERVAL": "0.2", "VEC_HEARTBEAT_INTERVAL": "0.3", "VEC_POLL_INTERVAL": "0.1"}


# --------------------------------------------------------------------------- bulks

def bulk_addresses(tag: str, number: int, counted: int = 0, slow: int = 16) -> list[str]:
    """A bulk of mail-world addresses: slow.test users, example.test users and unknown users,
    greylist.test (a first try is greylisted; fresh recipients each bulk, so every bulk meets
    the greylist), catchall.test, and `counted` addresses at the counting SMTP server.
    Unknown local parts carry `tag` so the SMTP server's log tells this campaign's RCPTs."""
    return ([f"u{(number * 37 + i) % 1000}@slow.test" for i in range(slow)]
            + ["alice@example.test", f"nobody-{tag}-{number}@example.test", f"ghost-{tag}-{number}@example.test",
               "anyone@catchall.test", "alice@greylist.test", f"grey-{tag}-{number}-a@greylist.test",
               f"grey-{tag}-{number}-b@greylist.test"]
            + [f"c-{tag}-{number}-{i}@counted.test" for i in range(counted)])


@dataclass
class Bulks:
    """The bulks a campaign keeps running, each to settle within `settle_bound_s` of its
    creation; one that does not is a violation (reported once)."""
    vec: object
    work: Path
    settle_bound_s: float
    counted: int = 0
    slow: int = 16  # slow.test addresses per bulk (each RCPT takes a second)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    created: dict[str, float] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
    overdue: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    def start(self) -> str:
        number = len(self.created) + 1
        path = self.work / f"bulk{number}.csv"
        path.write_text("email\n" + "\n".join(bulk_addresses(self.tag, number, self.counted, self.slow)) + "\n")
        task_id = strict_json(self.vec, "bulk", "acme", str(path), "--allow-duplicate")["task_id"]
        self.created[task_id] = time.monotonic()
        self.open.add(task_id)
        return task_id

    def check(self) -> None:
        """Drops the settled bulks; a bulk past its bound becomes a violation."""
        for task_id in sorted(self.open):
            if strict_json(self.vec, "task", "show", task_id)["status"] not in UNSETTLED:
                self.open.discard(task_id)
            elif time.monotonic() - self.created[task_id] > self.settle_bound_s and task_id not in self.overdue:
                self.overdue.add(task_id)
                self.violations.append(f"task {task_id} not settled within {self.settle_bound_s:.0f} s")

    def keep(self, in_flight: int) -> None:
        self.check()
        while len(self.open) < in_flight:
            self.start()

    def drain(self, poll_s: float = 0.5) -> None:
        """Waits for every bulk to settle (or to miss its bound)."""
        self.check()
        while self.open - self.overdue:
            time.sleep(poll_s)
            self.check()


# --------------------------------------------------------------------------- recovery

# What a customer's or operator's command appends; the rest is the engine's work.
COMMAND_EVENTS = ("AccountOpened", "CreditsGranted", "CreditsDebited", "MonthlyCreditsExpired", "TaskCreated",
                  "TaskCancelled", "TaskDeleted")


def engine_head(store_url: str) -> int:
    """The position of the last event the engine (not a command) appended; read straight from
    the store (cheap enough to poll)."""
    sql = f"SELECT COALESCE(MAX(position), 0) FROM events WHERE type NOT IN ({', '.join('?' * len(COMMAND_EVENTS))})"
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///"), timeout=10) as conn:
            return conn.execute(sql, COMMAND_EVENTS).fetchone()[0]
    import psycopg

    with psycopg.connect(store_url, autocommit=True, connect_timeout=3) as conn:
        return conn.execute(sql.replace("?", "%s"), COMMAND_EVENTS).fetchone()[0]


def recovery_s(store_url: str, head: int, bound_s: float, ready: Callable[[], bool] = lambda: True,
               meanwhile: Callable[[], None] = lambda: None) -> float | None:
    """Seconds until the engine appends past `head` and `ready()` holds; None when that does
    not happen within `bound_s` (a violation). Read errors (a store restarting) are retried
    until the bound."""
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        with suppress(Exception):  # the store may be coming back: the bound decides
            if engine_head(store_url) > head and ready():
                return time.monotonic() - started
        meanwhile()
        time.sleep(0.1)
    return None


def figures(times_s: list[float]) -> dict[str, float]:
    ordered = sorted(times_s)
    return {"slowest_recovery_s": round(ordered[-1], 2) if ordered else 0.0,
            "median_recovery_s": round(ordered[len(ordered) // 2], 2) if ordered else 0.0}


# --------------------------------------------------------------------------- final checks

def audit(vec) -> list[str]:
    """`vec audit --json`: its violations. A run that fails without naming any is an error."""
    done = vec.run("audit", "--json", ok=False, timeout=600)
    try:
        violations = json.loads(done.stdout)["violations"]
    except (ValueError, KeyError, TypeError):
        raise CommandFailed(f"vec audit exited {done.returncode}: {done.stderr.strip()[-2000:]}") from None
    if done.returncode != 0 and not violations:
        raise CommandFailed(f"vec audit exited {done.returncode} naming no violation: {done.stderr.strip()}")
    if done.returncode == 0 and violations:
        raise CommandFailed("vec audit exited 0 yet named violations")
    return violations


def _settled_addresses(event: dict) -> list[str]:
    """The addresses an event of the log (as `vec events` prints it) settles with a result:
    a batch's (ResultsRecorded), or the one of a result logged before batching."""
    if event["type"] == "ResultsRecorded":
        return list(event["data"]["addresses"])
    return [event["data"]["address"]] if event["type"] in ("AddressVerified", "ResultUnknown") else []


def money_figures(events: list[dict]) -> dict[str, int]:
    """Counted per task from the log: an address settled twice in one task is charged twice
    (late results are free); a task debited twice."""
    settled = Counter((e["stream"], address) for e in events if not e["data"].get("late")
                      for address in _settled_addresses(e))
    debits = Counter(e["data"]["task_id"] for e in events if e["type"] == "CreditsDebited")
    return {"events": len(events),
            "addresses_charged_twice": sum(1 for n in settled.values() if n > 1),
            "tasks_debited_twice": sum(1 for n in debits.values() if n > 1),
            "system_failures": sum(1 for e in events if e["type"] == "SystemFailure")}


def postfix_final_rcpts(log_path: Path, tag: str) -> Counter:
    """Final (5xx) answers Postfix logged to this campaign's tagged recipients: a recipient
    answered twice was probed twice. Greylisting's 450s are retries, not duplicates."""
    answered: Counter = Counter()
    if not log_path.exists():
        return answered
    for line in log_path.read_text(errors="replace").splitlines():
        if ": reject: RCPT from " in line and f"-{tag}-" in line and "to=<" in line:  # NOQUEUE or a queue ID
            answer = line.split(": reject: RCPT from ", 1)[1].split("]: ", 1)[-1]
            if answer.startswith("5"):
                answered[line.split("to=<", 1)[1].split(">", 1)[0]] += 1
    return answered


def duplicates(answered: Counter) -> int:
    """RCPTs beyond the first per recipient."""
    return sum(n - 1 for n in answered.values() if n > 1)


def finish(outcome: dict, as_json: bool, headline: str, work: Path, keep: bool = False) -> int:
    """Prints the report; exit 1 on any violation (the work directory is kept then, or with `keep`)."""
    bad = bool(outcome["violations"] or outcome["addresses_charged_twice"] or outcome["tasks_debited_twice"])
    if as_json:
        print(json.dumps(outcome, indent=2))
    else:
        print(headline)
        for text in outcome["violation_texts"]:
            print(f"  VIOLATION {text}")
    if bad or keep:
        print(f"kept for inspection: {work}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0
