"""The compiled population step: built once per network shape, reused across refills and
populations, and the same function as the eager engine. One shape is compiled for the whole
test session (a compilation costs tens of seconds on 2 cores), with the graph of an augmented
batch's step beside it."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from trainer.engines import compiled
from trainer.engines.population import Population
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol

pytestmark = pytest.mark.skipif(
    not compiled.available(torch.device("cpu")), reason="torch.compile has no C++ compiler here"
)

SPEC = StudySpec(
    dataset="builtin:wine",
    model={"hidden": [16]},
    training={"max_epochs": 4, "grad_clip": 1.0},
    cv={"folds": 2},
)


def cfg(**values: float) -> TrialConfig:
    base = {"weight_decay": 1e-3, "l1": 1e-5, "dropout": 0.2, "bn_momentum": 0.3, "patience": 9}
    return TrialConfig.from_values(SPEC, base | values)


# The third trial augments its batches (eagerly, before a step compiled on its own).
AUGMENTED = {"augment.noise": 0.2, "augment.mixup": 0.3}


def run(wine, *, compile: bool) -> dict[int, object]:
    """Slot 1's first trial is pruned after two epochs; the slot takes a third trial."""
    splits = CVProtocol.of(SPEC, wine).splits
    population = Population(wine, splits, cfg(), slots=2, metric="accuracy", compile=compile)
    population.assign(0, cfg(), 1)
    population.assign(1, cfg(dropout=0.0, lr=3e-3), 2)
    results: dict[int, object] = {}
    seeds, refilled = {0: 1, 1: 2}, False
    while population.occupied():
        population.train_epoch()
        for report in population.end_epoch():
            if not refilled and report.slot == 1 and report.epoch == 1:
                population.stop(1)
                population.release(1)
                population.assign(1, cfg(weight_decay=0.05, l1=0.0, **AUGMENTED), 3)
                seeds[1], refilled = 3, True
            elif report.finished:
                results[seeds[report.slot]] = population.result(report.slot)
                population.release(report.slot)
    return results


def test_the_compiled_step_is_built_once_and_computes_the_eager_engine(wine) -> None:
    eager = run(wine, compile=False)
    together = run(wine, compile=True)
    built = compiled.CompileCounts.now()
    assert built.graphs > 0  # it did compile
    # A second population of the same shape, with refills: nothing is compiled again.
    again = run(wine, compile=True)
    assert compiled.CompileCounts.now() == built
    for seed in (1, 3):
        for a, b, c in zip(eager[seed].folds, together[seed].folds, again[seed].folds, strict=True):
            assert a.best_epoch == b.best_epoch == c.best_epoch
            assert b.train_loss == c.train_loss  # the same graphs: bit for bit
            torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-4, atol=1e-6)
            assert a.score == pytest.approx(b.score, abs=1e-6)


def test_the_compiled_step_mutates_only_static_inputs(wine, monkeypatch) -> None:
    """CUDA graphs (``reduce-overhead`` on a GPU) replay a graph only if every input it mutates
    is static, an ``nn.Parameter`` or marked with ``torch._dynamo.mark_static_address``; else
    torch logs "skipping cudagraphs due to mutated inputs" and runs without graphs. No GPU
    here: the same two lists are read from AOTAutograd's metadata of each graph the stack
    compiles (the forward, backward and update of a step, max-norm and clipping on), which
    is what inductor's check on a GPU reads. And the step's forward is one graph: no break
    splits it."""
    unstatic: list[list[str]] = []
    mutated = 0

    def record(gm: torch.fx.GraphModule, _: list[torch.Tensor]) -> Any:
        nonlocal mutated
        meta = torch._guards.TracingContext.get().fw_metadata
        names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
        inputs = set(meta.mutated_inp_runtime_indices)
        mutated += len(inputs)
        unstatic.append([names[i] for i in sorted(inputs - set(meta.static_input_indices))])
        return make_boxed_func(gm.forward)

    backend = aot_autograd(
        fw_compiler=record, bw_compiler=lambda gm, _: make_boxed_func(gm.forward)
    )
    recording = functools.cache(lambda f: torch.compile(f, backend=backend, dynamic=False))
    monkeypatch.setattr(compiled, "compile_step", lambda f, _device: recording(f))
    splits = CVProtocol.of(SPEC, wine).splits
    config = cfg(max_norm=2.0)
    population = Population(wine, splits, config, slots=1, metric="accuracy", compile=True)
    population.assign(0, config, 1)
    before = compiled.CompileCounts.now()
    population.train_epoch()
    population.end_epoch()
    assert (compiled.CompileCounts.now() - before).graph_breaks == 0  # one graph a step
    assert len(unstatic) >= 2  # the step's forward and the update
    assert mutated > 0  # BatchNorm's statistics, Adam's moments and the weights
    assert unstatic == [[]] * len(unstatic), unstatic
