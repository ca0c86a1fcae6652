"""How many trials train at once on a device: the population size P.

The population engine stacks P trials × K folds of a network. On a GPU a larger stack fills more
of the device, so P is as large as memory allows. On a CPU a stack pays a fixed cost per step
(a few hundred small kernels) that more models amortize, but the stacked elementwise work
(Adam, BatchNorm, dropout) streams every model's tensors through the caches once per step, and
past a few models per core the step is bound by memory traffic, not by the matmuls. Measured on
2 cores (BENCHMARKS.md, "Engines", 2026-12-01, digits MLP 256-256, 5 folds), with one 1-thread
worker process per core (``service.cli.serve.worker_devices``): two trials per stack
(``CPU_POPULATION``) 4.5× the textbook loop, one trial 3.7×, eight in one process 2.8×. That
benchmark builds a stack per population; in ``regtune tune``, where each process refills one
stack, one and two trials per stack were within the run-to-run noise (19–22 s for the
reference workload), so two is the default.

A GPU model's memory, in float32 words, per stacked model:

* parameters θ and their gradient, Adam's two moments and the best-weights snapshot: 5·|θ|;
* activations kept for the backward pass, per training row: every layer's output, one word
  per element (a template's hidden unit has four: the layer's output, the normalized value,
  the ReLU output and the dropout mask);
* evaluation in one pass over the model's validation or scored rows, one layer at a time.

P is the number of trials whose K models fit in ``MEMORY_SHARE`` of the free memory.

The count is of the template's network at its widest ``hidden`` choice (:func:`widest`), which
is what a stack holds whatever its trials' ``width``: a narrow trial's network lives masked
inside the template's tensors (:mod:`trainer.engines.stacked_layers`), so a width < 1 takes
no less memory, and never more.
"""

from __future__ import annotations

import math

import torch

from trainer.data.datasets import Dataset
from trainer.engines import stacking
from trainer.nets import networks
from trainer.nets.networks import footprint
from trainer.nets.plugins import PluginError
from trainer.specs.study_spec import Range, SpecError, StudySpec

MEMORY_SHARE = 0.5  # of the free device memory; the rest is for the allocator's slack
MAX_POPULATION = 256  # beyond this a step is long enough that the GPU is busy anyway
CPU_POPULATION = 2  # trials per stack on a CPU: the fastest measured (module docstring)
BYTES_PER_WORD = 4


def per_trial_reason(spec: StudySpec, dataset: Dataset) -> str | None:
    """Why a study's trials train one at a time in the per-trial engine (None: they stack).

    Stacking needs epoch-wise pruning (Wilcoxon pruning decides between folds, one by one)
    and a network the population engine can run stacked (:mod:`trainer.engines.stacking`). The
    network is built on the meta device, which allocates nothing, under a forked RNG.
    """
    if spec.pruner.between_folds:
        return "the Wilcoxon pruner decides between folds, so folds train one after another"
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            net = networks.build(spec.model, dataset.input_shape, dataset.n_outputs)
        stacking.program(net)
    except stacking.Unstackable as exc:
        return f"the population engine cannot stack this network: {exc}"
    except (PluginError, SpecError):  # not installed here, or a misfit: its trials fail
        return None
    return None


def widest(spec: StudySpec) -> list[int]:
    """The largest hidden widths any trial of the study can have, layer by layer."""
    choices = spec.search_space.hidden or [spec.model.hidden]
    depth = max(len(h) for h in choices)
    return [max((h[i] for h in choices if len(h) > i), default=0) for i in range(depth)]


def largest_batch(spec: StudySpec) -> int:
    param = spec.search_space.batch_size
    if param is None:
        return spec.training.batch_size
    if isinstance(param, list):
        return int(max(param))
    high = param.high if isinstance(param, Range) else param
    return int(float(high))


def model_bytes(
    spec: StudySpec, input_shape: tuple[int, ...], n_outputs: int, eval_rows: int
) -> int:
    """Device memory one stacked model needs, by the count in the module docstring."""
    network = footprint(spec.model, input_shape, n_outputs, hidden=widest(spec))
    n_features = math.prod(input_shape)
    train = largest_batch(spec) * (network.activations + n_features)
    evaluate = eval_rows * (n_features + network.activations)
    return BYTES_PER_WORD * (5 * network.parameters + train + evaluate)


def cpu_population(n_trials: int, processes: int = 1) -> int:
    """Trials per stack on a CPU for a study of ``n_trials`` searched by ``processes`` one-core
    processes: ``CPU_POPULATION``, but no more than a process's share of the budget (a stack
    that took both trials of a two-trial study would leave the other core idle)."""
    return max(1, min(CPU_POPULATION, -(-n_trials // processes)))


def population_size(
    spec: StudySpec, dataset: Dataset, device: torch.device, requested: int | None = None
) -> int:
    """Trials per population: ``requested`` if given, else ``CPU_POPULATION`` on a CPU, else
    what memory allows.

    Returns 0 when the population engine does not apply (:func:`per_trial_reason`): those
    studies train one trial at a time in the per-trial engine.
    """
    if per_trial_reason(spec, dataset) is not None:
        return 0
    if requested is not None:
        return max(1, requested)
    if device.type != "cuda":
        return cpu_population(spec.n_trials)
    free, _ = torch.cuda.mem_get_info(device)
    per_trial = spec.cv.folds * model_bytes(
        spec, dataset.input_shape, dataset.n_outputs, dataset.n_samples
    )
    fits = math.floor(MEMORY_SHARE * free / per_trial)
    return max(1, min(fits, MAX_POPULATION, spec.n_trials))
