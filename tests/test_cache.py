"""The pollers' cache: fresh within its TTL, recomputed after, never shared across keys."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.http.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """A computation that returns how many times it ran, and records when each run was."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.calls = clock, list[float]()

    def __call__(self) -> int:
        self.calls.append(self.clock.now)
        return len(self.calls)


def test_a_value_is_reused_within_the_ttl_and_recomputed_after() -> None:
    clock = Clock()
    cache, compute = TTLCache[int](ttl_s=1.0, clock=clock), Counted(clock)
    assert cache.get("a", compute) == 1
    clock.now = 0.99
    assert cache.get("a", compute) == 1
    clock.now = 1.0
    assert cache.get("a", compute) == 2
    assert compute.calls == [0.0, 1.0]


def test_keys_with_another_tenant_never_see_each_others_values() -> None:
    cache = TTLCache[str](ttl_s=60.0, clock=Clock())
    assert cache.get(("alice", "s1"), lambda: "alice's status") == "alice's status"
    assert cache.get(("bob", "s1"), lambda: "bob's answer") == "bob's answer"
    assert cache.get(("alice", "s1"), lambda: "recomputed") == "alice's status"


def test_invalidation_and_errors_are_not_cached() -> None:
    cache = TTLCache[str](ttl_s=60.0, clock=Clock())
    cache.get(("alice", "s"), lambda: "running")
    cache.get(("alice", "s", "trials", 0, 50), lambda: "page")
    cache.get(("alice", "t"), lambda: "other study")
    cache.invalidate("alice", "s")  # the study and all its pages
    assert cache.get(("alice", "s"), lambda: "cancelled") == "cancelled"
    assert cache.get(("alice", "s", "trials", 0, 50), lambda: "new page") == "new page"
    assert cache.get(("alice", "t"), lambda: "recomputed") == "other study"

    def missing() -> str:
        raise LookupError("no such study")

    with pytest.raises(LookupError):
        cache.get("gone", missing)
    assert cache.get("gone", lambda: "created since") == "created since"


def test_the_oldest_entries_go_first_and_a_zero_ttl_disables_it() -> None:
    clock = Clock()
    cache = TTLCache[int](ttl_s=60.0, max_entries=2, clock=clock)
    for i, key in enumerate("abc"):
        clock.now = i
        cache.get(key, lambda i=i: i)
    assert list(cache.entries) == ["b", "c"]
    off, calls = TTLCache[int](ttl_s=0.0), []
    off.get("k", lambda: calls.append(1) or 1)
    off.get("k", lambda: calls.append(1) or 1)
    assert len(calls) == 2


def test_one_caller_recomputes_an_expired_entry_while_the_others_get_the_last_value() -> None:

    clock = Clock()
    cache = TTLCache[str](ttl_s=1.0, clock=clock)
    cache.get("k", lambda: "old")
    clock.now = 5.0
    started, release, calls = threading.Event(), threading.Event(), []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(5)
        return "new"

    refresher = threading.Thread(target=lambda: cache.get("k", slow))
    refresher.start()
    assert started.wait(5)
    assert cache.get("k", slow) == "old"  # served at once, no second computation
    release.set()
    refresher.join(5)
    assert cache.get("k", slow) == "new" and len(calls) == 1


def test_the_event_loop_gets_recent_values_at_once_and_they_refresh_behind_it() -> None:
    clock = Clock()
    cache, compute = TTLCache[int](ttl_s=1.0, clock=clock), Counted(clock)

    async def scenario() -> list[int]:
        seen = [await cache.aget("k", compute)]  # missing: computed, awaited
        clock.now = 0.5
        seen.append(await cache.aget("k", compute))  # fresh
        clock.now = 1.5  # expired, but less than two TTLs old: the old value, at once...
        seen.append(await cache.aget("k", compute))
        seen.append(await cache.aget("k", compute))  # (one background refresh, not two)
        while cache.tasks:
            await asyncio.sleep(0.01)
        seen.append(await cache.aget("k", compute))  # ...and the refreshed one next
        clock.now = 10.0  # long expired: computed and awaited, never served that stale
        seen.append(await cache.aget("k", compute))
        return seen

    assert asyncio.run(scenario()) == [1, 1, 1, 1, 2, 3]
    assert compute.calls == [0.0, 1.5, 10.0]
