"""The model's size (``search_space.width``): the narrow network a trial's width builds, a
narrow trial in a stack of wider ones trained exactly as its network alone (the per-trial
engine without dropout; with dropout, the narrow network alone in its own stack, whose masks
are the population's counter-based ones), its parameter count and exported module, the spec's
checks, and a study that searches it: its trials' records, its refit and its report."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from device_tests import DEVICE
from equivalence import REASSOCIATED, assert_close, assert_identical
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from test_report import record_of, section_of

from service.http import report
from trainer import rng
from trainer.engines.per_trial import cross_validate
from trainer.engines.population import Population, train_population
from trainer.engines.trial_config import TrialConfig
from trainer.model_file.loading import load_model
from trainer.model_file.packing import pack, to_bytes
from trainer.nets.networks import count_parameters, narrowed
from trainer.nets.networks import narrow as narrow_units
from trainer.specs.spec_base import SpecError
from trainer.specs.study_spec import Range, StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.records import TrialRecord
from trainer.tuning.refit import refit
from trainer.tuning.space import searched
from trainer.tuning.study import run_study

BASE = {"weight_decay": 1e-3, "l1": 1e-5, "dropout": 0.0, "bn_momentum": 0.3, "patience": 4}
RESIDUAL = [
    {"type": "linear", "out": 12},
    {"type": "relu"},
    {
        "type": "residual",
        "layers": [{"type": "linear", "out": 6}, {"type": "tanh"}, {"type": "linear", "out": 12}],
    },
    {"type": "batchnorm"},
    {"type": "sigmoid"},  # 0.5 at a masked unit's 0: the masks keep it from the next layer
    {"type": "linear"},
]
NETWORKS = {
    "mlp": ("wine", {"hidden": [16, 8], "batch_norm": True}),
    # SGD as test_max_norm's CNN: after Adam's three epochs a digit sits on a tie that float
    # drift alone flips, for the full-width trial as much as for the narrow ones
    "cnn": ("digits", {"kind": "cnn", "channels": [6], "hidden": [8], "batch_norm": True}),
    "layers": ("wine", {"kind": "layers", "layers": RESIDUAL}),
}


def config(spec: StudySpec, **values: float | None) -> TrialConfig:
    return TrialConfig.from_values(spec, BASE | {k: v for k, v in values.items() if v is not None})


def study(data, model: dict, epochs: int = 3) -> StudySpec:
    training = {"optimizer": "sgd", "lr": 0.05} if model.get("kind") == "cnn" else {}
    return StudySpec(
        dataset=data.name, model=model, training=training | {"max_epochs": epochs}, cv={"folds": 2}
    )


def alone(trial: TrialConfig, data) -> TrialConfig:
    """The trial's narrow network as a configuration of its own, without a width."""
    model, hidden = trial.architecture(data.input_shape, data.n_outputs)
    return replace(trial, model=model, hidden=hidden, width=None)


# --- the narrow network -------------------------------------------------------------------------


def test_every_hidden_width_is_scaled_rounded_and_at_least_one(wine, digits) -> None:
    mlp = study(wine, {"hidden": [16, 8, 1]}).model
    model, hidden = narrowed(mlp, 0.5, wine.input_shape, wine.n_outputs)
    assert hidden == [8, 4, 1] and model.hidden == [8, 4, 1]
    assert narrowed(mlp, 0.3, wine.input_shape, wine.n_outputs)[1] == [5, 2, 1]  # 4.8, 2.4, 0.3
    cnn = study(digits, NETWORKS["cnn"][1]).model
    model, hidden = narrowed(cnn, 0.5, digits.input_shape, digits.n_outputs)
    assert (model.channels, hidden) == ([3], [4])
    stack = study(wine, NETWORKS["layers"][1]).model
    model, _ = narrowed(stack, 0.5, wine.input_shape, wine.n_outputs)
    layers = model.layers or []
    assert layers[0].out == 6 and layers[-1].out is None  # type: ignore[union-attr]
    body = layers[2].layers  # type: ignore[union-attr]
    assert [x.out for x in body if x.type == "linear"] == [3, 6]  # ends at its input's width


def test_a_residual_on_the_inputs_keeps_their_width(wine) -> None:
    n = wine.input_shape[0]
    layers = [
        {
            "type": "residual",
            "layers": [
                {"type": "linear", "out": 8},
                {"type": "relu"},
                {"type": "linear", "out": n},
            ],
        },
        {"type": "linear"},
    ]
    model = study(wine, {"kind": "layers", "layers": layers}).model
    narrow, _ = narrowed(model, 0.5, wine.input_shape, wine.n_outputs)
    body = (narrow.layers or [])[0].layers  # type: ignore[union-attr]
    assert [x.out for x in body if x.type == "linear"] == [4, n]
    trial = replace(config(study(wine, {"kind": "layers", "layers": layers})), width=0.5)
    trial.network(wine.input_shape, wine.n_outputs)  # builds: the shapes agree


