"""Population sizes: 1 on a CPU, memory-bound on a GPU, 0 where stacking does not apply."""

from __future__ import annotations

import optuna
import pytest
import torch
from networks_of import build_model, parameter_count
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import MemoryProfileTimeline

from trainer.engines import layout
from trainer.engines.population import Population
from trainer.engines.trial_config import TrialConfig
from trainer.nets import networks
from trainer.nets.networks import count_parameters
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.population_search import trials_at_once


def profiled_peak(prof: profile) -> int:
    """The most bytes alive at once in a CPU profile taken with ``profile_memory``, by torch's
    memory timeline (private: ``export_memory_timeline`` draws it but returns nothing)."""
    timeline = MemoryProfileTimeline(prof._memory_profile())
    _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
    return max(sum(at) for at in sizes)


def spec(**extra: object) -> StudySpec:
    return StudySpec.model_validate({"dataset": "builtin:digits", **extra})


@pytest.mark.parametrize(
    ("model", "input_shape"),
    [
        ({"hidden": [256, 256]}, (64,)),
        ({"hidden": [7], "batch_norm": False}, (64,)),
        ({"hidden": []}, (64,)),
        ({"hidden": [5, 9, 3]}, (64,)),
        ({"kind": "cnn", "channels": [4, 8], "hidden": [16]}, (1, 8, 8)),
        ({"kind": "cnn", "channels": [3], "kernel_size": 5, "stride": 3, "hidden": []}, (2, 40)),
    ],
)
def test_the_parameter_count_is_the_models(model: dict, input_shape: tuple[int, ...]) -> None:
    model_spec = spec(model=model).model
    built = build_model(model_spec, input_shape, 10, dropout=0.1, bn_momentum=0.1)
    assert parameter_count(model_spec, input_shape, 10) == count_parameters(built)


def test_the_memory_estimate_covers_the_widest_and_largest_searched_model() -> None:
    base = spec()
    wider = spec(search_space={"hidden": [[64], [512, 512]], "batch_size": [32, 256]})
    assert layout.widest(wider) == [512, 512] and layout.largest_batch(wider) == 256
    assert layout.largest_batch(spec(search_space={"batch_size": {"low": 16, "high": 128}})) == 128
    assert layout.model_bytes(wider, (64,), 10) > 2 * layout.model_bytes(base, (64,), 10)
    # Parameters, gradients, both Adam moments and the snapshot: at least 5 words per weight;
    # the eager update's temporaries more.
    weights = count_parameters(build_model(base.model, (64,), 10, dropout=0.0, bn_momentum=0.1))
    assert layout.model_bytes(base, (64,), 10, compiled=True) >= 4 * 6 * weights
    assert layout.model_bytes(base, (64,), 10) >= 4 * 12 * weights
    # Evaluation passes are bounded whatever the stack.
    assert layout.evaluation_bytes(base, (64,), 10, 10**9) == layout.evaluation_bytes(
        base, (64,), 10, layout.EVAL_ROWS
    )


def test_trials_that_fit_a_memory_budget(digits) -> None:
    """P from a budget: each trial's K models and one evaluation pass fit; at least one
    trial, at most the study's."""
    study = spec(n_trials=100)
    per_trial = study.cv.folds * layout.model_bytes(study, (64,), 10, compiled=True)
    evaluation = layout.evaluation_bytes(study, (64,), 10, layout.EVAL_ROWS)
    budget = evaluation + 7.5 * per_trial
    assert layout.trials_that_fit(study, digits, budget, compiled=True) == 7
    assert layout.trials_that_fit(study, digits, budget, compiled=False) < 7
    assert layout.trials_that_fit(study, digits, 0, compiled=True) == 1
    assert layout.trials_that_fit(spec(n_trials=3), digits, 1e15, compiled=True) == 3


@pytest.mark.parametrize(
    "model",
    [
        {"hidden": [256, 256]},
        {"kind": "cnn", "channels": [8, 16], "hidden": [32]},
    ],
)
def test_the_memory_model_bounds_the_measured_peak_of_an_epoch(digits, model: dict) -> None:
    """The count (``layout.stack_bytes``, what P on a GPU is chosen by) against the peak that
    torch's memory profiler measures over a CPU epoch (training, evaluation, the end-of-epoch
    bookkeeping): an upper bound, and not a loose one (within 2.5×)."""
    study = spec(model=model, training={"max_epochs": 3, "batch_size": 256})
    protocol = CVProtocol.of(study, digits)
    values = {"l1": 1e-4, "dropout": 0.2, "weight_decay": 1e-3, "bn_momentum": 0.1, "patience": 5}
    configs = [TrialConfig.from_values(study, values)] * 2
    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:  # from the stack's first tensor on: every allocation is in the timeline
        pop = Population(digits, protocol.splits, configs[0], slots=2, metric="accuracy")
        for slot, config in enumerate(configs):
            pop.assign(slot, config, slot)
        pop.train_epoch()  # gradients from its first step on, the snapshot at its end
        pop.end_epoch()
    peak = profiled_peak(prof)
    estimate = layout.stack_bytes(study, digits, pop.M, compiled=False)
    assert peak <= estimate <= 2.5 * peak, (peak / 2**20, estimate / 2**20)


def test_a_cnn_counts_its_feature_maps() -> None:
    """A CNN's activations are channels × positions per layer: more than its MLP head's."""
    cnn = spec(model={"kind": "cnn", "channels": [32, 64], "stride": 1, "hidden": [16]})
    head_only = spec(model={"hidden": [16]})
    # Stride 1 keeps 8×8 positions; each block keeps conv, BN, ReLU and dropout outputs
    # (4 words a unit), then the flattened maps, the head's block and its 10 outputs.
    units = 4 * (32 * 64 + 64 * 64) + 64 * 64 + 4 * 16 + 10
    assert networks.footprint(cnn.model, (1, 8, 8), 10).activations == units
    assert layout.model_bytes(cnn, (1, 8, 8), 10) > 10 * layout.model_bytes(
        head_only, (1, 8, 8), 10
    )


def test_sizes_by_device_and_study(digits) -> None:
    cpu = torch.device("cpu")
    assert layout.population_size(spec(), digits, cpu) == layout.CPU_POPULATION == 2
    assert layout.population_size(spec(n_trials=1), digits, cpu) == 1
    assert layout.population_size(spec(), digits, cpu, requested=6) == 6
    assert layout.population_size(spec(model={"kind": "cnn"}), digits, cpu, requested=6) == 6
    assert layout.population_size(spec(pruner={"kind": "wilcoxon"}), digits, cpu) == 0
    # Processes that share a budget each stack at most their share of it: two trials on two
    # cores are one per core, not a stack of two beside an idle core.
    assert layout.cpu_population(2, processes=2) == 1
    assert layout.cpu_population(3, processes=2) == 2
    assert layout.cpu_population(8, processes=2) == layout.CPU_POPULATION
    assert layout.cpu_population(1, processes=4) == 1


def test_populations_grow_with_the_completed_trials_while_a_pruner_waits_for_them() -> None:
    study = optuna.create_study(direction="maximize")
    pruned = spec(pruner={"kind": "median"})
    sizes = []
    for n in range(6):
        sizes.append(trials_at_once(study, pruned, 4))
        study.add_trial(optuna.trial.create_trial(value=0.5 + n / 100))
    assert sizes == [1, 1, 2, 3, 4, 4]
    assert trials_at_once(optuna.create_study(), spec(pruner={"kind": "none"}), 4) == 4
