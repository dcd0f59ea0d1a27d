"""A small TTL cache with a size bound (the engine runs for months: nothing may grow
without limit)."""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, maxsize: int = 100_000) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._data[key]
            return None
        return hit[1]

    def set(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        self._data[key] = (time.monotonic() + ttl, value)
        self._data.move_to_end(key)
        if len(self._data) > self.maxsize:
            now = time.monotonic()
            for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
                del self._data[k]
            low = int(self.maxsize * 0.9)  # leave room: no scan on every insert
            while len(self._data) > low:
                self._data.popitem(last=False)  # the oldest entries

    def pop(self, key: K) -> V | None:
        hit = self._data.pop(key, None)
        return None if hit is None else hit[1]

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
