"""pytest plugin: the session-scoped `mailworld` fixture (the loopback mail world of
tests/MAILWORLD.md).

Registered from tests/conftest.py with `pytest_plugins = ["tests.mailworld"]`. Nothing
starts unless a test requests the fixture. It runs `scripts/mailworld install`, then
`scripts/mailworld start` in a temporary directory, and stops the world at session end.

Environment knobs:
- VEC_MAILWORLD_STATE_DIR=DIR  reuse a world already started by hand with
  `scripts/mailworld start DIR` (not started nor stopped by the fixture).
- VEC_MAILWORLD_WAIT=SECONDS   how long to wait when another live pytest session holds
  the world's ports (default 120); a world left behind by a dead session is stopped.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "mailworld"


@dataclass(frozen=True)
class MailWorld:
    state_dir: Path
    dns_server: str = "127.0.0.1:5300"
    dead_dns_server: str = "127.0.0.1:5301"
    smtp_port: int = 25
    helo_name: str = "vec.test"
    mail_from: str = "probe@vec.test"
    # Which loopback address serves which role (see MAILWORLD.md).
    hosts: dict = field(default_factory=lambda: {
        "main": "127.0.0.2",
        "greylist": "127.0.0.3",
        "greyhard": "127.0.0.4",
        "tarpit": "127.0.0.5",
        "blackhole": "127.0.0.6",
        "closed": "127.0.0.7",
        "slow": "127.0.0.8",
        "limit": "127.0.0.9",
    })

    @property
    def dns_host(self) -> str:
        return self.dns_server.rsplit(":", 1)[0]

    @property
    def dns_port(self) -> int:
        return int(self.dns_server.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        """Environment variables pointing the verifier at this world."""
        return {
            "VEC_DNS_SERVERS": self.dns_server,
            "VEC_SMTP_PORT": str(self.smtp_port),
            "VEC_HELO_NAME": self.helo_name,
            "VEC_MAIL_FROM": self.mail_from,
        }

    def log_path(self, name: str = "postfix.log") -> Path:
        return self.state_dir / name

    # --- the resolver outage -----------------------------------------------------------
    def stop_dns(self) -> None:
        """Stop dnsmasq alone (`scripts/mailworld dns-stop`); returns once it is gone.
        Prefer :meth:`dns_stopped`, which always starts it again."""
        _script(["dns-stop", str(self.state_dir)], timeout=60)

    def start_dns(self) -> None:
        """Start dnsmasq again (`scripts/mailworld dns-start`); returns once it answers."""
        _script(["dns-start", str(self.state_dir)], timeout=90)

    @contextlib.contextmanager
    def dns_stopped(self):
        """``with mailworld.dns_stopped(): ...`` -- the DNS is back afterwards, whatever
        happened inside, so later tests see a full world."""
        self.stop_dns()
        try:
            yield self
        finally:
            self.start_dns()


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"scripts/mailworld {' '.join(args)} timed out after {timeout:.0f}s:\n"
                    f"{e.stdout or ''}{e.stderr or ''}", pytrace=False)


def _script(args: list[str], timeout: float) -> None:
    r = _run(args, timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"scripts/mailworld {' '.join(args)} failed (exit {r.returncode}):\n"
                    f"{r.stdout}{r.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def mailworld(tmp_path_factory: pytest.TempPathFactory):
    reuse = os.environ.get("VEC_MAILWORLD_STATE_DIR")
    if reuse:
        r = _run(["status", reuse], timeout=30)
        if r.returncode != 0:
            pytest.fail(f"VEC_MAILWORLD_STATE_DIR={reuse} but that world is not (fully) running:\n"
                        f"{r.stdout}{r.stderr}", pytrace=False)
        yield MailWorld(state_dir=Path(reuse))
        return

    r = _run(["install"], timeout=600)
    if r.returncode != 0:
        pytest.fail(f"scripts/mailworld install failed (exit {r.returncode}):\n{r.stdout}{r.stderr}",
                    pytrace=False)

    state_dir = tmp_path_factory.mktemp("mailworld")
    wait = float(os.environ.get("VEC_MAILWORLD_WAIT", "120"))
    r = _run(["start", str(state_dir), "--owner", str(os.getpid()), "--wait", str(wait)],
             timeout=wait + 120)
    if r.returncode != 0:
        pytest.fail(f"scripts/mailworld start failed (exit {r.returncode}):\n{r.stdout}{r.stderr}",
                    pytrace=False)
    try:
        yield MailWorld(state_dir=state_dir)
    finally:
        r = _run(["stop", str(state_dir)], timeout=60)
        if r.returncode != 0:
            print(f"scripts/mailworld stop failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
