"""Hostile study specs over real HTTP: each gets a 4xx naming its problem, and nothing is stored.

One ``regtune serve`` (no workers) answers the whole corpus. After every request the test
checks that neither a study record nor an Optuna study appeared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from servers import Server, problem, sqlite_rows, tiny_study, workerless_server
from spec_strategies import FIELDS, fits_schema, json_values, place

PLUGINS = str(Path(__file__).parent.parent / "plugins")


class Raw(bytes):
    """A request body sent as given (not JSON-encoded by the test)."""


def ss(**entries: Any) -> dict[str, Any]:
    return tiny_study(search_space=entries)


def raw_study(fragment: str) -> Raw:
    """``tiny_study`` with ``fragment`` (``"key": value`` text, e.g. NaN) spliced into it."""
    return Raw(json.dumps(tiny_study())[:-1].encode() + b", " + fragment.encode() + b"}")


NEST_ACCEPTED = 200  # parses, then is refused as an unknown key
NEST_UNPARSABLE = 100_000  # beyond the JSON parser's recursion limit

# pytest.param(body, status, fragment of the flattened detail "dotted.loc: message", id=...)
CORPUS = [
    # wrong types
    pytest.param(
        tiny_study(n_trials="many"),
        422,
        "body.n_trials: Input should be a valid integer",
        id="n_trials-string",
    ),
    pytest.param(
        tiny_study(cv={"folds": 2.5}),
        422,
        "body.cv.folds: Input should be a valid integer",
        id="folds-fraction",
    ),
    pytest.param(
        tiny_study(model="mlp"),
        422,
        "body.model: Input should be a valid dictionary",
        id="model-string",
    ),
    pytest.param(
        tiny_study(final_model={"ensemble": "maybe"}),
        422,
        "body.final_model.ensemble: Input should be a valid boolean",
        id="ensemble-not-a-boolean",
    ),
    pytest.param(
        tiny_study(final_model={"folds": 5}),
        422,
        "body.final_model.folds: Extra inputs are not permitted",
        id="final-model-unknown-key",
    ),
    pytest.param(
        ss(hidden="wide"),
        422,
        "body.search_space.hidden: Input should be a valid list",
        id="hidden-string",
    ),
    pytest.param(
        ss(lr=True),
        422,
        "body.search_space.lr: Value error, must be a range {low, high, log}",
        id="lr-bool",
    ),
    pytest.param(
        ss(dropout=[0.1, True]), 422, "may hold only numbers or strings", id="choices-with-bool"
    ),
    pytest.param(
        ss(lr=[1e-3, "x"]),
        422,
        "body.search_space.lr: Value error, must be a number in (0, inf), got 'x'",
        id="choices-with-string",
    ),
    pytest.param(
        ss(lr={"a": 1}), 422, "low: Field required; high: Field required", id="range-missing-bounds"
    ),
    # out of range, zero and negative
    pytest.param(
        tiny_study(n_trials=0),
        422,
        "body.n_trials: Input should be greater than or equal to 1",
        id="n_trials-zero",
    ),
    pytest.param(
        tiny_study(n_trials=101),
        422,
        "body.n_trials: Value error, n_trials must be ≤ 100",
        id="n_trials-over-limit",
    ),
    pytest.param(
        tiny_study(n_trials=10**30),
        422,
        "body.n_trials: Value error, n_trials must be ≤ 100",
        id="n_trials-huge",
    ),
    pytest.param(
        tiny_study(cv={"folds": 0}),
        422,
        "body.cv.folds: Input should be greater than or equal to 2",
        id="folds-zero",
    ),
    pytest.param(
        tiny_study(cv={"folds": -3}),
        422,
        "body.cv.folds: Input should be greater than or equal to 2",
        id="folds-negative",
    ),
    pytest.param(
        tiny_study(cv={"folds": 21}),
        422,
        "body.cv.folds: Value error, folds must be ≤ 20",
        id="folds-over-limit",
    ),
    pytest.param(
        tiny_study(cv={"folds": 3, "test_fraction": 0.9}),
        422,
        "body.cv.test_fraction: Input should be less than or equal to 0.5",
        id="test-fraction",
    ),
    pytest.param(
        tiny_study(timeout_s=-5),
        422,
        "body.timeout_s: Input should be greater than 0",
        id="timeout-negative",
    ),
    pytest.param(
        tiny_study(seed=2**32),
        422,
        "body.seed: Input should be less than 4294967296",
        id="seed-too-big",
    ),
    pytest.param(
        ss(hidden=[[0]]),
        422,
        "body.search_space.hidden.0.0: Input should be greater than or equal to 1",
        id="width-zero",
    ),
    pytest.param(
        tiny_study(model={"hidden": [8] * 9}),
        422,
        "body.model.hidden: Value error, at most 8 layers, got 9",
        id="too-many-layers",
    ),
    pytest.param(
        tiny_study(model={"hidden": [5000]}),
        422,
        "body.model.hidden: Value error, layer widths must be ≤ 4096",
        id="too-wide",
    ),
    pytest.param(
        ss(batch_size={"low": 1, "high": 1e9}),
        422,
        "body.search_space.batch_size: Value error, batch_size must be ≤ 65536",
        id="batch-over-limit",
    ),
    pytest.param(
        ss(dropout=1.0),
        422,
        "body.search_space.dropout: Value error, must be a number in [0, 1), got 1",
        id="dropout-one",
    ),
    pytest.param(
        ss(bn_momentum=0),
        422,
        "body.search_space.bn_momentum: Value error, must be a number in (0, 1], got 0",
        id="bn-momentum-zero",
    ),
    pytest.param(
        ss(weight_decay=-1e-3),
        422,
        "must be a number in [0, inf), got -0.001",
        id="weight-decay-negative",
    ),
    pytest.param(
        ss(patience=0),
        422,
        "body.search_space.patience: Value error, must be an integer in [1, inf), got 0",
        id="patience-zero",
    ),
    pytest.param(
        ss(patience={"low": 2.5, "high": 10}),
        422,
        "body.search_space.patience: Value error, must be an integer in [1, inf), got 2.5",
        id="patience-non-integer",
    ),
    pytest.param(
        ss(weight_decay=None),
        422,
        "body.search_space.weight_decay: Value error, must be a range {low, high, log}, a list",
        id="core-null",
    ),
    pytest.param(
        ss(lr=[]),
        422,
        "body.search_space.lr: Value error, a list of choices must not be empty",
        id="empty-choices",
    ),
    # ranges
    pytest.param(
        ss(dropout={"low": 0.5, "high": 0.1}),
        422,
        "body.search_space.dropout: Value error, low (0.5) must be < high (0.1)",
        id="range-low-above-high",
    ),
    pytest.param(
        ss(l1={"low": 0.01, "high": 0.01}),
        422,
        "low (0.01) must be < high (0.01)",
        id="range-empty",
    ),
    pytest.param(
        ss(weight_decay={"low": 0, "high": 0.1, "log": True}),
        422,
        "a log range needs low > 0, got low=0",
        id="log-range-zero-low",
    ),
    pytest.param(
        ss(lr={"low": -1, "high": 1, "log": True}),
        422,
        "a log range needs low > 0, got low=-1",
        id="log-range-negative-low",
    ),
    pytest.param(
        ss(dropout={"low": 0, "high": 0.5, "step": 0.1}),
        422,
        "step: Extra inputs are not permitted",
        id="range-unknown-key",
    ),
    # NaN and infinities (Python's JSON parser accepts them; JSON has none)
    pytest.param(
        raw_study('"training": {"lr": NaN}'),
        422,
        "body.training.lr: Input should be a finite number",
        id="lr-nan",
    ),
    pytest.param(
        tiny_study(training={"min_delta": math.nan}),
        422,
        "body.training.min_delta: Input should be a finite number",
        id="min-delta-nan",
    ),
    pytest.param(
        raw_study('"timeout_s": Infinity'),
        422,
        "body.timeout_s: Input should be a finite number",
        id="timeout-infinity",
    ),
    pytest.param(
        raw_study('"n_trials": 1e400'),
        422,
        "body.n_trials: Input should be a valid integer",
        id="n_trials-overflow",
    ),
    pytest.param(
        raw_study('"seed": NaN'), 422, "body.seed: Input should be a valid integer", id="seed-nan"
    ),
    pytest.param(
        raw_study('"search_space": {"dropout": {"low": NaN, "high": 0.5}}'),
        422,
        "body.search_space.dropout: Value error, low: Input should be a finite number",
        id="range-nan-low",
    ),
    pytest.param(
        raw_study('"search_space": {"weight_decay": Infinity}'),
        422,
        "body.search_space.weight_decay: Value error, must be a finite number, got inf",
        id="weight-decay-infinity",
    ),
    pytest.param(
        raw_study('"search_space": {"weight_decay": 1' + "0" * 400 + "}"),
        422,
        "body.search_space.weight_decay: Value error, must be a number in [0, inf), got an integer",
        id="integer-beyond-float",
    ),
    pytest.param(
        raw_study('"search_space": {"lr": [0.001, -Infinity]}'),
        422,
        "must be a finite number, got -inf",
        id="choice-minus-infinity",
    ),
    # unknown keys, datasets and enum values
    pytest.param(
        tiny_study(colour="blue"),
        422,
        "body.colour: Extra inputs are not permitted",
        id="unknown-top-key",
    ),
    pytest.param(
        ss(momentumz=0.9),
        422,
        "body.search_space.momentumz: Extra inputs are not permitted",
        id="unknown-search-key",
    ),
    pytest.param(
        tiny_study(training={"max_epoch": 4}),
        422,
        "body.training.max_epoch: Extra inputs are not permitted; "
        "did you mean 'training.max_epochs'?",
        id="unknown-key-close-to-a-known-one",
    ),
    pytest.param(
        ss(groups=5),
        422,
        "body.search_space.groups: Value error, must be an object of dropout groups' ranges",
        id="groups-a-number",
    ),
    pytest.param(
        ss(groups=[1]),
        422,
        "body.search_space.groups: Value error, must be an object of dropout groups' ranges",
        id="groups-a-list",
    ),
    pytest.param(
        tiny_study(n_trials=True),
        422,
        "body.n_trials: Input should be a valid integer",
        id="n_trials-a-boolean",
    ),
    pytest.param(
        tiny_study(cv={"folds": "3"}),
        422,
        "body.cv.folds: Input should be a valid integer",
        id="folds-as-text",
    ),
    pytest.param(
        tiny_study(dataset="builtin:imagenet"),
        422,
        "body.dataset: unknown built-in dataset 'imagenet'",
        id="unknown-builtin",
    ),
    pytest.param(
        tiny_study(dataset="0123abcd"),
        422,
        "body.dataset: unknown dataset '0123abcd'",
        id="unknown-upload",
    ),
    pytest.param(
        tiny_study(dataset="builtin:mnist1d:5"),
        422,
        "body.dataset: mnist1d size must be an integer in [10, 200000]",
        id="mnist1d-too-small",
    ),
    pytest.param({"n_trials": 2}, 422, "body.dataset: Field required", id="missing-dataset"),
    pytest.param(
        tiny_study(dataset=""),
        422,
        "body.dataset: String should have at least 1 character",
        id="empty-dataset",
    ),
    pytest.param(
        tiny_study(model={"kind": "transformer"}),
        422,
        "body.model.kind: Input should be 'mlp', 'cnn', 'layers' or 'plugin'",
        id="model-kind",
    ),
    pytest.param(
        tiny_study(sampler={"kind": "annealing"}),
        422,
        "body.sampler.kind: Input should be 'tpe', 'random', 'gp', 'cmaes', 'grid' or 'nsga2'",
        id="sampler-kind",
    ),
    pytest.param(
        tiny_study(pruner={"kind": "sometimes"}),
        422,
        "body.pruner.kind: Input should be 'median', 'hyperband', 'wilcoxon' or 'none'",
        id="pruner-kind",
    ),
    pytest.param(
        tiny_study(training={"optimizer": "rmsprop"}),
        422,
        "body.training.optimizer: Input should be 'adam' or 'sgd'",
        id="optimizer",
    ),
    pytest.param(
        ss(optimizer=["adam", "rmsprop"]),
        422,
        "optimizer must be one of ['adam', 'sgd'] or a list of them",
        id="optimizer-choices",
    ),
    pytest.param(
        tiny_study(training={"l2_mode": "both"}),
        422,
        "body.training.l2_mode: Input should be 'coupled' or 'decoupled'",
        id="l2-mode",
    ),
    pytest.param(
        tiny_study(objective={"metric": "f1"}),
        422,
        "body.objective.metric: Input should be 'accuracy', 'mse' or 'loss'",
        id="metric",
    ),
    # specs that contradict themselves or their dataset
    pytest.param(
        tiny_study(task="regression", objective={"metric": "accuracy"}),
        422,
        "objective.metric 'accuracy' needs task 'classification'",
        id="metric-vs-task",
    ),
    pytest.param(
        tiny_study(objective={"metric": "mse"}),
        422,
        "needs a regression dataset",
        id="metric-vs-dataset",
    ),
    pytest.param(
        tiny_study(model={"kind": "cnn"}),
        422,
        "needs inputs with a spatial shape",
        id="cnn-on-a-table",
    ),
    pytest.param(
        tiny_study(dataset="builtin:mnist1d:10"),
        422,
        "body.dataset: class 0 has 1 samples; 3-fold stratified CV needs at least 3",
        id="too-few-per-class",
    ),
    # not a JSON object
    pytest.param(Raw(b""), 422, "body: Field required", id="empty-body"),
    pytest.param(Raw(b"{not json"), 422, "body.1: JSON decode error", id="not-json"),
    pytest.param(
        Raw(b"[1, 2]"), 422, "body: Input should be a valid dictionary or object", id="json-array"
    ),
    pytest.param(
        Raw(b"null"), 422, "body: Input should be a valid dictionary or object", id="json-null"
    ),
    pytest.param(
        Raw(b'"builtin:wine"'),
        422,
        "body: Input should be a valid dictionary or object",
        id="json-string",
    ),
    # deep nesting, long strings, unicode junk
    pytest.param(
        raw_study('"junk": ' + "[" * NEST_ACCEPTED + "]" * NEST_ACCEPTED),
        422,
        "body.junk: Extra inputs are not permitted",
        id="deep-junk",
    ),
    pytest.param(
        raw_study('"search_space": {"lr": ' + "[" * NEST_ACCEPTED + "]" * NEST_ACCEPTED + "}"),
        422,
        "body.search_space.lr: Value error, a list of choices may hold only numbers or strings",
        id="deep-junk-in-a-param",
    ),
    pytest.param(
        raw_study('"junk": ' + "[" * NEST_UNPARSABLE + "]" * NEST_UNPARSABLE),
        400,
        "the JSON body is nested too deeply to parse",
        id="nested-beyond-parsing",
    ),
    pytest.param(
        tiny_study(name="n" * 201),
        422,
        "body.name: String should have at most 200 characters",
        id="long-name",
    ),
    pytest.param(
        tiny_study(dataset="d" * 100_000),
        422,
        "body.dataset: String should have at most 200 characters",
        id="long-dataset",
    ),
    pytest.param(
        tiny_study(name="a\x00b"),
        422,
        "body.name: Value error, name must not contain control characters, got '\\x00' at",
        id="name-with-nul",
    ),
    pytest.param(
        tiny_study(dataset="builtin:wine\n"),
        422,
        "dataset must not contain control characters",
        id="dataset-with-newline",
    ),
    pytest.param(
        raw_study('"name": "\\ud800"'),
        422,
        "body.name: Input should be a valid string, unable to parse raw data as a unicode string",
        id="name-lone-surrogate",
    ),
    pytest.param(
        tiny_study(dataset="builtin:🤖"),
        422,
        "body.dataset: unknown built-in dataset '🤖'",
        id="dataset-emoji",
    ),
]


def net(layers: Any, dataset: str = "builtin:wine", **model: Any) -> dict[str, Any]:
    """``tiny_study`` of a ``layers`` network (wine: 13 features; digits: 1×8×8)."""
    return tiny_study(dataset=dataset, model={"kind": "layers", "layers": layers} | model)


def plugin(name: str, **options: Any) -> dict[str, Any]:
    return tiny_study(
        dataset="builtin:digits", model={"kind": "plugin", "name": name, "options": options}
    )


def deep_residual(depth: int) -> dict[str, Any]:
    """A residual inside a residual ``depth`` times."""
    layer: dict[str, Any] = {"type": "relu"}
    for _ in range(depth):
        layer = {"type": "residual", "layers": [layer]}
    return layer


OUT = {"type": "linear"}
DIGITS = "builtin:digits"
# Networks: every refusal names the layer (body.model.layers.N) or the plugin field.
NETWORK_CORPUS = [
    pytest.param(
        net([{"type": "conv3d", "out": 4}, OUT]),
        422,
        "body.model.layers.0: Input tag 'conv3d' found using 'type' does not match",
        id="net-unknown-type",
    ),
    pytest.param(
        net([{"type": "linear", "out": 8}, OUT], DIGITS),
        422,
        "body.model.layers.0: model.layers[0] (linear): needs a flat input (features,), got "
        "shape (1, 8, 8); add a flatten before it",
        id="net-linear-on-an-image",
    ),
    pytest.param(
        net([{"type": "conv2d", "out": 4, "kernel": 3}, {"type": "flatten"}, OUT]),
        422,
        "body.model.layers.0: model.layers[0] (conv2d): needs (channels, H, W), got shape (13,)",
        id="net-conv2d-on-a-table",
    ),
    pytest.param(
        net([{"type": "conv1d", "out": 4, "kernel": 3}, {"type": "flatten"}, OUT], DIGITS),
        422,
        "model.layers[0] (conv1d): needs (channels, length), got shape (1, 8, 8)",
        id="net-wrong-rank",
    ),
    pytest.param(
        net(
            [
                {"type": "linear", "out": 8},
                {"type": "residual", "layers": [{"type": "linear", "out": 16}]},
                OUT,
            ]
        ),
        422,
        "body.model.layers.1: model.layers[1] (residual): its layers map (8,) to (16,)",
        id="net-residual-changes-width",
    ),
    pytest.param(
        net([{"type": "relu"}] * 10_000 + [OUT]),
        422,
        "body.model.layers: Value error, at most 200 layers (residual bodies included), got 10001",
        id="net-ten-thousand-layers",
    ),
    pytest.param(
        net(
            [{"type": "conv2d", "out": 4, "kernel": 64, "padding": 0}, {"type": "flatten"}, OUT],
            DIGITS,
        ),
        422,
        "model.layers[0] (conv2d): kernel 64 is larger than the input's padded size (8, 8)",
        id="net-kernel-larger-than-the-image",
    ),
    pytest.param(
        net([{"type": "conv2d", "out": 4, "kernel": 100_000}, OUT], DIGITS),
        422,
        "body.model.layers.0.conv2d.kernel: Input should be less than or equal to 64",
        id="net-huge-kernel",
    ),
    pytest.param(
        net([{"type": "linear", "out": 4096}] + [{"type": "linear", "out": 4096}] * 3 + [OUT]),
        422,
        "body.model: the network (model.kind 'layers') has 50,",
        id="net-over-max-parameters",
    ),
    pytest.param(
        net([{"type": "linear", "out": 8}, {"type": "relu"}]),
        422,
        "model.layers[1] (relu): the last layer must be a linear without 'out'",
        id="net-no-output-layer",
    ),
    pytest.param(
        net([OUT, {"type": "relu"}, OUT]),
        422,
        "body.model.layers.0: model.layers[0] (linear): only the network's last linear may leave",
        id="net-output-layer-in-the-middle",
    ),
    pytest.param(
        net([{"type": "conv2d", "out": 4, "kernel": 2}, {"type": "flatten"}, OUT], DIGITS),
        422,
        "padding 'same' needs an odd kernel, got 2",
        id="net-same-padding-even-kernel",
    ),
    pytest.param(
        net([{"type": "residual", "layers": []}, OUT]),
        422,
        "body.model.layers.0.residual.layers: List should have at least 1 item",
        id="net-empty-residual",
    ),
    pytest.param(
        net([{"type": "linear", "out": 8}, {"type": "global_avgpool"}, OUT]),
        422,
        "model.layers[1] (global_avgpool): needs (channels, positions…), got shape (8,)",
        id="net-global-pool-on-features",
    ),
    pytest.param(
        net([{"type": "maxpool2d", "kernel": 9}, {"type": "flatten"}, OUT], DIGITS),
        422,
        "model.layers[0] (maxpool2d): kernel 9 is larger than the input's padded size (8, 8)",
        id="net-pool-larger-than-the-image",
    ),
    pytest.param(
        net([{"type": "linear", "out": 0}, OUT]),
        422,
        "body.model.layers.0.linear.out: Input should be greater than or equal to 1",
        id="net-zero-width",
    ),
    pytest.param(
        net([{"type": "linear", "out": 5000}, OUT]),
        422,
        "body.model.layers.0.linear.out: Value error, out must be ≤ 4096",
        id="net-width-over-the-limit",
    ),
    pytest.param(
        net([{"type": "linear", "out": 8, "activation": "relu"}, OUT]),
        422,
        "body.model.layers.0.linear.activation: Extra inputs are not permitted",
        id="net-unknown-layer-field",
    ),
    pytest.param(
        net([{"type": "dropout", "group": "a b"}, OUT]),
        422,
        "body.model.layers.0.dropout.group: String should match pattern",
        id="net-bad-group-name",
    ),
    pytest.param(
        tiny_study(
            model={"kind": "layers", "layers": [{"type": "dropout", "group": "a"}, OUT]},
            search_space={"dropout.b": 0.3},
        ),
        422,
        "search_space.dropout.b: the network has no dropout group 'b' (its groups: a)",
        id="net-search-of-a-missing-group",
    ),
    pytest.param(
        tiny_study(model={"kind": "layers", "layers": [OUT]}, search_space={"hidden": [[8]]}),
        422,
        "search_space.hidden searches a template's widths",
        id="net-hidden-search-of-layers",
    ),
    pytest.param(
        net([{"type": "relu", "layers": [OUT]}, OUT]),
        422,
        "body.model.layers.0.relu.layers: Extra inputs are not permitted",
        id="net-layers-inside-a-plain-layer",
    ),
    pytest.param(
        net([deep_residual(20), OUT]),
        422,
        "residuals may nest at most 8 deep",
        id="net-nesting-too-deep",
    ),
    pytest.param(
        tiny_study(model={"kind": "layers"}),
        422,
        "model.kind 'layers' needs model.layers, a non-empty list",
        id="net-layers-missing",
    ),
    pytest.param(
        tiny_study(model={"kind": "mlp", "layers": [OUT]}),
        422,
        "model.layers is for model.kind 'layers', not 'mlp'",
        id="net-layers-for-a-template",
    ),
    pytest.param(
        plugin("os:system"),
        422,
        "body.model.name: String should match pattern",
        id="plugin-module-path",
    ),
    pytest.param(
        plugin("x; rm -rf /"),
        422,
        "body.model.name: String should match pattern",
        id="plugin-shell-characters",
    ),
    pytest.param(
        plugin("trainer.models"),
        422,
        "body.model.name: String should match pattern",
        id="plugin-dotted-module",
    ),
    pytest.param(
        plugin("resnet9000"),
        422,
        "body.model.name: network plugin 'resnet9000' is not installed on this host (entry "
        "points of the group 'regtune.networks' here: recurrent, tiny_convnet, wrong_width)",
        id="plugin-unknown",
    ),
    pytest.param(
        plugin("wrong_width"),
        422,
        "body.model.options: plugin 'wrong_width''s network maps (batch, 1, 8, 8) to (11,) per "
        "sample, not (10,)",
        id="plugin-wrong-output-width",
    ),
    pytest.param(
        plugin("tiny_convnet", depth=3),
        422,
        "body.model.options: plugin 'tiny_convnet' could not build its network with options "
        "{'depth': 3}: TypeError",
        id="plugin-unknown-option",
    ),
    pytest.param(
        plugin("tiny_convnet", width="x" * 5000),
        422,
        "body.model.options: Value error, must be at most 4096 bytes of JSON",
        id="plugin-options-too-large",
    ),
    pytest.param(
        tiny_study(model={"kind": "plugin"}),
        422,
        "model.kind 'plugin' needs model.name",
        id="plugin-without-a-name",
    ),
]


server = workerless_server(
    "hostile-specs",
    REGTUNE_LIMITS__MAX_TRIALS="100",
    PYTHONPATH=PLUGINS,  # the test plugins' distribution, as if installed
)


def stored(server: Server) -> tuple[int, int]:
    """(study records the API lists, Optuna studies in the database)."""
    with server.client() as http:
        listed = http.get("/v1/studies", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    return len(listed.json()), sqlite_rows(server.database_url, "studies")


def post(server: Server, body: Any) -> httpx.Response:
    content = bytes(body) if isinstance(body, Raw) else json.dumps(body).encode()
    with server.client() as http:
        return http.post(
            "/v1/studies", content=content, headers={"content-type": "application/json"}
        )


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CORPUS) >= 30 and len(NETWORK_CORPUS) >= 20
    everything = CORPUS + NETWORK_CORPUS
    assert len({case.id for case in everything}) == len(everything)


@pytest.mark.parametrize(("body", "status", "fragment"), CORPUS + NETWORK_CORPUS)
def test_hostile_spec_is_refused_by_name_and_nothing_is_stored(
    server: Server, body: Any, status: int, fragment: str
) -> None:
    before = stored(server)
    response = post(server, body)
    assert response.status_code == status, response.text[:2000]
    assert fragment in problem(response), problem(response)[:2000]
    assert stored(server) == before


def test_a_valid_spec_is_still_stored(server: Server) -> None:
    """The control case: the same server, the same counting, a spec that is fine."""
    before = stored(server)
    response = post(server, tiny_study(search_space={"patience": {"low": 2, "high": 5}}))
    assert response.status_code == 201, response.text
    assert stored(server) == (before[0] + 1, before[1] + 1)


def test_valid_networks_are_still_stored(server: Server) -> None:
    """The control cases of the network corpus: a nested residual, per-layer dropout groups
    searched apart, a CNN of layers, an installed plugin."""
    fine = [
        net([{"type": "linear", "out": 8}, deep_residual(8), OUT]),
        tiny_study(
            model={"hidden": [8, 8], "dropout_groups": "per_layer"},
            search_space={"dropout.layer1": {"low": 0.0, "high": 0.1}},
        ),
        net(
            [
                {"type": "conv2d", "out": 4, "kernel": 3},
                {"type": "batchnorm"},
                {"type": "relu"},
                {"type": "maxpool2d", "kernel": 2},
                {"type": "dropout", "group": "conv"},
                {"type": "global_avgpool"},
                OUT,
            ],
            DIGITS,
        ),
        plugin("tiny_convnet", width=2),
    ]
    for body in fine:
        before = stored(server)
        response = post(server, body)
        assert response.status_code == 201, response.text
        assert stored(server) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize("path", FIELDS, ids=".".join)
def test_any_json_at_any_field_gets_a_4xx_or_is_stored_whole(
    server: Server, path: tuple[str, ...]
) -> None:
    """Arbitrary JSON (wrong types, empty, huge, deep, unicode) at each field of the spec,
    the fields read from its models: never a 5xx; a value outside the field's documented
    schema is a 422 naming the field; a spec accepted reads back and deletes."""

    @settings(
        max_examples=5,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(value=json_values)
    def answers(value: Any) -> None:
        response = post(server, tiny_study() | place(path, value))
        assert response.status_code < 500, response.text[:2000]
        if response.status_code == 201:
            with server.client() as http:
                study = f"/v1/studies/{response.json()['id']}"
                assert http.get(study).status_code == 200
                assert http.delete(study).status_code == 204
            return
        assert 400 <= response.status_code < 500 and "detail" in response.json()
        if not fits_schema(path, value):
            detail = response.json()["detail"]
            located = [tuple(e["loc"][1 : len(path) + 1]) for e in detail if isinstance(e, dict)]
            assert response.status_code == 422 and path in located, response.text[:2000]

    answers()


def test_the_server_survived_the_corpus(server: Server) -> None:
    assert server.proc.poll() is None
    log = Path(server.log).read_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
