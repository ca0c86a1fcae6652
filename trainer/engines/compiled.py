"""The population's step, compiled: one graph per network shape, reused across refills.

The stack never changes shape (slots are refilled in place), so ``torch.compile`` traces the
step's forward and loss (and, through AOTAutograd, its backward) and the stacked optimizer
update once, and every later step replays them. On a GPU the mode is ``reduce-overhead``:
CUDA graphs, one launch for a whole graph, which matters for small models whose kernels are
shorter than their launch latency. On a CPU, inductor's C++ kernels fuse the update's
elementwise passes; whether that beats the eager engine there is measured, not assumed
(BENCHMARKS.md, "Engines"), so it is opt-in on a CPU.

The caller hands over the eager function it wants compiled (:func:`compile_step`); each is
compiled once per device type and cached here, so every population of a worker shares it: a
second population of the same shape finds its graphs already built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

import torch

from trainer import torch_internals

log = logging.getLogger("regtune.trainer")

# Graphs kept per compiled function: one per network shape (and full/partial batch) a worker
# meets; dynamo's default of 8 would fall back to eager after a few studies of a long-lived
# worker.
CACHE_SIZE_LIMIT = 64


def wanted(device: torch.device, requested: bool | None) -> bool:
    """Compile on a GPU by default; on a CPU only when asked (it was not faster there)."""
    return device.type == "cuda" if requested is None else requested


@cache
def available(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build kernels here (inductor needs a C++ compiler on a
    CPU and Triton on a GPU); if not, the population trains eagerly, with a log line."""
    try:
        probe = torch.compile(lambda x: x * 2 + 1, dynamic=False)
        probe(torch.ones(2, device=device))
    except Exception as exc:  # any failure means: no compiler here
        log.warning("torch.compile unavailable on %s (%s); training eagerly", device, exc)
        return False
    return True


def compile_step(function: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``function`` (a module-level function: the cache keys on it) under ``torch.compile``
    for ``device``'s type, built on first use and the same object ever after."""
    return _compiled(function, device.type)


@cache
def _compiled(function: Callable[..., Any], device_type: str) -> Callable[..., Any]:
    torch_internals.raise_compile_cache_limit(CACHE_SIZE_LIMIT)
    mode = "reduce-overhead" if device_type == "cuda" else None
    return torch.compile(function, dynamic=False, mode=mode)