# --- a narrow trial in a wide stack -------------------------------------------------------------


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_a_narrow_trial_in_a_mixed_stack_trains_as_its_network_alone(
    wine, digits, network: str
) -> None:
    """Beside a full-width trial and another width: each equals the per-trial engine on its
    own (narrow) network — scores, curves and best epochs — and records that network's size."""
    name, model = NETWORKS[network]
    data = wine if name == "wine" else digits
    spec = study(data, model)
    splits = CVProtocol.of(spec, data).splits
    configs = [
        config(spec),
        config(spec, width=0.5, weight_decay=5e-2),
        config(spec, width=0.3, l1=1e-4, bn_momentum=0.9),
    ]
    seeds = [11, 22, 33]
    together = train_population(
        data, configs, splits, seeds=seeds, metric="accuracy", device=DEVICE
    )
    for trial, seed, result in zip(configs, seeds, together, strict=True):
        assert result is not None and not isinstance(result, Exception)
        single = cross_validate(data, trial, splits, metric="accuracy", seed=seed, device=DEVICE)
        assert_close(result, single, rel=REASSOCIATED)
        narrow = trial.network(data.input_shape, data.n_outputs)
        assert result.n_params == single.n_params == count_parameters(narrow)
    assert together[1].n_params < together[0].n_params  # type: ignore[union-attr]


@pytest.mark.parametrize("network", ["mlp", "cnn"])
def test_with_dropout_a_narrow_trial_draws_its_network_alones_masks(
    wine, digits, network: str
) -> None:
    """The per-trial engine draws torch's masks, so the reference is the narrow network alone
    in its own stack: the same counter-based masks on its live units."""
    name, model = NETWORKS[network]
    data = wine if name == "wine" else digits
    spec = study(data, model)
    splits = CVProtocol.of(spec, data).splits
    target = config(spec, width=0.5, dropout=0.3)
    configs = [config(spec, dropout=0.5), target, config(spec, width=0.25, dropout=0.1)]
    together = train_population(
        data, configs, splits, seeds=[1, 2, 3], metric="accuracy", device=DEVICE
    )
    narrow = alone(target, data)
    (single,) = train_population(
        data, [narrow], splits, seeds=[2], metric="accuracy", device=DEVICE
    )
    assert_close(together[1], single, rel=REASSOCIATED)


def test_masked_units_stay_zero_and_the_export_is_the_narrow_network(wine) -> None:
    spec = study(wine, {"hidden": [16, 8], "batch_norm": True}, epochs=2)
    splits = CVProtocol.of(spec, wine).splits
    trial = config(spec, width=0.5, dropout=0.2, l1=1e-3)
    population = Population(wine, splits, config(spec), slots=2, metric="accuracy", device=DEVICE)
    population.assign(0, config(spec), 1)
    population.assign(1, trial, 2)
    for _ in range(2):
        population.train_epoch()
        population.end_epoch()
    layers = population.layers
    rows = population.rows_of(1)
    for name, tensor in layers.params.items():
        live = layers.live(name, rows, population.shapes[1][name])
        masked = tensor[rows].detach().clone()
        masked[(slice(None), *map(slice, live.shape[1:]))] = 0.0
        assert torch.count_nonzero(masked) == 0, name
    module = population.module(1, 0)
    narrow = trial.network(wine.input_shape, wine.n_outputs)
    assert [p.shape for p in module.parameters()] == [p.shape for p in narrow.parameters()]
    assert population.result(1).n_params == count_parameters(narrow)


def test_a_width_of_one_trains_bit_for_bit_as_no_width(wine) -> None:
    spec = study(wine, {"hidden": [16, 8], "batch_norm": True})
    splits = CVProtocol.of(spec, wine).splits
    off = config(spec, dropout=0.2)
    on = replace(off, width=1.0)
    a = train_population(wine, [off, off], splits, seeds=[5, 6], metric="accuracy", device=DEVICE)
    b = train_population(wine, [on, off], splits, seeds=[5, 6], metric="accuracy", device=DEVICE)
    assert_identical(a[0], b[0])
    assert_identical(a[1], b[1])


def test_a_full_width_trial_after_a_narrow_one_trains_without_its_masks(wine) -> None:
    """The narrow trial's unit masks and strided dropout leave the stack with it: the
    full-width trial that takes its slot runs unmasked, bit for bit as in a fresh stack."""
    spec = study(wine, {"hidden": [16, 8], "batch_norm": True})
    splits = CVProtocol.of(spec, wine).splits
    full = config(spec, dropout=0.2)
    stack = Population(wine, splits, full, slots=1, metric="accuracy", device=DEVICE)
    stack.assign(0, config(spec, width=0.5, dropout=0.2), 3)
    assert stack.layers.live_in and stack.layers.strides
    stack.train_epoch()
    stack.end_epoch()
    stack.release(0)
    stack.assign(0, full, 4)
    assert not stack.layers.live_in and not stack.layers.strides
    finished = False
    while not finished:
        stack.train_epoch()
        (report,) = stack.end_epoch()
        finished = report.finished
    (fresh,) = train_population(wine, [full], splits, seeds=[4], metric="accuracy", device=DEVICE)
    assert_identical(stack.result(0), fresh)


