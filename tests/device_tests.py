"""The equivalence tests on another device (``REGTUNE_TEST_DEVICE=cuda``, as
``benchmarks/gpu_check.sh`` runs them): only the tests that train on ``DEVICE`` are collected,
and the session ends with the largest differences their ``torch.testing.assert_close`` calls
saw, so a run that passes also shows how near its tolerances it came.

A test uses the device if its function, or a function of its module that it calls (at any
depth), reads the global ``DEVICE``; the rest would run on the CPU there, spending the device
machine's minutes on what CI already runs.
"""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch

DEVICE = os.environ.get("REGTUNE_TEST_DEVICE", "cpu")
SELECTING = "REGTUNE_TEST_DEVICE" in os.environ
SHOWN = 10  # differences listed at the end


def _names(code: types.CodeType) -> Iterator[str]:
    """The global names ``code`` reads, its nested functions' and lambdas' too."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def uses_device(function: Any, seen: set[Any] | None = None) -> bool:
    """Whether ``function`` reads ``DEVICE``, itself or through its module's functions."""
    seen = set() if seen is None else seen
    code = getattr(function, "__code__", None)
    if code is None or function in seen:
        return False
    seen.add(function)
    module = inspect.getmodule(function)
    for name in _names(code):
        if name == "DEVICE":
            return True
        called = getattr(module, name, None)
        local = inspect.isfunction(called) and called.__module__ == function.__module__
        if local and uses_device(called, seen):
            return True
    return False


def select(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests that do not use ``DEVICE`` (when a device is named)."""
    if not SELECTING:
        return
    keep, drop = [], []
    for item in items:
        function = getattr(item, "function", None)
        (keep if function is not None and uses_device(function) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class Differences:
    """The largest |actual − expected| (absolute and relative) of every ``assert_close``."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float, str]] = []
        self.test = ""

    def wrap(self, compare: Any) -> Any:
        def assert_close(actual: Any, expected: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor):
                a, e = actual.detach().double(), expected.detach().to(actual.device).double()
                if a.shape == e.shape and a.numel():
                    diff = (a - e).abs()
                    rel = diff / e.abs().clamp(min=1e-12)
                    self.seen.append((float(diff.max()), float(rel.max()), self.test))
            compare(actual, expected, *args, **kwargs)

        return assert_close

    def summary(self) -> list[str]:
        """A line a test, its largest differences, the largest first."""
        worst: dict[str, tuple[float, float]] = {}
        for absolute, relative, test in self.seen:
            a, r = worst.get(test, (0.0, 0.0))
            worst[test] = (max(a, absolute), max(r, relative))
        if not worst:
            return []
        lines = [f"largest differences on {DEVICE} (absolute, relative, test):"]
        for test, (absolute, relative) in sorted(worst.items(), key=lambda kv: kv[1])[::-1]:
            lines.append(f"  {absolute:.3e}  {relative:.3e}  {test}")
        return lines[: SHOWN + 1]


DIFFERENCES = Differences()
