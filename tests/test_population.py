"""The population engine computes the same function as the per-trial engine."""

from __future__ import annotations

import math
import weakref

import numpy as np
import optuna
import pytest
import torch
from device_tests import DEVICE
from equivalence import REASSOCIATED, assert_close, assert_identical
from servers import tiny_study
from torch.utils._python_dispatch import TorchDispatchMode

from trainer import device as devices
from trainer.data.builtin_sets import load_builtin
from trainer.engines.folds import fold_seed
from trainer.engines.per_trial import FoldRun, cross_validate
from trainer.engines.population import Population, train_population
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec
from trainer.tuning import objective, population_search
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.study import run_study

# benchmarks/gpu_check.sh runs these equivalence tests on the GPU.


def config(spec: StudySpec, **values: float) -> TrialConfig:
    base = {"weight_decay": 1e-3, "l1": 1e-5, "dropout": 0.0, "bn_momentum": 0.3, "patience": 4}
    return TrialConfig.from_values(spec, base | values)


# Adam turns float noise in a gradient that is zero in exact arithmetic (the bias of a Linear
# layer before BatchNorm) into full-size steps, so two float orders of the same sums drift
# apart by ~1e-2 there (compared at 0.2, as before); the close comparisons use SGD with
# BatchNorm or Adam without it.
@pytest.mark.parametrize(
    ("training", "batch_norm", "task", "rel"),
    [
        ({"optimizer": "adam", "max_epochs": 8}, False, "classification", REASSOCIATED),
        (
            {"optimizer": "adam", "l2_mode": "decoupled", "max_epochs": 8, "grad_clip": 0.5},
            False,
            "classification",
            REASSOCIATED,
        ),
        ({"optimizer": "sgd", "lr": 0.05, "max_epochs": 8}, True, "classification", REASSOCIATED),
        (
            {"optimizer": "sgd", "lr": 0.05, "l2_mode": "decoupled", "max_epochs": 8},
            True,
            "classification",
            REASSOCIATED,
        ),
        (
            {"optimizer": "adam", "max_epochs": 8, "batch_size": 50},
            False,
            "regression",
            REASSOCIATED,
        ),
        ({"optimizer": "adam", "max_epochs": 8}, True, "classification", 0.2),
    ],
)
def test_population_matches_the_per_trial_engine_without_dropout(
    wine, training: dict, batch_norm: bool, task: str, rel: float
) -> None:

    data = wine if task == "classification" else load_builtin("builtin:diabetes")
    metric = "accuracy" if task == "classification" else "mse"
    spec = StudySpec(
        dataset=data.name,
        model={"hidden": [16, 8], "batch_norm": batch_norm},
        training=training,
        cv={"folds": 3},
    )
    protocol = CVProtocol.of(spec, data)
    configs = [
        config(spec, weight_decay=1e-3, bn_momentum=0.3),
        config(spec, weight_decay=5e-2, l1=1e-4, bn_momentum=0.9, patience=2),
        config(spec, weight_decay=0.0, l1=0.0, bn_momentum=0.05, lr=3e-3),
    ]
    seeds = [11, 22, 33]
    together = train_population(
        data, configs, protocol.splits, seeds=seeds, metric=metric, device=DEVICE
    )
    for cfg, seed, result in zip(configs, seeds, together, strict=True):
        alone = cross_validate(data, cfg, protocol.splits, metric=metric, seed=seed, device=DEVICE)
        assert_close(result, alone, rel=rel)


@pytest.mark.parametrize(
    ("dataset", "training", "batch_norm", "rel"),
    [
        ("digits", {"optimizer": "sgd", "lr": 0.05}, True, REASSOCIATED),  # Conv2d, grouped
        ("digits", {"optimizer": "adam", "l2_mode": "decoupled"}, False, REASSOCIATED),
        (
            "mnist1d",
            {"optimizer": "sgd", "lr": 0.05, "grad_clip": 0.5},
            True,
            REASSOCIATED,
        ),  # Conv1d
        ("mnist1d", {"optimizer": "adam"}, True, 0.2),  # see the note on Adam with BatchNorm
    ],
)
def test_stacked_cnns_match_the_per_trial_engine(
    digits, dataset: str, training: dict, batch_norm: bool, rel: float
) -> None:
    data = digits if dataset == "digits" else load_builtin("builtin:mnist1d:600")
    spec = StudySpec(
        dataset=data.name,
        model={"kind": "cnn", "channels": [4, 6], "hidden": [12], "batch_norm": batch_norm},
        training=training | {"max_epochs": 3},
        cv={"folds": 2},
    )
    splits = CVProtocol.of(spec, data).splits
    configs = [
        config(spec, weight_decay=1e-3, bn_momentum=0.3),
        config(spec, weight_decay=5e-2, l1=1e-4, bn_momentum=0.9),
    ]
    seeds = [11, 22]
    together = train_population(
        data, configs, splits, seeds=seeds, metric="accuracy", device=DEVICE
    )
    for cfg, seed, result in zip(configs, seeds, together, strict=True):
        alone = cross_validate(data, cfg, splits, metric="accuracy", seed=seed, device=DEVICE)
        assert_close(result, alone, rel=rel)


