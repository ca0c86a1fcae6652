"""A small per-process cache with expiry, for what pollers ask again and again.

A study's status costs a handful of aggregate queries (~8 ms on SQLite). Two hundred clients
polling it once a second would need 1.6 s of work per second from one API process; with the
answer kept for ``ttl_s`` the database sees at most one computation per study per ``ttl_s``.
A poller therefore sees a status at most ``ttl_s`` old, which is below the resolution anyone
polls at. Keys include the tenant, so an entry computed for one tenant is never served to
another; changes made through this process (cancel, delete) drop their entries at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    """``get(key, compute)``: the value computed less than ``ttl_s`` ago, else a fresh one.

    Thread-safe (FastAPI runs plain ``def`` routes in a thread pool). Exceptions from
    ``compute`` (a 404, a database error) are not cached. At most ``max_entries`` are kept,
    the least recently computed going first.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self.entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        if self.ttl_s <= 0:
            return compute()
        now = self.clock()
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        value = compute()  # outside the lock: a slow computation must not block other keys
        with self.lock:
            self.entries[key] = (now, value)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        return value

    def invalidate(self, key: Hashable) -> None:
        with self.lock:
            self.entries.pop(key, None)