def test_the_strided_masks_are_the_narrow_networks_masks() -> None:
    key = torch.tensor([3, -9], dtype=torch.int64)
    keep = torch.tensor([0.4, 0.7])
    full = rng.strided_keep_mask(key, (5, 6), keep, torch.tensor([6, 6]))
    assert torch.equal(full, rng.keep_mask(key, (5, 6), keep))
    narrow = rng.strided_keep_mask(key, (5, 6), keep, torch.tensor([4, 4]))
    assert torch.equal(narrow[:, :, :4], rng.keep_mask(key, (5, 4), keep))


# --- the spec, the refit and the model file -----------------------------------------------------


@pytest.mark.parametrize(
    ("width", "fragment"),
    [
        (0, "got 0"),
        (-0.5, "got -0.5"),
        (1.5, "got 1.5"),
        ([0.5, 2], "got 2"),
        ({"low": 0, "high": 1}, "(0, 1]"),
    ],
)
def test_a_width_outside_0_1_is_refused(width: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as error:
        StudySpec.model_validate({"dataset": "builtin:wine", "search_space": {"width": width}})
    found = [(".".join(map(str, e["loc"])), e["msg"]) for e in error.value.errors()]
    assert any(loc == "search_space.width" and fragment in msg for loc, msg in found), found


def test_width_is_off_unless_given_and_a_plugin_refuses_it() -> None:
    spec = StudySpec(dataset="builtin:wine")
    assert spec.search_space.width is None and "width" not in searched(spec)
    assert config(spec).width is None and "width" not in config(spec).hyperparameters()
    given = StudySpec(dataset="builtin:wine", search_space={"width": {"low": 0.25, "high": 1}})
    assert searched(given)["width"] == Range(low=0.25, high=1.0)
    assert config(given, width=0.5).hyperparameters()["width"] == 0.5
    with pytest.raises(ValidationError, match=r"search_space\.width"):
        StudySpec.model_validate(
            {
                "dataset": "builtin:wine",
                "model": {"kind": "plugin", "name": "tiny"},
                "search_space": {"width": 0.5},
            }
        )
    plugin = StudySpec(dataset="builtin:wine", model={"kind": "plugin", "name": "tiny"}).model
    with pytest.raises(SpecError, match=r"search_space\.width") as error:
        narrowed(plugin, 0.5, (13,), 3)
    assert error.value.field == "search_space.width"


def test_the_refit_and_the_model_file_hold_the_narrow_network(wine) -> None:
    spec = study(wine, NETWORKS["layers"][1], epochs=2)
    trial = config(spec, width=0.5)
    protocol = CVProtocol.of(spec, wine)
    fitted = refit(
        wine, trial, protocol.pool, protocol.test, metric="accuracy", epochs=2, device=DEVICE
    )
    narrow = trial.network(wine.input_shape, wine.n_outputs)
    assert count_parameters(fitted.model) == count_parameters(narrow)
    model_file = pack(
        fitted, wine, metric="accuracy", n_train=len(protocol.pool), n_test=len(protocol.test)
    )
    loaded = load_model(to_bytes(model_file))
    assert count_parameters(loaded.model) == count_parameters(narrow)


# --- a study that searches it --------------------------------------------------------------------


def test_a_study_searches_width_records_each_narrow_network_and_refits_the_best(wine) -> None:
    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:wine",
            "n_trials": 4,
            "seed": 0,
            "model": {"hidden": [16, 8]},
            "training": {"max_epochs": 3},
            "cv": {"folds": 2},
            "search_space": {"width": {"low": 0.2, "high": 1.0}},
        }
    )
    outcome = run_study(spec, wine, device=DEVICE)
    done = outcome.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(done) == 4

    def narrow(trial: FrozenTrial) -> torch.nn.Module:
        return TrialConfig.from_values(spec, trial.params).network(wine.input_shape, wine.n_outputs)

    sizes = [TrialRecord.of(t).n_params for t in done]
    assert sizes == [count_parameters(narrow(t)) for t in done]
    assert len(set(sizes)) > 1, sizes  # trials of different widths trained
    assert outcome.best is not None and outcome.fitted is not None
    best = narrow(outcome.best)
    assert [p.shape for p in outcome.fitted.model.parameters()] == [
        p.shape for p in best.parameters()
    ]
    # The report's best configuration says what the width did and which network it trained.
    page = report.render(record_of(spec, outcome), done)
    said = section_of(page, "best-configuration")
    width = outcome.best.params["width"]
    trained = "-".join(str(narrow_units(width, units)) for units in (16, 8))
    assert f"width = {width:.4g} (the search chose it)" in said
    assert f"trained MLP: hidden {trained}, BatchNorm (at full width: MLP: hidden 16-8," in said
