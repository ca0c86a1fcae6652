"""A small per-process cache with expiry, for what pollers ask again and again.

A study's status costs a handful of aggregate queries (~8 ms on SQLite). Two hundred clients
polling it once a second would need 1.6 s of work per second from one API process; with the
answer kept for ``ttl_s`` the database sees at most one computation per study per ``ttl_s``.
A poller therefore sees a status at most ``ttl_s`` old (``2·ttl_s`` through the event loop's
``aget``, which refreshes a recently expired entry in the background), which is below the
resolution anyone polls at; while one request recomputes an expired entry, the others are
answered from the previous value rather than queueing behind it. Keys include the tenant,
so an entry computed for one tenant is never served to another; changes made through this process
(cancel, delete) drop their entries at once, and a computation that was under way when they
did is not stored.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

V = TypeVar("V")
log = logging.getLogger("regtune.cache")


class TTLCache(Generic[V]):
    """``get(key, compute)``: the value computed less than ``ttl_s`` ago, else a fresh one.

    Thread-safe (FastAPI runs plain ``def`` routes in a thread pool). Exceptions from
    ``compute`` (a 404, a database error) are not cached. At most ``max_entries`` are kept,
    the least recently computed going first. While one caller recomputes an expired entry,
    the others get the expired value at once instead of computing it again.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self.entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self.refreshing: dict[Hashable, object] = {}  # key → the computation that may store
        self.scheduled: set[Hashable] = set()  # keys with a background refresh on its way
        self.tasks: set[asyncio.Task[None]] = set()  # those refreshes (the loop keeps weak refs)
        self.lock = threading.Lock()

    async def aget(self, key: Hashable, compute: Callable[[], V]) -> V:
        """``get`` for the event loop, which must never wait for the database.

        A fresh hit is answered in place. An entry less than two TTLs old is answered in place
        too, and recomputed in the thread pool in the background (stale-while-revalidate), so
        a poller sees a value at most ``2·ttl_s`` plus one computation old. Anything older,
        or missing, is computed in the thread pool and awaited: a poller's repeat costs no
        thread-pool round trip and never queues behind other requests' computations.
        """
        now = self.clock()
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
            if hit is not None and now - hit[0] < 2 * self.ttl_s:
                if key not in self.refreshing and key not in self.scheduled:
                    self.scheduled.add(key)
                    task = asyncio.get_running_loop().create_task(self.revalidate(key, compute))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                return hit[1]
        return await run_in_threadpool(self.get, key, compute)

    async def revalidate(self, key: Hashable, compute: Callable[[], V]) -> None:
        try:
            await run_in_threadpool(self.get, key, compute)
        except Exception:  # the next caller that must wait for the value will see it raise
            log.debug("background refresh of %r failed", key, exc_info=True)
        finally:
            with self.lock:
                self.scheduled.discard(key)

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        if self.ttl_s <= 0:
            return compute()
        now = self.clock()
        mine = object()
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None:
                if now - hit[0] < self.ttl_s:
                    return hit[1]
                if key in self.refreshing:  # someone recomputes it already
                    return hit[1]
            self.refreshing[key] = mine
        try:
            value = compute()  # outside the lock: a slow computation must not block other keys
        except BaseException:
            with self.lock:
                if self.refreshing.get(key) is mine:
                    del self.refreshing[key]
            raise
        with self.lock:
            if self.refreshing.get(key) is mine:  # not invalidated meanwhile
                del self.refreshing[key]
                self.entries[key] = (now, value)
                self.entries.move_to_end(key)
                while len(self.entries) > self.max_entries:
                    self.entries.popitem(last=False)
        return value

    def invalidate(self, *prefix: Hashable) -> None:
        """Drop every key that is ``prefix`` or a tuple starting with it: ``invalidate(tenant,
        study_id)`` drops the study's status and all its trial pages."""
        n = len(prefix)

        def match(key: Hashable) -> bool:
            return (
                key == prefix
                or (isinstance(key, tuple) and key[:n] == prefix)
                or (n == 1 and key == prefix[0])
            )

        with self.lock:
            for key in [k for k in self.entries if match(k)]:
                del self.entries[key]
            for key in [k for k in self.refreshing if match(k)]:
                del self.refreshing[key]
