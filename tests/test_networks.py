"""Your own networks: every layer against its torch module, stacked against per-trial training,
dropout groups, plugins (a test-only installed distribution), and the model file."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from device_tests import DEVICE
from equivalence import assert_close
from pydantic import ValidationError
from torch import nn

from trainer.data.builtin_sets import load_builtin
from trainer.data.datasets import Dataset, make_dataset
from trainer.engines import layout, stacking
from trainer.engines.per_trial import cross_validate
from trainer.engines.population import Pass, Population, train_population
from trainer.engines.trial_config import TrialConfig
from trainer.model_file.loading import load_model
from trainer.model_file.model_format import ArtifactError
from trainer.model_file.packing import pack, to_bytes
from trainer.nets import networks, plugins
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.space import suggest
from trainer.tuning.study import run_study

PLUGINS = os.path.join(os.path.dirname(__file__), "plugins")


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test plugins' distribution on sys.path: importlib.metadata finds it as installed."""
    monkeypatch.syspath_prepend(PLUGINS)


def data_of(shape: tuple[int, ...], n: int = 96, classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, math.prod(shape))).astype(np.float32)
    y = np.arange(n) % classes
    return make_dataset(f"random{shape}", X, y, task="classification", input_shape=shape)


def trial(spec: StudySpec, **values: Any) -> TrialConfig:
    base = {"weight_decay": 1e-3, "l1": 1e-5, "dropout": 0.0, "bn_momentum": 0.3, "patience": 4}
    return TrialConfig.from_values(spec, base | values)


def layers_spec(data: Dataset, layers: list[dict], **fields: Any) -> StudySpec:
    return StudySpec(
        dataset=data.name,
        model={"kind": "layers", "layers": layers},
        training={"max_epochs": 3, "batch_size": 16} | fields.pop("training", {}),
        cv={"folds": 2},
        **fields,
    )


def short_study(data: Dataset, model: dict, n_trials: int) -> StudySpec:
    """A study of a few 2-epoch trials with a held-out test split (so a final model)."""
    return StudySpec(
        dataset=data.name,
        n_trials=n_trials,
        model=model,
        training={"max_epochs": 2},
        cv={"folds": 2, "test_fraction": 0.2},
    )


LINEAR = {"type": "linear"}
# One network per layer type (and per rank a layer takes), each ending in the output linear.
LAYER_NETWORKS = {
    "linear+batchnorm": ((6,), [{"type": "linear", "out": 8}, {"type": "batchnorm"}, LINEAR]),
    "activations": (
        (6,),
        [
            {"type": "linear", "out": 8},
            {"type": "relu"},
            {"type": "linear", "out": 8},
            {"type": "gelu"},
            {"type": "tanh"},
            {"type": "sigmoid"},
            {"type": "leaky_relu", "slope": 0.2},
            LINEAR,
        ],
    ),
    "residual": (
        (6,),
        [
            {"type": "linear", "out": 8},
            {
                "type": "residual",
                "layers": [{"type": "linear", "out": 8}, {"type": "batchnorm"}, {"type": "relu"}],
            },
            LINEAR,
        ],
    ),
    "conv1d+pools": (
        (2, 12),
        [
            {"type": "conv1d", "out": 4, "kernel": 3},
            {"type": "batchnorm"},
            {"type": "maxpool1d", "kernel": 2},
            {"type": "conv1d", "out": 4, "kernel": 2, "stride": 2, "padding": 1},
            {"type": "avgpool1d", "kernel": 2, "stride": 1},
            {"type": "flatten"},
            LINEAR,
        ],
    ),
    "conv2d+global_avgpool": (
        (2, 6, 6),
        [
            {"type": "conv2d", "out": 4, "kernel": 3, "stride": 2},
            {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "residual", "layers": [{"type": "conv2d", "out": 4, "kernel": 3}]},
            {"type": "global_avgpool"},
            LINEAR,
        ],
    ),
    "conv2d+pools": (
        (1, 8, 8),
        [
            {"type": "conv2d", "out": 3, "kernel": 3, "padding": 0},
            {"type": "maxpool2d", "kernel": 2},
            {"type": "avgpool2d", "kernel": 3, "stride": 1},
            {"type": "flatten"},
            {"type": "batchnorm"},
            LINEAR,
        ],
    ),
}