@pytest.mark.parametrize(
    ("dataset", "model"),
    [
        ("builtin:wine", {"hidden": [16, 8], "batch_norm": True}),
        ("builtin:digits", {"kind": "cnn", "channels": [4], "hidden": [8], "batch_norm": True}),
        ("builtin:diabetes", {"hidden": [16], "batch_norm": True}),
    ],
)
def test_an_exported_fold_module_scores_as_its_stack_row(dataset: str, model: dict) -> None:
    """``Population.module`` undoes the stacked layout (transposed Linear weights, grouped
    convolutions, BatchNorm's running statistics): the module, fed its fold's standardized
    rows, scores what the population scored at the fold's best epoch."""

    data = load_builtin(dataset)
    metric = "accuracy" if data.task == "classification" else "mse"
    spec = StudySpec(dataset=data.name, model=model, training={"max_epochs": 4}, cv={"folds": 3})
    splits = CVProtocol.of(spec, data).splits
    population = Population(data, splits, config(spec), slots=2, metric=metric, device=DEVICE)
    population.assign(0, config(spec, dropout=0.2), 1)
    population.assign(1, config(spec, dropout=0.1, bn_momentum=0.7), 2)
    for _ in range(4):  # max_epochs: every fold is done
        population.train_epoch()
        population.end_epoch()
    result = population.result(1)
    for k, split in enumerate(splits):
        net = population.module(1, k)
        assert not net.training
        x = torch.as_tensor(result.folds[k].x_scaler.transform(data.X[split.score]), device=DEVICE)
        with torch.no_grad():
            out = net(x).cpu().numpy()
        y = data.y[split.score]
        if metric == "accuracy":
            score = float((out.argmax(1) == y).mean())
        else:  # the population standardizes the target per fold, on its fit rows
            y_fit = data.y[split.fit]
            predicted = out[:, 0] * y_fit.std() + y_fit.mean()
            score = float(np.mean((predicted - y) ** 2))
        assert score == pytest.approx(result.folds[k].score, rel=1e-4)


def test_a_stacked_cnn_does_not_depend_on_its_neighbours_with_dropout(digits) -> None:
    spec = StudySpec(
        dataset=digits.name,
        model={"kind": "cnn", "channels": [4], "hidden": [8]},
        training={"max_epochs": 3},
        cv={"folds": 2},
    )
    splits = CVProtocol.of(spec, digits).splits
    target = config(spec, dropout=0.3)
    neighbour = config(spec, dropout=0.6, weight_decay=0.1, bn_momentum=0.9)
    alone = train_population(digits, [target], splits, seeds=[5], metric="accuracy", device=DEVICE)[
        0
    ]
    pair = train_population(
        digits, [neighbour, target], splits, seeds=[6, 5], metric="accuracy", device=DEVICE
    )
    # oneDNN blocks a grouped convolution by its number of groups, so M = 1 and M = 2 sum in
    # different orders (relative 1e-4 after three Adam epochs on this machine's CPU) ...
    assert_close(alone, pair[1])
    # ... while beside another neighbour in a stack of the same size it is the same, exactly.
    other = config(spec, dropout=0.1, weight_decay=1e-5, bn_momentum=0.1)
    assert_identical(
        pair[1],
        train_population(
            digits, [other, target], splits, seeds=[7, 5], metric="accuracy", device=DEVICE
        )[1],
    )


