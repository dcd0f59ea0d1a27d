import os
import socket
import subprocess
from datetime import datetime, timedelta, timezone

from engine.store.lease import LeaseInfo

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
HOST = socket.gethostname()


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_live_holder_with_a_recent_beat_is_alive():
    assert LeaseInfo("r1", os.getpid(), HOST, NOW - timedelta(seconds=20)).alive(NOW, ttl=30)


def test_a_crashed_holder_on_this_host_is_dead_at_once():
    assert not LeaseInfo("r1", dead_pid(), HOST, NOW).alive(NOW, ttl=30)


def test_a_released_lease_is_free():
    assert not LeaseInfo("", 0, HOST, NOW).alive(NOW, ttl=30)


def test_a_silent_holder_is_dead_once_its_beat_is_older_than_the_ttl():
    assert not LeaseInfo("r1", os.getpid(), HOST, NOW - timedelta(seconds=31)).alive(NOW, ttl=30)
    assert LeaseInfo("r1", 1, "another-host", NOW - timedelta(seconds=5)).alive(NOW, ttl=30)
