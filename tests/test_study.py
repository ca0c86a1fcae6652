"""The objective and the study runner: reporting, pruning, divergence, samplers, determinism."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch

from trainer.data.builtin_sets import load_builtin
from trainer.engines.per_trial import FoldRun, cross_validate
from trainer.engines.results import DivergedError
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import SpecError, StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.optuna_study import make_pruner
from trainer.tuning.study import run_study

TINY = {"hidden": [16]}


def wine_spec(**overrides: object) -> StudySpec:
    base: dict[str, object] = {
        "dataset": "builtin:wine",
        "n_trials": 3,
        "model": TINY,
        "training": {"max_epochs": 4},
        "cv": {"folds": 3},
    }
    return StudySpec.model_validate(base | overrides)


def test_lockstep_reports_the_fold_mean_each_epoch_and_ends_on_the_trial_value(wine) -> None:
    spec = wine_spec(search_space={"patience": 50}, pruner={"kind": "none"}, n_trials=1)
    outcome = run_study(spec, wine, refit_best=False)
    trial = outcome.study.trials[0]
    assert sorted(trial.intermediate_values) == [0, 1, 2, 3]  # an epoch axis
    assert trial.intermediate_values[3] == pytest.approx(trial.value)
    attrs = trial.user_attrs
    assert trial.value == pytest.approx(np.mean(attrs["fold_scores"]))
    assert attrs["cv_std"] == pytest.approx(np.std(attrs["fold_scores"]))
    assert len(attrs["train_loss"]) == 3 and all(len(c) == 4 for c in attrs["val_loss"])
    assert attrs["diagnosis"] in {"over-fitting", "still improving", "under-fitting", "converged"}
    assert attrs["n_params"] == (13 * 16 + 16) + 2 * 16 + (16 * 3 + 3)
    assert 0.0 <= attrs["l1_sparsity"] <= 1.0


def test_median_pruner_stops_hopeless_trials(wine) -> None:
    spec = wine_spec(
        n_trials=8,
        training={"max_epochs": 6},
        search_space={"lr": [3e-2, 1e-7], "patience": 50},
        sampler={"kind": "random"},
        pruner={"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    )
    outcome = run_study(spec, wine, refit_best=False)
    hopeless = [t for t in outcome.study.trials[2:] if t.params["lr"] == 1e-7]
    assert hopeless
    for trial in hopeless:  # far below the median at the first epoch after warm-up
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert max(trial.intermediate_values) == 1


def test_wilcoxon_pruner_sees_one_step_per_fold(wine) -> None:
    spec = wine_spec(n_trials=2, pruner={"kind": "wilcoxon"}, cv={"folds": 4})
    outcome = run_study(spec, wine, refit_best=False)
    done = [t for t in outcome.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done
    for trial in done:
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]
        folds = [trial.intermediate_values[k] for k in range(4)]
        assert folds == pytest.approx(trial.user_attrs["fold_scores"])


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(diabetes) -> None:
    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:diabetes",
            "n_trials": 4,
            "model": {"hidden": [16], "batch_norm": False},
            "training": {"optimizer": "sgd", "max_epochs": 3},
            "cv": {"folds": 2},
            "search_space": {"lr": [5.0, 1e-3]},
            "sampler": {"kind": "grid"},
            "pruner": {"kind": "none"},
        }
    )
    outcome = run_study(spec, diabetes, refit_best=False)
    by_lr = {t.params["lr"]: t for t in outcome.study.trials}
    failed = by_lr[5.0]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "diverged" in failed.user_attrs["fail_reason"]
    assert by_lr[1e-3].state == optuna.trial.TrialState.COMPLETE
    assert outcome.best is not None and outcome.best.params["lr"] == 1e-3


@pytest.fixture(scope="module")
def diabetes():

    return load_builtin("builtin:diabetes")


def test_divergence_is_detected_at_the_epoch_it_happens(diabetes) -> None:
    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:diabetes",
            "model": {"hidden": [16], "batch_norm": False},
            "training": {"optimizer": "sgd", "lr": 5.0, "max_epochs": 50},
            "cv": {"folds": 2},
        }
    )
    config = TrialConfig.from_values(
        spec, {"weight_decay": 0, "l1": 0, "dropout": 0, "bn_momentum": 0.1, "patience": 50}
    )
    with pytest.raises(DivergedError, match=r"fold 0 diverged at epoch \d"):
        cross_validate(diabetes, config, CVProtocol.of(spec, diabetes).splits, metric="mse")


@pytest.mark.parametrize("kind", ["tpe", "random", "gp", "cmaes", "grid"])
def test_every_sampler_runs_a_study(wine, kind: str) -> None:
    spec = wine_spec(
        n_trials=2,
        sampler={"kind": kind, "n_startup_trials": 1, "grid_points": 2},
        training={"max_epochs": 2},
    )
    outcome = run_study(spec, wine, refit_best=False)
    assert len(outcome.study.trials) == 2
    assert outcome.best is not None and 0.0 < outcome.best.value <= 1.0


def grid_of_two(n_trials: int) -> StudySpec:
    fixed = {"l1": 0, "dropout": 0.1, "bn_momentum": 0.1, "patience": 3}
    return wine_spec(
        n_trials=n_trials,
        sampler={"kind": "grid", "grid_points": 2},
        search_space={"weight_decay": {"low": 1e-4, "high": 1e-2, "log": True}} | fixed,
        training={"max_epochs": 2},
    )


def test_a_grid_study_walks_its_whole_grid_once(wine) -> None:
    """Optuna's grid sampler stops the study when the grid is walked, which raised outside
    study.optimize and failed the last trial; regtune ends the walk by its budget."""
    outcome = run_study(grid_of_two(2), wine, refit_best=False)
    trials = outcome.study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(t.params["weight_decay"] for t in trials) == pytest.approx([1e-4, 1e-2])


def test_a_grid_smaller_than_the_budget_is_refused(wine) -> None:
    with pytest.raises(SpecError, match="n_trials 3 is more than the grid's 2 points") as found:
        CVProtocol.of(grid_of_two(3), wine)
    assert found.value.field == "n_trials"


def test_hyperband_pruner_uses_the_epoch_budget(wine) -> None:
    spec = wine_spec(n_trials=3, pruner={"kind": "hyperband"}, training={"max_epochs": 3})
    outcome = run_study(spec, wine, refit_best=False)
    assert outcome.study.pruner._max_resource == 3
    assert len(outcome.study.trials) == 3


def test_same_seed_same_results_on_cpu(wine) -> None:
    runs = [run_study(wine_spec(n_trials=2), wine, refit_best=False) for _ in range(2)]
    a, b = (r.study.trials for r in runs)
    for ta, tb in zip(a, b, strict=True):
        assert ta.params == tb.params
        assert ta.value == tb.value
        assert ta.user_attrs["val_loss"] == tb.user_attrs["val_loss"]


def test_test_score_comes_from_the_refit_on_held_out_rows(wine) -> None:
    spec = wine_spec(n_trials=2, cv={"folds": 3, "test_fraction": 0.2})
    outcome = run_study(spec, wine)
    assert outcome.fitted is not None and outcome.test_score is not None
    assert 0.0 <= outcome.test_score <= 1.0
    assert outcome.study.user_attrs["test_score"] == outcome.test_score
    summary = outcome.summary()
    assert summary.test_score == outcome.test_score
    assert summary.best is not None
    assert summary.best.fold_scores == outcome.best.user_attrs["fold_scores"]


def test_resuming_a_stored_study_runs_only_the_missing_trials(wine, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    run_study(wine_spec(n_trials=2), wine, storage=storage, study_name="s", refit_best=False)
    outcome = run_study(
        wine_spec(n_trials=3), wine, storage=storage, study_name="s", refit_best=False
    )
    assert len(outcome.study.trials) == 3


def test_spec_must_fit_the_dataset(wine) -> None:
    with pytest.raises(SpecError, match="needs a regression dataset"):
        CVProtocol.of(StudySpec(dataset="builtin:wine", objective={"metric": "mse"}), wine)
    with pytest.raises(SpecError, match="regression"):
        CVProtocol.of(StudySpec(dataset="builtin:wine", task="regression"), wine)
    with pytest.raises(SpecError, match="cnn"):
        CVProtocol.of(StudySpec(dataset="builtin:wine", model={"kind": "cnn"}), wine)


def test_loss_metric_is_minimized(wine) -> None:
    outcome = run_study(wine_spec(n_trials=1, objective={"metric": "loss"}), wine, refit_best=False)
    assert outcome.study.direction == optuna.study.StudyDirection.MINIMIZE
    assert math.isfinite(outcome.best.value) and outcome.best.value > 0


def test_training_settings_and_widths_can_be_searched(wine) -> None:
    spec = wine_spec(
        n_trials=4,
        training={"max_epochs": 2},
        sampler={"kind": "random"},
        search_space={
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "batch_size": [16, 32],
            "optimizer": ["adam", "sgd"],
            "hidden": [[8], [12, 6]],
            "patience": 3,
        },
    )
    outcome = run_study(spec, wine, refit_best=False)
    for trial in outcome.study.trials:
        config = trial.user_attrs["config"]
        assert config["lr"] == trial.params["lr"] and 1e-4 <= config["lr"] <= 1e-2
        assert config["batch_size"] == trial.params["batch_size"]
        assert config["optimizer"] == trial.params["optimizer"]
        assert "-".join(map(str, config["hidden"])) == trial.params["hidden"]
        assert config["patience"] == 3 and "patience" not in trial.params
        widths = config["hidden"]
        expected = sum(a * b + b for a, b in zip([13, *widths], [*widths, 3], strict=True))
        assert trial.user_attrs["n_params"] == expected + 2 * sum(widths)  # + BN affine


def test_gradient_clipping_bounds_each_update(wine) -> None:

    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:wine",
            "model": {"hidden": [16], "batch_norm": False},
            "training": {
                "optimizer": "sgd",
                "momentum": 0.0,
                "lr": 0.5,
                "grad_clip": 0.01,
                "batch_size": 1000,
            },
        }
    )
    config = TrialConfig.from_values(
        spec, {"weight_decay": 0, "l1": 0, "dropout": 0, "bn_momentum": 0.1, "patience": 5}
    )
    split = CVProtocol.of(spec, wine).splits[0]
    fold = FoldRun(0, wine, config, split, metric="accuracy", device="cpu", seed=0)
    before = torch.cat([p.detach().flatten().clone() for p in fold.model.parameters()])
    fold.train_epoch()  # one step: the batch holds every fit row
    after = torch.cat([p.detach().flatten() for p in fold.model.parameters()])
    # SGD without momentum: Δθ = −η·g with ‖g‖ ≤ clip after clipping.
    assert torch.linalg.vector_norm(after - before) <= 0.5 * 0.01 * (1 + 1e-5)
    assert torch.linalg.vector_norm(after - before) > 0.5 * 0.01 * 0.99  # it did clip


def test_median_warmup_grows_with_the_epoch_budget() -> None:

    short = make_pruner(StudySpec(dataset="x", training={"max_epochs": 20}))
    long = make_pruner(StudySpec(dataset="x", training={"max_epochs": 2000}))
    fixed = make_pruner(StudySpec(dataset="x", pruner={"n_warmup_steps": 3}))
    assert (short._n_warmup_steps, long._n_warmup_steps, fixed._n_warmup_steps) == (5, 200, 3)


def test_a_cnn_study_trains_in_populations_and_refits(digits) -> None:
    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:digits",
            "n_trials": 3,
            "model": {"kind": "cnn", "channels": [4], "hidden": [8]},
            "training": {"max_epochs": 2},
            "cv": {"folds": 2, "test_fraction": 0.1},
            "pruner": {"kind": "none"},
        }
    )
    outcome = run_study(spec, digits, population=2)
    done = [t for t in outcome.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    assert all(len(t.user_attrs["fold_scores"]) == 2 for t in done)
    assert outcome.best is not None and 0.1 < outcome.best.value <= 1.0
    assert outcome.test_score is not None and 0.0 < outcome.test_score <= 1.0
