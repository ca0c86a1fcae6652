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

A stack's memory, in float32 words, for M stacked models of |θ| parameters and A activations
per row (every layer's output; a template's hidden unit has four: the layer's output, the
normalized value, the ReLU output and the dropout mask), d input features, batch B:

* state: θ and its gradient, Adam's two moments and the best-weights snapshot, 5·|θ| a model;
* the update's temporaries, a model: eager, up to six tensors the size of the parameter being
  updated (the stacked Adam's new moments, denominator, step and gates, one parameter at a
  time) and a clipped copy of the gradients, counted as 7·|θ| (an upper bound: the largest
  tensor is most of |θ| in these networks); compiled, inductor fuses each parameter's update
  into one loop, counted as |θ|;
* training, a model: B·(A + d) kept for the backward pass, and as much again for the
  gradients of the activations that the backward pass holds at once; compiled with CUDA graphs
  the graph's pool keeps both between replays, so they are counted either way;
* evaluation, for the stack: at most ``EVAL_ROWS`` model-rows a pass
  (:meth:`~trainer.engines.population.Population.evaluate`), each with its d features and A
  activations (an upper bound: a pass keeps a layer or two at once), whatever M.

tests/test_layout.py holds the count against the peak that torch's memory profiler measures
over a CPU epoch (2.2× it for an MLP 256-256 and a small CNN on digits, 2 trials × 5 folds, the
first epoch, eager); ``benchmarks/engines.py`` prints a GPU's peak beside it.

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
EVAL_ROWS = 1 << 16  # model-rows per evaluation pass (M models × rows): its peak memory
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
    spec: StudySpec, input_shape: tuple[int, ...], n_outputs: int, *, compiled: bool = False
) -> int:
    """Device memory one stacked model needs outside evaluation: state, the update's
    temporaries and training, by the count in the module docstring."""
    network = footprint(spec.model, input_shape, n_outputs, hidden=widest(spec))
    n_features = math.prod(input_shape)
    state = 5 * network.parameters
    temporaries = (1 if compiled else 7) * network.parameters
    train = 2 * largest_batch(spec) * (network.activations + n_features)
    return BYTES_PER_WORD * (state + temporaries + train)


def evaluation_bytes(
    spec: StudySpec, input_shape: tuple[int, ...], n_outputs: int, model_rows: int
) -> int:
    """Device memory of one evaluation pass over ``model_rows`` (models × rows, at most
    ``EVAL_ROWS``): each row's features and activations."""
    network = footprint(spec.model, input_shape, n_outputs, hidden=widest(spec))
    rows = min(model_rows, EVAL_ROWS)
    return BYTES_PER_WORD * rows * (math.prod(input_shape) + network.activations)


def evaluated_rows(spec: StudySpec, dataset: Dataset) -> int:
    """The most rows one model evaluates an epoch, of n: its fold's held-out n/K and its inner
    validation share of the rest, plus a row a class (stratified folds' sizes differ by up to
    one a class)."""
    n = dataset.n_samples
    share = 1 / spec.cv.folds + spec.cv.inner_validation
    return min(n, math.ceil(n * share) + dataset.n_outputs)


def stack_bytes(spec: StudySpec, dataset: Dataset, models: int, *, compiled: bool) -> int:
    """Device memory of a stack of ``models`` models on ``dataset``, by the count in the
    module docstring."""
    shape, outputs = dataset.input_shape, dataset.n_outputs
    return models * model_bytes(spec, shape, outputs, compiled=compiled) + evaluation_bytes(
        spec, shape, outputs, models * evaluated_rows(spec, dataset)
    )


def cpu_population(n_trials: int, processes: int = 1) -> int:
    """Trials per stack on a CPU for a study of ``n_trials`` searched by ``processes`` one-core
    processes: ``CPU_POPULATION``, but no more than a process's share of the budget (a stack
    that took both trials of a two-trial study would leave the other core idle)."""
    return max(1, min(CPU_POPULATION, -(-n_trials // processes)))


def population_size(
    spec: StudySpec,
    dataset: Dataset,
    device: torch.device,
    requested: int | None = None,
    *,
    compiled: bool = True,
) -> int:
    """Trials per population: ``requested`` if given, else ``CPU_POPULATION`` on a CPU, else
    what memory allows (for a stack whose step is ``compiled``, or not).

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
    return trials_that_fit(spec, dataset, MEMORY_SHARE * free, compiled=compiled)


def trials_that_fit(spec: StudySpec, dataset: Dataset, budget: float, *, compiled: bool) -> int:
    """The most trials (at least one, at most ``MAX_POPULATION`` and the study's) whose K
    models each fit in ``budget`` bytes with the evaluation pass (:func:`stack_bytes`)."""
    shape, outputs = dataset.input_shape, dataset.n_outputs
    per_trial = spec.cv.folds * model_bytes(spec, shape, outputs, compiled=compiled)
    evaluation = evaluation_bytes(spec, shape, outputs, EVAL_ROWS)  # the most a pass holds
    fits = math.floor((budget - evaluation) / per_trial)
    return max(1, min(fits, MAX_POPULATION, spec.n_trials))
