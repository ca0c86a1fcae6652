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

CUDA graphs replay fixed addresses: cudagraph trees copy every input into the graph's own
memory before each replay, unless it is static (an ``nn.Parameter``, or a tensor marked with
``torch._dynamo.mark_static_address``), and they skip the graph altogether ("skipping
cudagraphs due to mutated inputs") if it mutates an input that is not static. The step mutates
BatchNorm's running statistics, Adam's moments and step counts and the parameters, and reads
the data set and per-model settings: a stack marks its persistent tensors static
(:func:`mark_static`), passes its parameters as Parameters, and the compiled update
leaves its gradient inputs unmutated (tests/test_compiled.py checks the mutated inputs are
static, by AOTAutograd's own metadata).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
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


def mark_static(*holders: object) -> None:
    """Mark every tensor attribute of ``holders`` (directly, or in dicts, lists and tuples)
    static for CUDA graphs (module docstring): the stack keeps them at one address and updates
    them in place. Unguarded: a new stack's tensors re-record the graphs, they do not compile
    them again."""
    import torch._dynamo  # seconds of imports: only a compiled stack pays them

    for tensor in _tensors_of(holders):
        if not isinstance(tensor, torch.nn.Parameter):  # parameters are static already
            torch._dynamo.mark_static_address(tensor, guard=False)


def _tensors_of(holders: tuple[object, ...]) -> Iterator[torch.Tensor]:
    for holder in holders:
        yield from _tensors_in(list(vars(holder).values()))


def _tensors_in(value: object) -> Iterator[torch.Tensor]:
    """The tensors in ``value``: itself, or inside its dicts, lists and tuples (Adam's
    moments are a dict of pairs)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        yield from _tensors_in(list(value.values()))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)


@dataclass(frozen=True)
class CompileCounts:
    """torch.compile's counters in this process (``torch._dynamo.utils.counters``: private, the
    only place they are kept): graphs built, recompilations, graph breaks, and graphs that CUDA
    graphs skipped (each skip logs why under ``TORCH_LOGS=cudagraphs``)."""

    graphs: int
    recompiles: int
    graph_breaks: int
    cudagraph_skips: int

    @classmethod
    def now(cls) -> CompileCounts:
        from torch._dynamo.utils import counters

        return cls(
            graphs=counters["stats"]["unique_graphs"],
            recompiles=sum(counters["recompiles"].values()),
            graph_breaks=sum(counters["graph_break"].values()),
            cudagraph_skips=counters["inductor"]["cudagraph_skips"],
        )

    def __sub__(self, earlier: CompileCounts) -> CompileCounts:
        return CompileCounts(*(a - b for a, b in zip(astuple(self), astuple(earlier), strict=True)))
