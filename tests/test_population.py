"""The population engine computes the same function as the per-trial engine."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch

from trainer.config import TrialConfig
from trainer.datasets import load_builtin
from trainer.engine import cross_validate
from trainer.population import train_population
from trainer.spec import StudySpec
from trainer.study import Protocol


def config(spec: StudySpec, **values: float) -> TrialConfig:
    base = {"weight_decay": 1e-3, "l1": 1e-5, "dropout": 0.0, "bn_momentum": 0.3, "patience": 4}
    return TrialConfig.from_values(spec, base | values)


def assert_same(a, b, rel: float = 1e-4) -> None:
    """Two CV results of the same model: same scores, epochs and curves within float noise."""
    for fa, fb in zip(a.folds, b.folds, strict=True):
        if rel <= 1e-3:  # a looser comparison may legitimately pick a neighbouring epoch
            assert fa.epochs == fb.epochs and fa.best_epoch == fb.best_epoch
        assert fa.score == pytest.approx(fb.score, rel=rel, abs=rel)
        n = min(len(fa.val_loss), len(fb.val_loss))
        np.testing.assert_allclose(fa.val_loss[:n], fb.val_loss[:n], rtol=rel * 10, atol=1e-6)
        np.testing.assert_allclose(fa.train_loss[:n], fb.train_loss[:n], rtol=rel * 10, atol=1e-6)
        assert fa.sparsity == pytest.approx(fb.sparsity, abs=0.01)


# Adam turns float noise in a gradient that is zero in exact arithmetic (the bias of a Linear
# layer before BatchNorm) into full-size steps, so two float orders of the same sums drift
# apart by ~1e-3 there; the exact comparisons use SGD with BatchNorm or Adam without it.
@pytest.mark.parametrize(
    ("training", "batch_norm", "task", "rel"),
    [
        ({"optimizer": "adam", "max_epochs": 8}, False, "classification", 1e-4),
        (
            {"optimizer": "adam", "l2_mode": "decoupled", "max_epochs": 8, "grad_clip": 0.5},
            False,
            "classification",
            1e-4,
        ),
        ({"optimizer": "sgd", "lr": 0.05, "max_epochs": 8}, True, "classification", 1e-4),
        (
            {"optimizer": "sgd", "lr": 0.05, "l2_mode": "decoupled", "max_epochs": 8},
            True,
            "classification",
            1e-4,
        ),
        ({"optimizer": "adam", "max_epochs": 8, "batch_size": 50}, False, "regression", 1e-4),
        ({"optimizer": "adam", "max_epochs": 8}, True, "classification", 2e-2),
    ],
)
def test_population_matches_the_per_trial_engine_without_dropout(
    wine, training: dict, batch_norm: bool, task: str, rel: float
) -> None:
    from trainer.datasets import load_builtin

    data = wine if task == "classification" else load_builtin("builtin:diabetes")
    metric = "accuracy" if task == "classification" else "mse"
    spec = StudySpec(
        dataset=data.name,
        model={"hidden": [16, 8], "batch_norm": batch_norm},
        training=training,
        cv={"folds": 3},
    )
    protocol = Protocol.of(spec, data)
    configs = [
        config(spec, weight_decay=1e-3, bn_momentum=0.3),
        config(spec, weight_decay=5e-2, l1=1e-4, bn_momentum=0.9, patience=2),
        config(spec, weight_decay=0.0, l1=0.0, bn_momentum=0.05, lr=3e-3),
    ]
    seeds = [11, 22, 33]
    together = train_population(data, configs, protocol.splits, seeds=seeds, metric=metric)
    for cfg, seed, result in zip(configs, seeds, together, strict=True):
        alone = cross_validate(data, cfg, protocol.splits, metric=metric, seed=seed)
        assert_same(result, alone, rel=rel)


@pytest.mark.parametrize(
    ("dataset", "training", "batch_norm", "rel"),
    [
        ("digits", {"optimizer": "sgd", "lr": 0.05}, True, 1e-4),  # Conv2d, grouped
        ("digits", {"optimizer": "adam", "l2_mode": "decoupled"}, False, 1e-4),
        ("mnist1d", {"optimizer": "sgd", "lr": 0.05, "grad_clip": 0.5}, True, 1e-4),  # Conv1d
        ("mnist1d", {"optimizer": "adam"}, True, 2e-2),  # see the note on Adam with BatchNorm
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
    splits = Protocol.of(spec, data).splits
    configs = [
        config(spec, weight_decay=1e-3, bn_momentum=0.3),
        config(spec, weight_decay=5e-2, l1=1e-4, bn_momentum=0.9),
    ]
    seeds = [11, 22]
    together = train_population(data, configs, splits, seeds=seeds, metric="accuracy")
    for cfg, seed, result in zip(configs, seeds, together, strict=True):
        alone = cross_validate(data, cfg, splits, metric="accuracy", seed=seed)
        assert_same(result, alone, rel=rel)


def test_a_stacked_cnn_does_not_depend_on_its_neighbours_with_dropout(digits) -> None:
    spec = StudySpec(
        dataset=digits.name,
        model={"kind": "cnn", "channels": [4], "hidden": [8]},
        training={"max_epochs": 3},
        cv={"folds": 2},
    )
    splits = Protocol.of(spec, digits).splits
    target = config(spec, dropout=0.3)
    neighbour = config(spec, dropout=0.6, weight_decay=0.1, bn_momentum=0.9)
    alone = train_population(digits, [target], splits, seeds=[5], metric="accuracy")[0]
    pair = train_population(digits, [neighbour, target], splits, seeds=[6, 5], metric="accuracy")
    crowd = pair[1]
    assert_same(alone, crowd, rel=1e-5)


def test_a_model_does_not_depend_on_its_neighbours_even_with_dropout(wine) -> None:
    spec = StudySpec(
        dataset="builtin:wine", model={"hidden": [16]}, training={"max_epochs": 6}, cv={"folds": 3}
    )
    splits = Protocol.of(spec, wine).splits
    target = config(spec, dropout=0.3)
    neighbours = [
        config(spec, dropout=0.6, weight_decay=0.1),
        config(spec, dropout=0.0, bn_momentum=0.99, patience=1),
    ]
    alone = train_population(wine, [target], splits, seeds=[5], metric="accuracy")[0]
    crowd = train_population(
        wine, [neighbours[0], target, neighbours[1]], splits, seeds=[6, 5, 7], metric="accuracy"
    )[1]
    assert_same(alone, crowd, rel=1e-5)


def test_pruning_and_divergence_are_per_trial(diabetes_data) -> None:
    spec = StudySpec(
        dataset="builtin:diabetes",
        model={"hidden": [16], "batch_norm": False},
        training={"optimizer": "sgd", "max_epochs": 5},
        cv={"folds": 2},
    )
    splits = Protocol.of(spec, diabetes_data).splits
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
    from trainer.datasets import load_builtin

    return load_builtin("builtin:diabetes")


def test_stacked_batchnorm_running_statistics(wine) -> None:
    spec = StudySpec(
        dataset="builtin:wine",
        model={"hidden": [8]},
        training={"max_epochs": 1, "optimizer": "sgd"},
        cv={"folds": 2},
    )
    splits = Protocol.of(spec, wine).splits
    from trainer.engine import FoldRun
    from trainer.population import Member, Population

    cfgs = [config(spec, bn_momentum=0.1), config(spec, bn_momentum=0.7)]
    members = [
        Member(c, splits[0], seed, i, 0)
        for i, (c, seed) in enumerate(zip(cfgs, [3, 4], strict=True))
    ]
    population = Population(wine, members, metric="accuracy")
    population.train_epoch()
    for m, member in enumerate(members):
        fold = FoldRun(
            0, wine, member.config, member.split, metric="accuracy", device="cpu", seed=member.seed
        )
        fold.train_epoch()
        bn = fold.model[1]
        mean, var = population.running[0]
        torch.testing.assert_close(mean[m], bn.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(var[m], bn.running_var, rtol=1e-4, atol=1e-5)


def test_batched_asks_run_a_study_with_pruning_and_records(wine) -> None:
    import optuna

    from trainer.study import run_study

    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:wine",
            "n_trials": 7,
            "model": {"hidden": [16]},
            "training": {"max_epochs": 6},
            "cv": {"folds": 3, "test_fraction": 0.2},
            "search_space": {"lr": [3e-2, 1e-7], "patience": 50},
            "sampler": {"kind": "random"},
            "pruner": {"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        }
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


def test_compaction_drops_finished_models_without_changing_any_result(wine) -> None:
    spec = StudySpec(
        dataset="builtin:wine",
        model={"hidden": [16]},
        training={"max_epochs": 25, "lr": 0.02},
        cv={"folds": 3},
    )
    splits = Protocol.of(spec, wine).splits
    configs = [config(spec, patience=p, dropout=0.2) for p in (1, 2, 3, 30)]
    seeds = [1, 2, 3, 4]
    never = train_population(
        wine, configs, splits, seeds=seeds, metric="accuracy", compact_below=0.0
    )
    eager = train_population(
        wine, configs, splits, seeds=seeds, metric="accuracy", compact_below=1.0
    )
    assert max(f.epochs for f in never[3].folds) > min(f.epochs for f in never[0].folds)
    for a, b in zip(never, eager, strict=True):
        assert_same(a, b, rel=1e-5)


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
    from trainer import batched
    from trainer.study import run_study

    sizes: list[int] = []
    real = batched.train_population

    def small_device(dataset, configs, *args, **kwargs):
        sizes.append(len(configs))
        if len(configs) > 2:  # what fits: two trials at a time
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(dataset, configs, *args, **kwargs)

    monkeypatch.setattr(batched, "train_population", small_device)
    outcome = run_study(fault_study(8), wine, population=4, refit_best=False)
    states = [t.state for t in outcome.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 8
    # 4 fails → 2 + 2; after that the engine asks for 2 at a time.
    assert sizes == [4, 2, 2, 2, 2]


def test_a_trial_that_does_not_fit_alone_fails_with_the_reason(wine, monkeypatch) -> None:
    from trainer import batched
    from trainer.study import run_study

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(batched, "train_population", no_memory)
    outcome = run_study(fault_study(3), wine, population=2, refit_best=False)
    assert [t.state for t in outcome.study.trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all("OutOfMemoryError" in t.user_attrs["fail_reason"] for t in outcome.study.trials)
    assert outcome.best is None


def test_a_training_error_fails_its_trials_and_the_search_goes_on(wine, monkeypatch) -> None:
    from trainer import batched
    from trainer.study import run_study

    real = batched.train_population
    calls = []

    def flaky(dataset, configs, *args, **kwargs):
        calls.append(len(configs))
        if len(calls) == 2:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
        return real(dataset, configs, *args, **kwargs)

    monkeypatch.setattr(batched, "train_population", flaky)
    outcome = run_study(fault_study(4), wine, population=1, refit_best=False)
    trials = outcome.study.trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 3
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[1].user_attrs["fail_reason"] == (
        "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"
    )


def test_the_per_trial_engine_fails_a_raising_trial_with_its_reason(wine, monkeypatch) -> None:
    from trainer import objective
    from trainer.study import run_study

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