def test_a_model_does_not_depend_on_its_neighbours_even_with_dropout(wine) -> None:
    spec = StudySpec(
        dataset="builtin:wine", model={"hidden": [16]}, training={"max_epochs": 6}, cv={"folds": 3}
    )
    splits = CVProtocol.of(spec, wine).splits
    target = config(spec, dropout=0.3)
    neighbours = [
        config(spec, dropout=0.6, weight_decay=0.1),
        config(spec, dropout=0.0, bn_momentum=0.99, patience=1),
    ]
    alone = train_population(wine, [target], splits, seeds=[5], metric="accuracy", device=DEVICE)[0]
    crowd = train_population(
        wine,
        [neighbours[0], target, neighbours[1]],
        splits,
        seeds=[6, 5, 7],
        metric="accuracy",
        device=DEVICE,
    )[1]
    assert_close(alone, crowd)  # a stack of another size: float order only
    others = train_population(
        wine,
        [neighbours[1], target, config(spec, dropout=0.5, l1=1e-3)],
        splits,
        seeds=[8, 5, 9],
        metric="accuracy",
        device=DEVICE,
    )[1]
    assert_identical(crowd, others)


def test_pruning_and_divergence_are_per_trial(diabetes_data) -> None:
    spec = StudySpec(
        dataset="builtin:diabetes",
        model={"hidden": [16], "batch_norm": False},
        training={"optimizer": "sgd", "max_epochs": 5},
        cv={"folds": 2},
    )
    splits = CVProtocol.of(spec, diabetes_data).splits
    fine, exploding, pruned = (
        config(spec, lr=1e-3),
        config(spec, lr=5.0),
        config(spec, lr=1e-3, weight_decay=1e-2),
    )
    reports: list[tuple[int, int]] = []

    def on_epoch(trial: int, epoch: int, value: float) -> bool:
        reports.append((trial, epoch))
        return trial == 2 and epoch == 1

    outcomes = train_population(
        diabetes_data,
        [fine, exploding, pruned],
        splits,
        seeds=[1, 2, 3],
        metric="mse",
        on_epoch=on_epoch,
    )
    assert math.isfinite(outcomes[0].mean)
    assert "diverged" in str(outcomes[1])
    assert outcomes[2] is None
    assert [e for t, e in reports if t == 0] == [0, 1, 2, 3, 4]
    assert [e for t, e in reports if t == 2] == [0, 1]


@pytest.fixture(scope="module")
def diabetes_data():

    return load_builtin("builtin:diabetes")