@pytest.mark.parametrize("name", list(LAYER_NETWORKS))
def test_every_layer_runs_stacked_as_its_torch_module(name: str) -> None:
    """Each stacked model computes what its own ``nn.Module`` computes: in evaluation mode, in
    training mode on a full batch (BatchNorm's running statistics included), and on a partial
    batch whose padding rows the stacked BatchNorm must leave out of its statistics."""
    shape, layers = LAYER_NETWORKS[name]
    data = data_of(shape)
    spec = layers_spec(data, layers)
    splits = CVProtocol.of(spec, data).splits
    pop = Population(data, splits, trial(spec), slots=2, metric="accuracy", device=DEVICE)
    pop.assign(0, trial(spec, bn_momentum=0.2), 3)
    pop.assign(1, trial(spec, bn_momentum=0.7), 4)
    modules = [pop.module(r // pop.K, r % pop.K) for r in range(pop.M)]
    index = pop.rows.fit_index[:, :10]
    x = pop.rows.features(index)
    everyone = torch.ones(pop.M, 10, dtype=torch.bool, device=DEVICE)
    with torch.no_grad():
        stacked = pop.forward(x, everyone)
    for m, module in enumerate(modules):
        torch.testing.assert_close(stacked[m], module(x[m]), rtol=1e-4, atol=1e-5)

    valid = everyone.clone()
    valid[1, 7:] = False  # model 1 has a partial batch: 7 real rows
    for rows, full in ((everyone, True), (valid, False)):
        fresh = [pop.module(r // pop.K, r % pop.K).train() for r in range(pop.M)]
        before = [(mean.clone(), var.clone()) for mean, var in pop.layers.running]
        with torch.no_grad():
            stepping = torch.ones(pop.M, dtype=torch.bool, device=DEVICE)
            out = pop.forward(x, rows, stepping=stepping, full=full)
        for m, module in enumerate(fresh):
            real = rows[m]
            with torch.no_grad():
                expected = module(x[m][real])
            torch.testing.assert_close(out[m][real], expected, rtol=1e-4, atol=1e-5)
            norms = [module.get_submodule(n) for n in pop.program.norms]
            for (mean, var), norm in zip(pop.layers.running, norms, strict=True):
                torch.testing.assert_close(mean[m], norm.running_mean, rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(var[m], norm.running_var, rtol=1e-4, atol=1e-6)
        for (mean, var), (old_mean, old_var) in zip(pop.layers.running, before, strict=True):
            mean.copy_(old_mean), var.copy_(old_var)


@pytest.mark.parametrize(("kind", "p"), [("dropout", 0.3), ("dropout2d", 0.6)])
def test_stacked_dropout_zeroes_p_and_scales_by_the_inverse_keep(kind: str, p: float) -> None:
    """Dropout's stacked masks: a fraction p zeroed per model (whole channels for Dropout2d,
    as ``nn.Dropout2d``), the rest scaled by 1/(1 − p); the identity in evaluation."""
    data = data_of((4, 8, 8), n=40)
    spec = layers_spec(data, [{"type": "flatten"}, LINEAR])
    pop = Population(
        data, CVProtocol.of(spec, data).splits, trial(spec), slots=1, metric="accuracy"
    )
    pop.assign(0, trial(spec, dropout=p), 1)
    pop.program.dropouts = [("d", None, kind == "dropout2d")]  # the layer under test
    h = torch.rand(pop.M, 64, 4, 8, 8) + 0.5  # strictly positive: zeros come from dropout
    keys = torch.arange(pop.M, dtype=torch.int64)[None, :] * 7 + 1
    out = pop.layers.dropout(0, h, Pass(torch.ones(pop.M, 64), None, keys, False))
    kept = out != 0
    torch.testing.assert_close(out[kept], h[kept] / (1 - p))
    units = out[..., 0, 0] if kind == "dropout2d" else out
    if kind == "dropout2d":  # a channel is kept or dropped whole
        assert torch.equal(kept.all((-1, -2)), kept.any((-1, -2)))
    for m in range(pop.M):
        zeroed = (units[m] == 0).float().mean().item()
        n = units[m].numel()
        assert abs(zeroed - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert pop.layers.dropout(0, h, Pass(torch.ones(pop.M, 64), None, None, False)) is h


# Stacked and per-trial training agree (no dropout: torch's dropout draws from its own
# generator; SGD with BatchNorm, as in test_population's note on Adam).
EQUIVALENT = {
    "cnn with pooling": (
        (1, 8, 8),
        [
            {"type": "conv2d", "out": 4, "kernel": 3},
            {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "maxpool2d", "kernel": 2},
            {"type": "dropout", "group": "conv"},
            {"type": "conv2d", "out": 6, "kernel": 3, "stride": 2},
            {"type": "global_avgpool"},
            {"type": "dropout", "group": "head"},
            LINEAR,
        ],
    ),
    "residual mlp with groups": (
        (6,),
        [
            {"type": "linear", "out": 12},
            {"type": "dropout", "group": "input"},
            {
                "type": "residual",
                "layers": [
                    {"type": "linear", "out": 12},
                    {"type": "batchnorm"},
                    {"type": "gelu"},
                    {"type": "dropout", "group": "deep"},
                ],
            },
            {"type": "dropout"},
            LINEAR,
        ],
    ),
}


@pytest.mark.parametrize("name", list(EQUIVALENT))
def test_layer_networks_train_stacked_as_alone(name: str) -> None:
    shape, layers = EQUIVALENT[name]
    data = data_of(shape, n=120)
    spec = layers_spec(data, layers, training={"optimizer": "sgd", "lr": 0.05})
    splits = CVProtocol.of(spec, data).splits
    configs = [trial(spec, bn_momentum=0.3), trial(spec, weight_decay=5e-2, bn_momentum=0.9)]
    together = train_population(data, configs, splits, seeds=[1, 2], metric="accuracy")
    for config, seed, result in zip(configs, [1, 2], together, strict=True):
        alone = cross_validate(data, config, splits, metric="accuracy", seed=seed)
        assert_close(result, alone)


def test_per_group_dropout_reaches_its_layers_and_not_the_neighbours() -> None:
    """Each group's p reaches its own dropouts (per trial and stacked); a trial's result does
    not change with what its neighbours' groups draw."""
    shape, layers = EQUIVALENT["residual mlp with groups"]
    data = data_of(shape, n=120)
    spec = layers_spec(
        data,
        layers,
        search_space={"dropout.input": {"low": 0.0, "high": 0.2}, "dropout.deep": 0.5},
    )
    assert spec.model.groups() == ["input", "deep"]
    target = trial(spec, dropout=0.1, **{"dropout.input": 0.05, "dropout.deep": 0.5})
    net = target.network(data.input_shape, data.n_outputs)
    ps = {getattr(m, "group", None): m.p for m in net.modules() if isinstance(m, nn.Dropout)}
    assert ps == {"input": 0.05, "deep": 0.5, None: 0.1}
    splits = CVProtocol.of(spec, data).splits
    neighbour = trial(spec, dropout=0.6, **{"dropout.input": 0.4, "dropout.deep": 0.1})
    alone = train_population(data, [target], splits, seeds=[5], metric="accuracy")[0]
    crowd = train_population(data, [neighbour, target], splits, seeds=[6, 5], metric="accuracy")
    # Equal up to float order: torch's BatchNorm kernel vectorizes across the stack's M·C
    # channels, and 24 or 48 of them (12 per model) leave different tails (relative 7e-5
    # after three epochs here; 0 with the masked arithmetic, whose sums run per model).
    assert_close(alone, crowd[1])
    pop = Population(data, splits, target, slots=2, metric="accuracy")
    pop.assign(1, target, 5)
    assert pop.layers.groups == [None, "input", "deep"]
    keep = pop.layers.keep[:, pop.rows_of(1)]
    torch.testing.assert_close(keep, torch.tensor([[0.9] * 2, [0.95] * 2, [0.5] * 2]))


def test_per_layer_groups_for_the_templates_are_searched_apart() -> None:

    spec = StudySpec(
        dataset="builtin:wine",
        model={"hidden": [8, 8], "dropout_groups": "per_layer"},
        search_space={"dropout.layer1": {"low": 0.0, "high": 0.1}},
    )
    study = optuna.create_study()
    values = suggest(study.ask(), spec)
    assert "dropout" not in values  # no dropout is left without a group
    assert 0.0 <= values["dropout.layer1"] <= 0.1 and 0.0 <= values["dropout.layer2"] <= 0.7
    config = TrialConfig.from_values(spec, values)
    assert "dropout" not in config.hyperparameters()
    net = config.network((13,), 3)
    ps = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert ps == [values["dropout.layer1"], values["dropout.layer2"]]
    with pytest.raises(ValidationError, match="no dropout group 'layer3'"):
        StudySpec(
            dataset="builtin:wine",
            model={"hidden": [8, 8], "dropout_groups": "per_layer"},
            search_space={"dropout.layer3": 0.1},
        )


def test_the_templates_are_layer_stacks_with_their_old_parameter_names() -> None:
    """MLP and CNN are built from layer specs; the CNN keeps the parameter names (``features.*``,
    ``head.*``) of model files written before, so those still load."""
    cnn = networks.build(StudySpec(dataset="x", model={"kind": "cnn"}).model, (1, 8, 8), 10)
    assert {k.split(".")[0] for k in cnn.state_dict()} == {"features", "head"}
    features, head = networks.template_layers(
        StudySpec(dataset="x", model={"kind": "cnn", "channels": [4], "hidden": [8]}).model,
        (1, 8, 8),
    )
    assert [x.type for x in features] == ["conv2d", "batchnorm", "relu", "dropout", "flatten"]
    assert [x.type for x in head] == ["linear", "batchnorm", "relu", "dropout", "linear"]


# --- plugins -------------------------------------------------------------------------------


def test_a_plugin_network_trains_stacked_as_alone(installed: None, digits: Dataset) -> None:
    """A plugin's own module class (custom forward, functional calls, a residual, Dropout2d,
    a conv without bias) stacks; stacked and per-trial training agree."""
    assert plugins.find("tiny_convnet").version == "1.2.0"
    spec = StudySpec(
        dataset=digits.name,
        model={"kind": "plugin", "name": "tiny_convnet", "options": {"width": 3}},
        training={"optimizer": "sgd", "lr": 0.05, "max_epochs": 3},
        cv={"folds": 2},
    )
    assert layout.per_trial_reason(spec, digits) is None
    splits = CVProtocol.of(spec, digits).splits
    configs = [trial(spec), trial(spec, weight_decay=1e-2, bn_momentum=0.8)]
    together = train_population(digits, configs, splits, seeds=[3, 4], metric="accuracy")
    for config, seed, result in zip(configs, [3, 4], together, strict=True):
        alone = cross_validate(digits, config, splits, metric="accuracy", seed=seed)
        assert_close(result, alone)


def test_an_unstackable_plugin_trains_per_trial_and_says_why(installed: None, tmp_path) -> None:
    data = load_builtin("builtin:mnist1d:300")
    spec = short_study(data, {"kind": "plugin", "name": "recurrent", "options": {"hidden": 4}}, 2)
    reason = layout.per_trial_reason(spec, data)
    assert reason is not None and "GRU" in reason
    outcome = run_study(spec, data)
    trials = outcome.study.get_trials()
    assert len(trials) == 2 and all(t.user_attrs["engine"] == "per-trial" for t in trials)
    assert all("GRU" in t.user_attrs["engine_note"] for t in trials)
    assert outcome.fitted is not None and outcome.test_score is not None


def test_a_plugin_model_file_names_the_plugin_and_loads_where_installed(
    installed: None, digits: Dataset, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = short_study(
        digits, {"kind": "plugin", "name": "tiny_convnet", "options": {"width": 2}}, 1
    )
    outcome = run_study(spec, digits)
    assert outcome.fitted is not None
    protocol = CVProtocol.of(spec, digits)
    artifact = pack(outcome.fitted, digits, metric="accuracy", n_train=len(protocol.pool), n_test=1)
    network = artifact["architecture"]["network"]
    assert network == {
        "kind": "plugin",
        "name": "tiny_convnet",
        "options": {"width": 2},
        "package": "regtune-test-networks",
        "version": "1.2.0",
    }
    path = tmp_path / "model.pt"
    path.write_bytes(to_bytes(artifact))
    model = load_model(path)
    rows = digits.X[protocol.test]
    expected = outcome.fitted.model.eval()(
        torch.as_tensor(outcome.fitted.x_scaler.transform(rows))
    ).argmax(1)
    assert list(model.predict(rows)) == [digits.classes[i] for i in expected.tolist()]
    monkeypatch.setattr(plugins, "installed", dict)  # a host without the plugin
    with pytest.raises(ArtifactError, match=r"tiny_convnet.*regtune-test-networks 1\.2\.0"):
        load_model(path)


def test_a_layers_model_file_loads_with_nothing_installed(digits: Dataset, tmp_path) -> None:
    _, layers = EQUIVALENT["cnn with pooling"]
    spec = short_study(digits, {"kind": "layers", "layers": layers}, 1)
    outcome = run_study(spec, digits)
    assert outcome.fitted is not None
    artifact = pack(outcome.fitted, digits, metric="accuracy", n_train=1, n_test=1)
    path = tmp_path / "model.pt"
    path.write_bytes(to_bytes(artifact))
    model = load_model(path)
    groups = artifact["architecture"]["groups"]
    assert set(groups) == {"conv", "head"}
    ps = {
        getattr(m, "group", None): m.p for m in model.model.modules() if isinstance(m, nn.Dropout)
    }
    assert ps == groups
    assert model.predict(digits.X[:5]).shape == (5,)


def test_unknown_and_broken_plugins_are_refused_naming_the_field(
    installed: None, digits: Dataset
) -> None:
    def refused(model: dict) -> networks.NetworkError:
        spec = StudySpec(dataset=digits.name, model=model)
        with pytest.raises(networks.NetworkError) as caught:
            CVProtocol.of(spec, digits)
        return caught.value

    missing = refused({"kind": "plugin", "name": "resnet9000"})
    assert missing.field == "model.name" and "tiny_convnet" in str(missing)
    wrong = refused({"kind": "plugin", "name": "wrong_width"})
    assert wrong.field == "model.options" and "not (10,)" in str(wrong)
    bad_option = refused({"kind": "plugin", "name": "tiny_convnet", "options": {"depth": 3}})
    assert bad_option.field == "model.options" and "depth" in str(bad_option)
    for name in ("os:system", "os.path", "a;rm -rf /", "../x", "Tiny"):
        with pytest.raises(ValidationError, match=r"model\.name"):
            StudySpec(dataset="builtin:digits", model={"kind": "plugin", "name": name})


def test_a_net_that_cannot_be_traced_is_unstackable_with_the_reason() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.sum() > 0 else -self.a(x)

    with pytest.raises(stacking.Unstackable, match=r"torch\.fx cannot trace"):
        stacking.program(Branchy())
    shared = nn.Sequential(lin := nn.Linear(4, 4), nn.ReLU(), lin)
    with pytest.raises(stacking.Unstackable, match="called twice"):
        stacking.program(shared)
    with pytest.raises(stacking.Unstackable, match="LayerNorm"):
        stacking.program(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))


def readme_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's "Your own network" section."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Your own network", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split(f"```{language}\n")[1:]]


def test_the_readme_network_examples_are_what_they_say(digits: Dataset) -> None:
    """The README's `layers` spec fits digits and stacks; its plugin example stacks."""
    (spec_text,) = readme_blocks("json")
    spec = StudySpec.model_validate(json.loads(spec_text))
    CVProtocol.of(spec, digits)
    assert spec.model.groups() == ["conv", "head"]
    assert layout.per_trial_reason(spec, digits) is None
    (plugin_text,) = readme_blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(plugin_text, "README.md", "exec"), namespace)
    module = namespace["small_resnet"]((1, 8, 8), 10, width=8)
    assert module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert stacking.program(module).dropouts == [("3", None, True)]
