"""Max-norm (``search_space.max_norm``): the projection against its formula, a bound that both
engines and the refit keep while training, the population against the per-trial engine, and
a study that searches it, off (not searched, nothing projected) unless given."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from device_tests import DEVICE
from equivalence import REASSOCIATED, assert_close
from torch import nn

from trainer.data.builtin_sets import load_builtin
from trainer.data.splits import Split
from trainer.engines import compiled, stacking
from trainer.engines.per_trial import cross_validate, fold_runs, train_folds
from trainer.engines.population import Population, train_population
from trainer.engines.regularizers import make_optimizer, max_norm_
from trainer.engines.stacked_layers import StackedLayers
from trainer.engines.stacked_optim import project_max_norm
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import Range, StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.records import TrialRecord
from trainer.tuning.refit import refit
from trainer.tuning.space import searched
from trainer.tuning.study import run_study

BASE = {"weight_decay": 1e-3, "l1": 1e-5, "dropout": 0.0, "bn_momentum": 0.3, "patience": 4}
C = 0.5  # below the norm of a freshly initialised unit of these small networks (≈ 0.58)


def config(spec: StudySpec, **values: float | None) -> TrialConfig:
    return TrialConfig.from_values(spec, BASE | {k: v for k, v in values.items() if v is not None})


def unit_norms(weight: torch.Tensor) -> torch.Tensor:
    """The norm of each unit's incoming vector of one module's weight ``[out, …]``."""
    return weight.detach().flatten(1).norm(dim=1)


def largest_unit(model: nn.Module) -> float:
    """The largest norm of any unit of any Linear or Conv layer of ``model``."""
    return max(float(unit_norms(p).max()) for p in model.parameters() if p.dim() >= 2)


# --- the projection ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 5), (4, 3, 3, 3)])  # Linear, Conv1d, Conv2d
def test_the_projection_is_w_times_min_of_1_and_c_over_its_norm(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    weight = torch.randn(shape)
    weight[1] *= 0.01  # a unit inside the ball
    expected = torch.stack([w * min(1.0, 1.5 / float(w.norm())) for w in weight])
    projected = max_norm_(weight.clone(), 1.5, tuple(range(1, len(shape))))
    torch.testing.assert_close(projected, expected)
    assert torch.equal(projected[1], weight[1])  # inside: bit for bit
    assert float(unit_norms(projected).max()) <= 1.5 + 1e-5
    # c = ∞ (a stacked model without max-norm) changes nothing, bit for bit.
    assert torch.equal(max_norm_(weight.clone(), math.inf, tuple(range(1, len(shape)))), weight)


NETWORKS = {  # a template network and its input shape: Linear with BatchNorm, Conv1d, Conv2d
    "mlp": ({"hidden": [6], "batch_norm": True}, (5,)),
    "cnn1d": ({"kind": "cnn", "channels": [3], "hidden": [4], "batch_norm": True}, (1, 12)),
    "cnn2d": ({"kind": "cnn", "channels": [3], "hidden": [4], "batch_norm": True}, (1, 6, 6)),
}


def grown(trial: TrialConfig, input_shape: tuple[int, ...], seed: int) -> nn.Module:
    """A fresh network of ``trial`` whose every parameter and BatchNorm statistic is made
    large, so that every unit lies outside the ball and biases and BN would show a change."""
    torch.manual_seed(seed)
    net = trial.network(input_shape, 3)
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            if tensor.is_floating_point():
                tensor.mul_(4.0).add_(0.5)
    return net


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_the_per_trial_projection_bounds_the_weights_and_leaves_biases_and_batchnorm(
    network: str,
) -> None:
    model, input_shape = NETWORKS[network]
    spec = StudySpec(dataset="builtin:wine", model=model)
    net = grown(config(spec), input_shape, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _, regularizer = make_optimizer(
        net, optimizer="adam", lr=0.1, weight_decay=0.0, l1=0.0, decoupled=False, max_norm=C
    )
    regularizer.project()
    weights = {n for n, p in net.named_parameters() if p.dim() >= 2}
    assert weights  # Linear and Conv weights
    for name, value in net.state_dict().items():
        if name in weights:
            old = before[name]
            factor = (C / unit_norms(old)).clamp(max=1.0)
            expected = old * factor.view(-1, *[1] * (old.dim() - 1))
            torch.testing.assert_close(value, expected)
            assert float(unit_norms(value).max()) <= C + 1e-5
        else:  # biases, BatchNorm's γ, β and running statistics
            assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_the_stacked_projection_is_each_models_own(network: str) -> None:
    """In the stacked layout (a Linear's weight transposed ``[M, in, out]``, a Conv's
    ``[M, out, C, k…]``) each model is projected with its own c, as its network alone; a model
    with c = ∞ or that did not step keeps its weights bit for bit."""
    model, input_shape = NETWORKS[network]
    spec = StudySpec(dataset="builtin:wine", model=model)
    trial = config(spec)
    nets = [grown(trial, input_shape, seed) for seed in range(3)]
    layers = StackedLayers(stacking.program(nets[0]), nets[0], 3, torch.device("cpu"))
    layers.load(slice(0, 3), nets, trial)
    units = layers.units()
    assert set(units) == {n for n, p in nets[0].named_parameters() if p.dim() >= 2}
    with torch.no_grad():
        project_max_norm(
            [p.detach() for p in layers.params.values()],
            torch.tensor([True, True, False]),
            max_norm=torch.tensor([C, math.inf, C]),
            unit_dims=[units.get(name) for name in layers.params],
        )
    layers.keep_best(torch.ones(3, dtype=torch.bool))
    _, alone = make_optimizer(
        nets[0], optimizer="sgd", lr=0.1, weight_decay=0.0, l1=0.0, decoupled=False, max_norm=C
    )
    alone.project()  # model 0 as the per-trial engine projects it
    for row, net in enumerate(nets):
        exported = layers.export(row, trial.network(input_shape, 3))
        for (name, got), want in zip(
            exported.state_dict().items(), net.state_dict().values(), strict=True
        ):
            if row == 0:
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(got, want), (row, name)


# --- a bound that training keeps ----------------------------------------------------------------

SPEC = StudySpec(
    dataset="builtin:wine", model={"hidden": [16]}, training={"max_epochs": 3}, cv={"folds": 2}
)


def per_trial_models(wine, max_norm: float | None) -> list[nn.Module]:
    splits = CVProtocol.of(SPEC, wine).splits
    runs = fold_runs(
        wine, config(SPEC, max_norm=max_norm), splits, metric="accuracy", device=DEVICE, seed=1
    )
    train_folds(runs)
    return [run.model for run in runs]


def test_the_per_trial_engine_keeps_every_unit_within_c(wine) -> None:
    bounded, free = per_trial_models(wine, C), per_trial_models(wine, None)
    assert all(largest_unit(m) <= C + 1e-5 for m in bounded)
    assert all(largest_unit(m) > C + 0.01 for m in free)  # the test can fail


def test_the_population_keeps_every_unit_of_its_own_models_within_c(wine) -> None:
    """Beside a trial without max-norm, which the projection leaves alone."""
    splits = CVProtocol.of(SPEC, wine).splits
    population = Population(wine, splits, config(SPEC), slots=2, metric="accuracy", device=DEVICE)
    population.assign(0, config(SPEC, max_norm=C), 1)
    population.assign(1, config(SPEC), 2)
    finished: set[int] = set()
    while len(finished) < 2:
        population.train_epoch()
        finished |= {report.slot for report in population.end_epoch() if report.finished}
    for fold in range(len(splits)):
        assert largest_unit(population.module(0, fold)) <= C + 1e-5
        assert largest_unit(population.module(1, fold)) > C + 0.01


def test_the_refit_keeps_every_unit_within_c(wine) -> None:
    protocol = CVProtocol.of(SPEC, wine)

    def fitted(max_norm: float | None) -> nn.Module:
        trial = config(SPEC, max_norm=max_norm)
        pool, test = protocol.pool, protocol.test
        return refit(wine, trial, pool, test, metric="accuracy", epochs=3, device=DEVICE).model

    assert largest_unit(fitted(C)) <= C + 1e-5
    assert largest_unit(fitted(None)) > C + 0.01


# --- the population against the per-trial engine ------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "model", "training"),
    [
        # Adam without BatchNorm: the fused CPU Adam, then the projection
        ("wine", {"hidden": [16, 8], "batch_norm": False}, {"optimizer": "adam"}),
        # SGD with BatchNorm: the one-call stacked update, projection included
        ("wine", {"hidden": [16, 8], "batch_norm": True}, {"optimizer": "sgd", "lr": 0.05}),
        # Conv2d as a grouped convolution, its filters projected in the stacked layout
        (
            "digits",
            {"kind": "cnn", "channels": [4], "hidden": [8], "batch_norm": True},
            {"optimizer": "sgd", "lr": 0.05},
        ),
    ],
)
def test_a_trial_with_max_norm_trains_in_the_population_as_alone(
    wine, digits, dataset: str, model: dict, training: dict
) -> None:
    data = wine if dataset == "wine" else digits
    spec = StudySpec(
        dataset=data.name, model=model, training=training | {"max_epochs": 4}, cv={"folds": 2}
    )
    splits = CVProtocol.of(spec, data).splits
    configs = [
        config(spec, max_norm=C),
        config(spec, max_norm=2.0, weight_decay=5e-2, l1=1e-4),
        config(spec, weight_decay=0.0, bn_momentum=0.9),  # no max-norm beside them
    ]
    seeds = [11, 22, 33]
    together = train_population(
        data, configs, splits, seeds=seeds, metric="accuracy", device=DEVICE
    )
    for trial, seed, result in zip(configs, seeds, together, strict=True):
        alone = cross_validate(data, trial, splits, metric="accuracy", seed=seed, device=DEVICE)
        assert_close(result, alone, rel=REASSOCIATED)


# --- the spec, the study, the model file --------------------------------------------------------


def test_max_norm_is_off_unless_the_search_space_gives_it() -> None:
    spec = StudySpec(dataset="builtin:wine")
    assert spec.search_space.max_norm is None and "max_norm" not in searched(spec)
    off = config(spec)
    assert off.max_norm is None and "max_norm" not in off.hyperparameters()
    population = Population(
        load_builtin("builtin:wine"),
        [Split(np.arange(8), np.arange(0), np.arange(8, 10))],
        off,
        slots=1,
        metric="accuracy",
    )
    population.assign(0, off, 1)
    assert not population.uses_max_norm  # nothing projected at all
    given = StudySpec(
        dataset="builtin:wine", search_space={"max_norm": {"low": 0.5, "high": 10, "log": True}}
    )
    assert searched(given)["max_norm"] == Range(low=0.5, high=10, log=True)
    on = config(given, max_norm=3.0)
    assert on.max_norm == 3.0 and on.hyperparameters()["max_norm"] == 3.0


def test_a_study_searches_max_norm_and_its_final_models_keep_it(wine) -> None:
    """Searched by Optuna and recorded with each trial; the refit and the fold ensemble train
    with the best trial's c, and the model file records it."""
    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:wine",
            "n_trials": 2,
            "model": {"hidden": [16]},
            "training": {"max_epochs": 3},
            "cv": {"folds": 2, "test_fraction": 0.2},
            "search_space": {"max_norm": {"low": 0.3, "high": 0.5, "log": True}},
            "pruner": {"kind": "none"},
            "final_model": {"ensemble": True},
        }
    )
    outcome = run_study(spec, wine)
    for trial in outcome.study.trials:
        c = trial.params["max_norm"]
        assert 0.3 <= c <= 0.5
        assert TrialRecord.of(trial).config["max_norm"] == c
    best = outcome.best
    assert best is not None and outcome.fitted is not None and outcome.model is not None
    c = best.params["max_norm"]
    assert outcome.fitted.config.max_norm == c
    assert largest_unit(outcome.fitted.model) <= c + 1e-5
    assert outcome.model["hyperparameters"]["max_norm"] == c
    assert outcome.model["trial"]["params"]["max_norm"] == c
    ensemble = outcome.model["ensemble"]
    assert ensemble is not None and len(ensemble["members"]) == 2
    for member in ensemble["members"]:
        weights = [w for w in member["state_dict"].values() if w.dim() >= 2]
        assert max(float(unit_norms(w).max()) for w in weights) <= c + 1e-5


@pytest.mark.skipif(
    not compiled.available(torch.device("cpu")), reason="torch.compile has no C++ compiler here"
)
def test_the_compiled_update_projects_as_the_eager_one(wine) -> None:
    """Beside a trial without max-norm, which the projection leaves alone (its c = ∞). The
    network and training of tests/test_compiled.py, so that only the update compiles anew."""
    spec = StudySpec(
        dataset="builtin:wine",
        model={"hidden": [16]},
        training={"max_epochs": 4, "grad_clip": 1.0},
        cv={"folds": 2},
    )
    splits = CVProtocol.of(spec, wine).splits
    configs = [config(spec, max_norm=C, dropout=0.2), config(spec, dropout=0.2, lr=3e-3)]
    eager, together = (
        train_population(wine, configs, splits, seeds=[1, 2], metric="accuracy", compile=flag)
        for flag in (False, True)
    )
    for a, b in zip(eager, together, strict=True):
        assert_close(a, b)