def test_stacked_batchnorm_running_statistics(wine) -> None:
    spec = StudySpec(
        dataset="builtin:wine",
        model={"hidden": [8]},
        training={"max_epochs": 1, "optimizer": "sgd"},
        cv={"folds": 2},
    )
    splits = CVProtocol.of(spec, wine).splits

    cfgs = [config(spec, bn_momentum=0.1), config(spec, bn_momentum=0.7)]
    seeds = [3, 4]
    population = Population(wine, [splits[0]], cfgs[0], slots=2, metric="accuracy")
    for slot, (c, seed) in enumerate(zip(cfgs, seeds, strict=True)):
        population.assign(slot, c, seed)
    population.train_epoch()
    for m, (c, seed) in enumerate(zip(cfgs, seeds, strict=True)):
        fold = FoldRun(
            0, wine, c, splits[0], metric="accuracy", device="cpu", seed=fold_seed(seed, 0)
        )
        fold.train_epoch()
        bn = fold.model[1]
        mean, var = population.layers.running[0]
        torch.testing.assert_close(mean[m], bn.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(var[m], bn.running_var, rtol=1e-4, atol=1e-5)


def test_batched_asks_run_a_study_with_pruning_and_records(wine) -> None:
    spec = StudySpec.model_validate(
        tiny_study(
            n_trials=7,
            training={"max_epochs": 6},
            cv={"folds": 3, "test_fraction": 0.2},
            search_space={"lr": [3e-2, 1e-7], "patience": 50},
            sampler={"kind": "random"},
            pruner={"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        )
    )
    told: list[int] = []
    outcome = run_study(spec, wine, population=3, callbacks=[lambda s, t: told.append(t.number)])
    trials = outcome.study.trials
    assert len(trials) == 7 and sorted(told) == list(range(7))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.user_attrs["fold_scores"] for t in complete)
    for t in complete:
        assert sorted(t.intermediate_values) == list(range(t.user_attrs["epochs"][0]))
        assert t.value == pytest.approx(np.mean(t.user_attrs["fold_scores"]))
    # Hopeless trials after the first population are pruned early, like with one at a time.
    late = [t for t in trials[3:] if t.params["lr"] == 1e-7]
    assert late and all(t.state == optuna.trial.TrialState.PRUNED for t in late)
    assert outcome.test_score is not None


def test_a_refilled_slot_trains_its_trial_exactly_as_alone(wine) -> None:
    """A trial put in a slot that an earlier trial left, at a later epoch of the stack, and
    next to a trial mid-way through, gets the same init, batch orders and dropout masks."""

    spec = StudySpec(
        dataset="builtin:wine", model={"hidden": [16]}, training={"max_epochs": 7}, cv={"folds": 3}
    )
    splits = CVProtocol.of(spec, wine).splits
    long, short, late = (
        config(spec, dropout=0.2, patience=50),
        config(spec, dropout=0.5, lr=0.05),
        config(spec, dropout=0.3, weight_decay=0.05, patience=50),
    )
    population = Population(wine, splits, long, slots=2, metric="accuracy", device=DEVICE)
    population.assign(0, long, 1)
    population.assign(1, short, 2)
    results: dict[int, object] = {}  # by the trial's seed
    seeds = {0: 1, 1: 2}
    refilled_at = None
    while population.occupied():
        population.train_epoch()
        for report in population.end_epoch():
            if refilled_at is None and report.slot == 1 and report.epoch == 1:
                # The short trial is pruned after two epochs; its slot takes the late one.
                population.stop(1)
                population.release(1)
                population.assign(1, late, 3)
                seeds[1], refilled_at = 3, report.epoch
            elif report.finished:
                results[seeds[report.slot]] = population.result(report.slot)
                population.release(report.slot)
    assert refilled_at == 1
    # Against the trial trained from the start in a stack of the same size (its sums run in
    # the same order: bit for bit), and alone (another float order: within float32 drift).
    for seed, cfg in ((1, long), (3, late)):
        neighbour = config(spec, dropout=0.1, weight_decay=0.01)
        pair = train_population(
            wine, [cfg, neighbour], splits, seeds=[seed, 9], metric="accuracy", device=DEVICE
        )[0]
        assert_identical(results[seed], pair)
        alone = train_population(
            wine, [cfg], splits, seeds=[seed], metric="accuracy", device=DEVICE
        )[0]
        assert_close(results[seed], alone)


# digits: every augmentation runs in the steps (images take them all).
@pytest.mark.parametrize(
    ("dataset", "augment"),
    [
        ("builtin:wine", {}),
        (
            "builtin:digits",
            {"noise": 0.1, "mixup": 0.2, "shift": 1, "flip": 0.5, "rotate": 10, "scale": 0.1},
        ),
    ],
)
def test_an_epoch_waits_for_the_host_once(dataset: str, augment: dict) -> None:
    """No host synchronisation inside an epoch's steps, one at its end."""

    # Ops that make the host wait for the device (a scalar read, a data-dependent shape) or
    # copy host data to it; .tolist() does not dispatch, so it is counted by a wrapper.
    syncing = {"_local_scalar_dense", "nonzero", "lift_fresh", "masked_select", "item"}

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] in syncing:
                self.seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    def counting(real):
        def tolist(tensor):
            counter.seen.append("tolist")
            return real(tensor)

        return tolist

    data = load_builtin(dataset)
    spec = StudySpec(
        dataset=dataset,
        model={"hidden": [16]},
        training={"max_epochs": 4, "grad_clip": 1.0},
        cv={"folds": 3},
    )
    splits = CVProtocol.of(spec, data).splits
    population = Population(data, splits, config(spec), slots=4, metric="accuracy")
    augmented = {f"augment.{name}": value for name, value in augment.items()}
    for slot in range(3):  # one slot left empty
        population.assign(slot, config(spec, dropout=0.1 * slot, l1=1e-4, **augmented), slot)
    real = torch.Tensor.tolist
    for _ in range(2):
        counter = Counter()
        torch.Tensor.tolist = counting(real)
        try:
            with counter:
                population.train_epoch()
            in_epoch = list(counter.seen)
            counter.seen.clear()
            with counter:
                population.end_epoch()
        finally:
            torch.Tensor.tolist = real
        assert len(population.steps.steps) > 1
        assert in_epoch == [], in_epoch
        assert counter.seen == ["tolist"]


def test_bf16_populations_share_one_autocast_context(wine) -> None:
    """A compiled step guards on the autocast object it runs under: one per population
    would recompile the step for every new stack."""
    spec = StudySpec(dataset="builtin:wine", model={"hidden": [8]}, cv={"folds": 2})
    splits = CVProtocol.of(spec, wine).splits

    def population() -> Population:
        return Population(wine, splits, config(spec), slots=1, metric="accuracy", precision="bf16")

    first, second = population(), population()
    assert first.autocast is second.autocast
    assert isinstance(first.autocast, torch.autocast)
    assert first.autocast.fast_dtype == torch.bfloat16


def test_evaluation_in_bounded_passes_gives_the_same_scores(wine, monkeypatch) -> None:
    """The stack evaluates its validation and scored rows in one forward pass, cut into
    passes of at most EVAL_ROWS model-rows (its peak memory): each set scores as it does on
    its own, and passes of 7 rows exactly as one pass of all of them."""
    from trainer.engines import population as module
    from trainer.engines import scoring

    spec = StudySpec(dataset="builtin:wine", model={"hidden": [8]}, cv={"folds": 2})
    splits = CVProtocol.of(spec, wine).splits
    pop = Population(wine, splits, config(spec), slots=2, metric="accuracy")
    pop.assign(0, config(spec), 1)
    pop.assign(1, config(spec, bn_momentum=0.7), 2)
    pop.train_epoch()
    pop.end_epoch()
    rows = pop.rows
    whole = pop.evaluate()
    with torch.no_grad():
        for index, lengths, kept in (
            (rows.val_index, rows.val_len, 0),
            (rows.score_index, rows.score_len, 1),
        ):
            valid = torch.arange(index.shape[1])[None, :] < lengths[:, None]
            outputs = pop.forward(rows.features(index), valid)
            targets = rows.targets(index)
            loss = scoring.data_loss(pop.task, outputs, targets, valid)
            alone = (
                loss
                if kept == 0
                else scoring.objective("accuracy", loss, outputs, targets, valid=valid)
            )
            torch.testing.assert_close(whole[kept], alone, rtol=1e-6, atol=1e-7)
    monkeypatch.setattr(module, "EVAL_ROWS", 7 * pop.M)
    assert rows.score_index.shape[1] > 7  # so that there are several passes
    for one, passes in zip(whole, pop.evaluate(), strict=True):
        torch.testing.assert_close(passes, one, rtol=1e-6, atol=1e-7)


def fault_study(n_trials: int, **extra: object) -> StudySpec:
    return StudySpec.model_validate(
        {
            "dataset": "builtin:wine",
            "n_trials": n_trials,
            "model": {"hidden": [8]},
            "training": {"max_epochs": 2},
            "cv": {"folds": 2},
            "pruner": {"kind": "none"},
            **extra,
        }
    )


def test_out_of_memory_halves_the_population_and_loses_no_trial(wine, monkeypatch) -> None:

    sizes: list[int] = []
    too_big: list[weakref.ref[Population]] = []
    released: list[bool] = []

    def release_memory(device: torch.device, error: BaseException) -> None:
        # On a GPU empty_cache returns only what nothing holds: the stack that ran out must be
        # gone by then (the error's traceback held it alive).
        devices.release_memory(device, error)
        released.append(all(ref() is None for ref in too_big))

    monkeypatch.setattr(population_search, "release_memory", release_memory)

    class SmallDevice(Population):  # what fits: two trials at a time
        def train_epoch(self) -> None:
            sizes.append(self.P)
            if self.P > 2:
                too_big.append(weakref.ref(self))
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            super().train_epoch()

    outcome = run_study(
        fault_study(8), wine, population=4, refit_best=False, build_stack=SmallDevice
    )
    states = [t.state for t in outcome.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 8
    # The stack of 4 fails once; its trials start again in stacks of 2, and so do all after.
    assert sizes[0] == 4 and set(sizes[1:]) == {2}
    assert len(too_big) == 1 and released == [True]


def test_a_trial_that_does_not_fit_alone_fails_with_the_reason(wine) -> None:

    class NoMemory(Population):
        def train_epoch(self) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    outcome = run_study(fault_study(3), wine, population=2, refit_best=False, build_stack=NoMemory)
    assert [t.state for t in outcome.study.trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all("OutOfMemoryError" in t.user_attrs["fail_reason"] for t in outcome.study.trials)
    assert outcome.best is None


def test_a_training_error_fails_its_trials_and_the_search_goes_on(wine) -> None:

    assigned: list[int] = []

    class Flaky(Population):  # the second trial's training raises once
        def assign(self, slot: int, config: TrialConfig, seed: int) -> None:
            assigned.append(seed)
            super().assign(slot, config, seed)

        def train_epoch(self) -> None:
            if len(assigned) == 2 and not getattr(self, "raised", False):
                self.raised = True
                raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
            super().train_epoch()

    outcome = run_study(fault_study(4), wine, population=1, refit_best=False, build_stack=Flaky)
    trials = outcome.study.trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 3
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[1].user_attrs["fail_reason"] == (
        "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"
    )


def test_a_round_of_trials_that_cannot_start_does_not_end_the_search(wine) -> None:
    """Both trials of the first round fail before they start (their stack cannot be built):
    the search asks for more until the budget is spent, it does not stop with budget left."""

    built: list[int] = []

    class FirstTwoFail(Population):
        def assign(self, slot: int, config: TrialConfig, seed: int) -> None:
            built.append(seed)
            if len(built) <= 2:
                raise RuntimeError("no room on the device yet")
            super().assign(slot, config, seed)

    outcome = run_study(
        fault_study(4), wine, population=2, refit_best=False, build_stack=FirstTwoFail
    )
    states = [t.state for t in outcome.study.trials]
    assert states[:2] == [optuna.trial.TrialState.FAIL] * 2
    assert states[2:] == [optuna.trial.TrialState.COMPLETE] * 2


def test_the_per_trial_engine_fails_a_raising_trial_with_its_reason(wine, monkeypatch) -> None:

    real = objective.cross_validate
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("Expected more than 1 value per channel when training")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "cross_validate", flaky)
    # Wilcoxon pruning keeps the study on the per-trial engine.
    outcome = run_study(fault_study(2, pruner={"kind": "wilcoxon"}), wine, refit_best=False)
    first, second = outcome.study.trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert first.user_attrs["fail_reason"].startswith("ValueError: Expected more than 1 value")
    assert second.state == optuna.trial.TrialState.COMPLETE


def test_runs_are_the_longest_slices_of_stepping_models_with_equal_values() -> None:
    """A run breaks at a model that does not step and where η, λ, λ₁ or t changes."""
    from trainer.engines.stacked_optim import Run, runs_of

    values = np.array(
        [[1e-3, 0.1, 1e-5, 3]] * 4 + [[1e-3, 0.2, 1e-5, 3]] * 2 + [[1e-3, 0.2, 1e-5, 4]]
    )
    assert runs_of(np.arange(7), values) == [
        Run(0, 4, 1e-3, 0.1, 1e-5, 3),
        Run(4, 6, 1e-3, 0.2, 1e-5, 3),
        Run(6, 7, 1e-3, 0.2, 1e-5, 4),
    ]
    assert runs_of(np.array([0, 1, 3]), values) == [
        Run(0, 2, 1e-3, 0.1, 1e-5, 3),
        Run(3, 4, 1e-3, 0.1, 1e-5, 3),
    ]
    assert runs_of(np.array([], dtype=np.int64), values) == []


@pytest.mark.parametrize(
    ("l2_mode", "grad_clip"), [("coupled", 2.0), ("decoupled", 2.0), ("coupled", None)]
)
def test_the_fused_cpu_adam_takes_the_stacked_update_step(
    wine, l2_mode: str, grad_clip: float | None
) -> None:
    """torch's fused kernel over runs of rows (eager CPU; without clipping, λ₁ added per run
    and λ inside the kernel) and the one-call stacked update (what is compiled, and what a GPU
    runs) are the same optimizer, refilled rows (their own step counts) included."""

    spec = StudySpec(
        dataset="builtin:wine",
        model={"hidden": [16]},
        training={"max_epochs": 5, "l2_mode": l2_mode, "grad_clip": grad_clip},
        cv={"folds": 3},
    )
    splits = CVProtocol.of(spec, wine).splits
    configs = [
        config(spec, dropout=0.2, lr=3e-3, l1=1e-3),
        config(spec, weight_decay=0.05, lr=1e-3, l1=0.0),
    ]
    results = []
    for fused in (True, False):
        population = Population(wine, splits, configs[0], slots=2, metric="accuracy")
        population.optimizer.fused = fused
        population.assign(0, configs[0], 1)
        population.assign(1, configs[1], 2)
        done = {}
        while population.occupied():
            population.train_epoch()
            for report in population.end_epoch():
                if report.epoch == 1 and report.slot == 1 and len(done) == 0:
                    population.stop(1)  # a refill mid-way: fresh moments and step count
                    population.release(1)
                    population.assign(1, configs[1], 3)
                    done[-1] = None
                elif report.finished:
                    done[report.slot] = population.result(report.slot)
                    population.release(report.slot)
        results.append(done)
    for slot in (0, 1):
        assert_close(results[0][slot], results[1][slot])
