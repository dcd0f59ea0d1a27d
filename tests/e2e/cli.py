"""Running `vec` as a user would: a subprocess of the installed console script."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

VEC = str(Path(sys.executable).parent / "vec")
# What a customer's or operator's command can append (an engine appends the rest).
COMMAND_EVENTS = {"AccountOpened", "CreditsGranted", "CreditsDebited", "MonthlyCreditsExpired", "TaskCreated",
                  "TaskCancelled", "TaskDeleted"}


class Vec:
    def __init__(self, env: dict[str, str], cwd: Path):
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.engines = 0  # `vec run` processes started by engine_running and not yet stopped

    def run(self, *args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([VEC, *args], env=self.env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=timeout)
        if ok and done.returncode != 0:
            raise AssertionError(f"vec {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str, timeout: float = 120):
        return json.loads(self.run(*args, "--json", timeout=timeout).stdout)

    def lines(self, *args: str) -> list[dict]:
        return [json.loads(line) for line in self.run(*args).stdout.splitlines() if line.strip()]

    def fails(self, *args: str) -> str:
        """Runs a command that must be refused; returns its error message.

        Nothing may be appended by it. While an engine runs, the engine's own facts (results,
        chunks, their refunds) keep arriving, so only the facts a command could append count."""
        head = self._command_events()
        done = self.run(*args, ok=False)
        assert done.returncode != 0, f"vec {' '.join(args)} should have failed:\n{done.stdout}"
        assert self._command_events() == head, "a refused command appended events"
        return done.stderr

    def _command_events(self) -> list[str]:
        lines = [json.loads(line) for line in self.run("events").stdout.splitlines() if line.strip()]
        if not self.engines:
            return [str(e["position"]) for e in lines]
        return [str(e["position"]) for e in lines if e["type"] in COMMAND_EVENTS or
                (e["type"] == "CreditsRefunded" and e["data"]["reason"] == "cancelled")]

    def start_engine(self, log: Path) -> subprocess.Popen:
        return subprocess.Popen([VEC, "run"], env=self.env, cwd=self.cwd, stdout=log.open("ab"),
                                stderr=subprocess.STDOUT)

    @contextlib.contextmanager
    def engine_running(self, log: Path) -> Iterator[subprocess.Popen]:
        """`vec run` for the length of the block, stopped as an operator would (SIGTERM)."""
        engine = self.start_engine(log)
        self.engines += 1
        try:
            yield engine
        finally:
            self.engines -= 1
            engine.terminate()
            engine.wait(timeout=20)

    def wait_for(self, task_id: str, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            row = self.json("task", "show", task_id)
            if predicate(row):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"task never reached the expected state: {row}")
            time.sleep(0.2)


def settled(events: list[dict]) -> list[dict]:
    """Each address's result in a log as `vec events` prints it, one dict per address, as the
    engine once logged them (AddressVerified or ResultUnknown, with its position and data):
    a batch's entries (ResultsRecorded) are each their own fact."""
    facts = []
    for event in events:
        if event["type"] in ("AddressVerified", "ResultUnknown"):
            facts.append(event)
        elif event["type"] == "ResultsRecorded":
            data, count = event["data"], len(event["data"]["addresses"])
            unknown = data["status"] == "unknown"
            columns = {name: data.get(name) or [""] * count
                       for name in ("details", "texts", "replies", "mx_hosts", "flags")}
            for i, address in enumerate(data["addresses"]):
                detail = columns["details"][i]
                fact = {"address": address, "late": data["late"], "chunk_no": data["chunk_no"], "tier": data["tier"],
                        "reply": columns["replies"][i], "mx_host": columns["mx_hosts"][i],
                        "flags": [f for f in columns["flags"][i].split(",") if f]}
                fact.update({"reason": data["reason"], "detail": detail} if unknown
                            else {"status": data["status"], "detail": data["reason"] or columns["texts"][i]})
                facts.append({**event, "type": "ResultUnknown" if unknown else "AddressVerified", "data": fact})
    return facts
