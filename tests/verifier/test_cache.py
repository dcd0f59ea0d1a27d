from __future__ import annotations

import time

from verifier.cache import TTLCache


def test_ttl_and_bound():
    c: TTLCache[str, int] = TTLCache(maxsize=10)
    c.set("a", 1, 60)
    assert c.get("a") == 1
    c.set("short", 2, 0.05)
    c.set("never", 3, 0)  # ttl 0: not cached
    assert c.get("never") is None
    time.sleep(0.06)
    assert c.get("short") is None
    for i in range(100):
        c.set(f"k{i}", i, 60)
    assert len(c) <= 10
    assert c.get("k99") == 99  # the newest survive
    assert c.get("a") is None
