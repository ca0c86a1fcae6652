"""Study specifications: the typed, validated description of one tuning study.

The same pydantic models validate a spec file for ``regtune tune`` and a request body at
the service's HTTP boundary, so an error names the offending field the same way in both.
Size limits (trials, folds, epochs, widths) are not hard-coded: pass a :class:`Limits`
as validation context, ``StudySpec.model_validate(data, context={"limits": limits})``.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

Task = Literal["classification", "regression"]
Metric = Literal["accuracy", "mse", "loss"]
Scalar = float | int | str


class SpecError(ValueError):
    """The spec does not fit the dataset (e.g. accuracy asked of a regression target);
    ``field`` names the part of the spec at fault, dotted (``model.layers.3``)."""

    def __init__(self, message: str, field: str = "spec") -> None:
        super().__init__(message)
        self.field = field


class Limits(BaseModel):
    """Upper bounds on what one study may ask for; the service sets them from its settings."""

    max_trials: int = 10_000
    max_folds: int = 20
    max_epochs: int = 2_000
    max_layers: int = 8
    max_network_layers: int = 200  # every entry of model.layers, residual bodies included
    max_plugin_options_bytes: int = 4_096  # model.options as JSON
    max_width: int = 4_096
    max_batch_size: int = 65_536
    max_timeout_s: float = 30 * 86_400.0
    # Weights of one network, counted once the dataset fixes the input and output widths
    # (the service checks it at submission): 50M float32 parameters are 200 MB per trial.
    max_parameters: int = 50_000_000


# For specs validated once already (stored ones, model files): no bound but the types'.
UNLIMITED = Limits(max_layers=2**31 - 1, max_width=2**31 - 1, max_network_layers=2**31 - 1)


def _limits(info: ValidationInfo) -> Limits:
    context = info.context or {}
    limits = context.get("limits")
    return limits if isinstance(limits, Limits) else Limits()


def at_most(limit: str) -> AfterValidator:
    """Check a value against ``Limits.<limit>`` of the validation context."""

    def check(value: Any, info: ValidationInfo) -> Any:
        bound = getattr(_limits(info), limit)
        if value is not None and value > bound:
            raise ValueError(f"{info.field_name} must be ≤ {bound:g}")
        return value

    return AfterValidator(check)


class _Strict(BaseModel):
    # JSON has no NaN/Infinity, but Python's parser accepts them: refuse them in every number.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Range(_Strict):
    """A continuous or integer interval ``[low, high]``, sampled log-uniformly if ``log``."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not math.isfinite(self.low) or not math.isfinite(self.high):
            raise ValueError("low and high must be finite numbers")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be < high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={self.low:g}")
        return self


def _parse_param(value: Any) -> Range | list[Scalar] | Scalar:
    """Dispatch on the JSON shape, so that an error speaks of the shape the user meant."""
    if isinstance(value, Range):
        return value
    if isinstance(value, dict):
        try:
            return Range.model_validate(value)
        except ValidationError as exc:
            raise ValueError("; ".join(_range_problem(e) for e in exc.errors())) from None
    if isinstance(value, list):
        if not all(_is_scalar(v) for v in value):
            raise ValueError("a list of choices may hold only numbers or strings")
        return value
    if _is_scalar(value):
        return value
    raise ValueError("must be a range {low, high, log}, a list of choices, or a number")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float | str) and not isinstance(value, bool)


def _range_problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# A search-space entry: a range, a list of choices, or one fixed value.
Param = Range | list[Scalar] | Scalar


@dataclass(frozen=True)
class Domain:
    """Where a hyperparameter's values may lie; ``integer`` params need whole numbers."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open or math.isinf(self.high) else "]"
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"


DOMAINS: dict[str, Domain] = {
    "weight_decay": Domain(0.0),
    "l1": Domain(0.0),
    "dropout": Domain(0.0, 1.0, high_open=True),
    "bn_momentum": Domain(0.0, 1.0, low_open=True),
    "patience": Domain(1, integer=True),
    "lr": Domain(0.0, low_open=True),
    "batch_size": Domain(1, integer=True),
}
OPTIMIZERS = ("adam", "sgd")
# Search-space entries that take a range, a list of choices or a number (``hidden`` is apart).
SEARCHABLE = (*DOMAINS, "optimizer")
# The five regularization hyperparameters: always searched or fixed, never absent.
CORE = ("weight_decay", "l1", "dropout", "bn_momentum", "patience")


def check_domain(domain: Domain, value: Param | None) -> Param | None:
    """``value`` (a range, choices or a number) if all its points lie in ``domain``."""
    if value is None:
        return None
    if isinstance(value, Range):
        points: list[Scalar] = [value.low, value.high]
    elif isinstance(value, list):
        if not value:
            raise ValueError("a list of choices must not be empty")
        points = value
    else:
        points = [value]
    for point in points:
        if isinstance(point, str | bool):
            raise ValueError(f"must be {domain.describe()}, got {point!r}")
        if isinstance(point, int) and abs(point) > 2**63:  # JSON integers have no bound
            raise ValueError(f"must be {domain.describe()}, got an integer beyond ±2^63")
        if not math.isfinite(point):
            raise ValueError(f"must be a finite number, got {point:g}")
        if not domain.contains(point):
            raise ValueError(f"must be {domain.describe()}, got {point:g}")
        if domain.integer and float(point) != int(point):
            raise ValueError(f"must be {domain.describe()}, got {point:g}")
    return value


class SearchSpace(_Strict):
    """What Optuna searches. Each entry is a :class:`Range`, a list of choices or a number.

    The five regularization parameters default to the ranges of the product spec; ``lr``,
    ``batch_size``, ``optimizer`` and ``hidden`` (a list of layer-width lists) are searched
    only when given, otherwise the ``training``/``model`` values hold. ``dropout.<group>``
    is a dropout group's own range (default: the ``dropout`` range).
    """

    weight_decay: Param = Range(low=1e-6, high=1e-1, log=True)
    l1: Param = Range(low=1e-7, high=1e-3, log=True)
    dropout: Param = Range(low=0.0, high=0.7)
    bn_momentum: Param = Range(low=0.01, high=0.99)
    patience: Param = Range(low=2, high=20)
    lr: Param | None = None
    batch_size: Param | None = None
    optimizer: Param | None = None
    hidden: list[list[Annotated[int, Field(ge=1)]]] | None = None
    groups: dict[str, Param] = Field(
        default_factory=dict, description="dropout groups' own ranges, given as dropout.<group>"
    )

    @field_validator(*SEARCHABLE, mode="wrap")
    @classmethod
    def _parse(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Param | None:
        # Our own dispatch instead of pydantic's union errors, which list every branch.
        if value is None and info.field_name in CORE:
            # A trial needs a value for each of the five: null would fail every trial.
            raise ValueError(
                "must be a range {low, high, log}, a list of choices, or a number, not null "
                "(leave it out for the default range)"
            )
        return None if value is None else _parse_param(value)

    @field_validator(*DOMAINS)
    @classmethod
    def _in_domain(cls, value: Param | None, info: ValidationInfo) -> Param | None:
        return check_domain(DOMAINS[info.field_name or ""], value)

    @model_validator(mode="before")
    @classmethod
    def _gather_groups(cls, data: Any) -> Any:
        # ``dropout.<group>`` keys are gathered into ``groups``; any other unknown key is
        # refused at its own place (extra="forbid").
        if not isinstance(data, dict):
            return data
        data = dict(data)
        groups = dict(data.pop("groups", None) or {})
        for key in [k for k in data if isinstance(k, str) and k.startswith("dropout.")]:
            groups[key.removeprefix("dropout.")] = data.pop(key)
        return data | ({"groups": groups} if groups else {})

    @field_validator("groups", mode="before")
    @classmethod
    def _group_ranges(cls, value: Any) -> dict[str, Param]:
        if not isinstance(value, dict):
            raise ValueError("dropout group ranges are written 'dropout.<group>'")
        parsed: dict[str, Param] = {}
        for group, entry in value.items():
            if not re.fullmatch(GROUP_NAME, str(group)):
                raise ValueError(
                    f"dropout.{group}: a group is a letter, then letters, digits or _ (≤ 32)"
                )
            try:
                checked = check_domain(DOMAINS["dropout"], _parse_param(entry))
            except ValueError as exc:
                raise ValueError(f"dropout.{group}: {exc}") from None
            assert checked is not None
            parsed[str(group)] = checked
        return parsed

    @model_serializer(mode="wrap")
    def _flat_groups(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return data | {f"dropout.{g}": v for g, v in data.pop("groups", {}).items()}

    def group_dropout(self, group: str) -> Param:
        """The range of ``dropout.<group>``: its own entry if given, else ``dropout``'s."""
        return self.groups.get(group, self.dropout)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: Param | None) -> Param | None:
        choices = value if isinstance(value, list) else [value]
        if value is not None and (
            isinstance(value, Range) or any(c not in OPTIMIZERS for c in choices)
        ):
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)} or a list of them")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_limit(cls, value: Param | None, info: ValidationInfo) -> Param | None:
        limit = _limits(info).max_batch_size
        if max(_points(value), default=0) > limit:
            raise ValueError(f"batch_size must be ≤ {limit}")
        return value

    @field_validator("hidden")
    @classmethod
    def _hidden_limits(cls, value: list[list[int]] | None, info: ValidationInfo) -> Any:
        if value is not None:
            if not value:
                raise ValueError("a list of choices must not be empty")
            for choice in value:
                _check_widths(choice, _limits(info))
        return value


def _points(value: Param | None) -> list[float]:
    if isinstance(value, Range):
        return [value.low, value.high]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int | float)]
    if isinstance(value, int | float):
        return [value]
    return []


def _check_widths(widths: list[int], limits: Limits) -> None:
    if len(widths) > limits.max_layers:
        raise ValueError(f"at most {limits.max_layers} layers, got {len(widths)}")
    if any(w > limits.max_width for w in widths):
        raise ValueError(f"layer widths must be ≤ {limits.max_width}")


MAX_KERNEL = 64
MAX_STRIDE = 16
MAX_NESTING = 8  # residuals inside residuals
GROUP_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
# An entry point's name: no dots, colons, slashes or shell characters, so that it can only
# ever name an installed entry point, never a module path.
PLUGIN_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class LinearLayer(_Strict):
    """``nn.Linear`` on a flat input; the last layer leaves ``out`` out (the data's outputs)."""

    type: Literal["linear"]
    out: Annotated[int | None, Field(ge=1), at_most("max_width")] = None


class ConvLayer(_Strict):
    """``nn.Conv1d`` on ``(C, L)`` or ``nn.Conv2d`` on ``(C, H, W)``; ``padding "same"`` is
    ⌊kernel/2⌋ on each side (an odd kernel at stride 1 keeps the size)."""

    type: Literal["conv1d", "conv2d"]
    out: Annotated[int, Field(ge=1), at_most("max_width")]
    kernel: int = Field(ge=1, le=MAX_KERNEL)
    stride: int = Field(1, ge=1, le=MAX_STRIDE)
    padding: Literal["same"] | Annotated[int, Field(ge=0, le=MAX_KERNEL)] = "same"


class NormLayer(_Strict):
    """BatchNorm over the features (rank 1) or the channels (rank 2 and 3)."""

    type: Literal["batchnorm"]


class DropoutLayer(_Strict):
    """Inverted dropout; a ``group`` has its own p (``dropout.<group>``), else ``dropout``."""

    type: Literal["dropout"]
    group: str | None = Field(None, pattern=GROUP_NAME)


class ActivationLayer(_Strict):
    type: Literal["relu", "gelu", "tanh", "sigmoid"]


class LeakyReLULayer(_Strict):
    type: Literal["leaky_relu"]
    slope: float = Field(0.01, ge=0, le=1)


class PoolLayer(_Strict):
    """Max or average pooling over ``(C, L)`` or ``(C, H, W)``; stride defaults to kernel."""

    type: Literal["maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"]
    kernel: int = Field(ge=1, le=MAX_KERNEL)
    stride: int | None = Field(None, ge=1, le=MAX_KERNEL)


class ShapeLayer(_Strict):
    """``global_avgpool``: the mean over positions, ``(C, …)`` → ``(C,)``; ``flatten``."""

    type: Literal["global_avgpool", "flatten"]


class ResidualLayer(_Strict):
    """``x + f(x)``, ``f`` the ``layers`` inside, whose output shape must be the input's."""

    type: Literal["residual"]
    layers: list[Layer] = Field(min_length=1)


Layer = Annotated[
    LinearLayer
    | ConvLayer
    | NormLayer
    | DropoutLayer
    | ActivationLayer
    | LeakyReLULayer
    | PoolLayer
    | ShapeLayer
    | ResidualLayer,
    Field(discriminator="type"),
]
ResidualLayer.model_rebuild()


def _count_layers(layers: list[Any], depth: int = 0) -> int:
    if depth > MAX_NESTING:
        raise ValueError(f"residuals may nest at most {MAX_NESTING} deep")
    return sum(
        1 + (_count_layers(x.layers, depth + 1) if isinstance(x, ResidualLayer) else 0)
        for x in layers
    )


def dropout_groups(layers: list[Any]) -> list[str]:
    """The dropout groups a layer list names, in order of first appearance."""
    seen: list[str] = []
    for layer in layers:
        if isinstance(layer, ResidualLayer):
            seen += [g for g in dropout_groups(layer.layers) if g not in seen]
        elif isinstance(layer, DropoutLayer) and layer.group and layer.group not in seen:
            seen.append(layer.group)
    return seen


def has_shared_dropout(layers: list[Any]) -> bool:
    """Whether a layer list has a dropout without a group (it takes ``dropout``)."""
    return any(
        (isinstance(x, DropoutLayer) and x.group is None)
        or (isinstance(x, ResidualLayer) and has_shared_dropout(x.layers))
        for x in layers
    )


JSONValue = str | int | float | bool | None | list[Any] | dict[str, Any]


class ModelSpec(_Strict):
    """The network: a built-in template, a declarative ``layers`` stack, or a ``plugin``.

    ``mlp``: per hidden layer Linear → BatchNorm1d → ReLU → Dropout, then a Linear head;
    ``hidden: []`` is a linear model. ``cnn``: per entry of ``channels`` Conv (``kernel_size``,
    ``stride``, padding ⌊kernel/2⌋) → BatchNorm → ReLU → Dropout, flatten, then the MLP head.
    Both are layer stacks under the hood (:mod:`trainer.layers`). ``dropout_groups:
    "per_layer"`` gives each of a template's dropouts its own p (groups ``layer1``, …).
    ``layers``: the list of ``layers``, checked against the data's shape at submission.
    ``plugin``: ``name`` is an entry point of the group ``regtune.networks`` installed on the
    API host and the workers, called with ``options`` as keyword arguments.
    """

    kind: Literal["mlp", "cnn", "layers", "plugin"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1)]] = [256, 256]
    batch_norm: bool = True
    channels: list[Annotated[int, Field(ge=1)]] = [32, 64]
    kernel_size: int = Field(3, ge=1, le=15)
    stride: int = Field(2, ge=1, le=4)
    dropout_groups: Literal["shared", "per_layer"] = "shared"
    layers: list[Layer] | None = None
    name: str | None = Field(None, pattern=PLUGIN_NAME)
    options: dict[str, JSONValue] = {}

    @field_validator("hidden", "channels")
    @classmethod
    def _widths(cls, value: list[int], info: ValidationInfo) -> list[int]:
        _check_widths(value, _limits(info))
        return value

    @field_validator("layers")
    @classmethod
    def _layer_count(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        limit = _limits(info).max_network_layers
        if value is not None and (count := _count_layers(value)) > limit:
            raise ValueError(f"at most {limit} layers (residual bodies included), got {count}")
        return value

    @field_validator("options")
    @classmethod
    def _options_size(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limit = _limits(info).max_plugin_options_bytes
        if len(json.dumps(value)) > limit:
            raise ValueError(f"must be at most {limit} bytes of JSON")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> ModelSpec:
        if self.kind == "layers" and not self.layers:
            raise ValueError("model.kind 'layers' needs model.layers, a non-empty list")
        if self.kind != "layers" and self.layers is not None:
            raise ValueError(f"model.layers is for model.kind 'layers', not {self.kind!r}")
        if self.kind == "plugin" and self.name is None:
            raise ValueError("model.kind 'plugin' needs model.name, an installed plugin's name")
        if self.kind != "plugin" and (self.name is not None or self.options):
            raise ValueError(f"model.name and model.options are for 'plugin', not {self.kind!r}")
        return self

    def groups(self, depth: int | None = None) -> list[str]:
        """The dropout groups of the network (a template's for ``depth`` hidden layers)."""
        if self.kind == "layers":
            return dropout_groups(self.layers or [])
        if self.kind == "plugin" or self.dropout_groups == "shared":
            return []
        blocks = len(self.channels) if self.kind == "cnn" else 0
        hidden = len(self.hidden) if depth is None else depth
        return [f"layer{i + 1}" for i in range(blocks + hidden)]

    def shares_dropout(self) -> bool:
        """Whether some dropout takes the shared ``dropout`` (not a group's own p)."""
        if self.kind == "layers":
            return has_shared_dropout(self.layers or [])
        return self.kind == "plugin" or self.dropout_groups == "shared"


class TrainingSpec(_Strict):
    """Fixed training settings (any of ``lr``, ``batch_size``, ``optimizer`` may be searched)."""

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    batch_size: Annotated[int, Field(ge=1), at_most("max_batch_size")] = 64
    max_epochs: Annotated[int, Field(ge=1), at_most("max_epochs")] = 100
    l2_mode: Literal["coupled", "decoupled"] = "coupled"
    min_delta: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient L2 norm")
    regularize_bias_and_bn: bool = Field(
        False, description="apply L2/L1 to biases and BatchNorm affine parameters as well"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16: forward passes under bfloat16 autocast (GPUs with bf16 tensor cores); "
        "weights, optimizer state and losses stay float32",
    )


class CVSpec(_Strict):
    """k-fold CV; ``test_fraction`` > 0 holds out a test split that the search never sees."""

    folds: Annotated[int, Field(ge=2), at_most("max_folds")] = 5
    shuffle: bool = True
    inner_validation: float = Field(0.1, gt=0, le=0.5)
    test_fraction: float = Field(0.0, ge=0, le=0.5)


class ObjectiveSpec(_Strict):
    """``accuracy`` (classification, maximized), ``mse`` (regression), ``loss`` (minimized)."""

    metric: Metric | None = None


class SamplerSpec(_Strict):
    kind: Literal["tpe", "random", "gp", "cmaes", "grid"] = "tpe"
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE/GP model")
    grid_points: int = Field(5, ge=2, le=100, description="grid values per range (grid only)")


class PrunerSpec(_Strict):
    kind: Literal["median", "hyperband", "wilcoxon", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="median: trials before pruning starts")
    n_warmup_steps: int | None = Field(
        None, ge=0, description="median: epochs before pruning; default max(5, max_epochs / 10)"
    )
    reduction_factor: int = Field(3, ge=2, description="hyperband")
    p_threshold: float = Field(0.1, gt=0, lt=1, description="wilcoxon")

    @property
    def between_folds(self) -> bool:
        """Whether it prunes between folds (Wilcoxon: each fold a paired instance), so that
        folds train one after another instead of in lockstep, one trial at a time."""
        return self.kind == "wilcoxon"


class WarmStartSpec(_Strict):
    """Start from an earlier study of the same tenant: its ``top`` best completed trials'
    parameters are the new study's first trials (those outside the new search space dropped).
    Only the service can resolve ``study``; ``regtune tune`` refuses a warm start.
    """

    study: str = Field(min_length=1, max_length=200, description="id of an earlier study")
    top: int = Field(5, ge=1, le=100, description="how many of its best trials to enqueue")

    @field_validator("study")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("study must not contain control characters")
        return value


class FinalModelSpec(_Strict):
    """What the model file holds once the study completes: always the best configuration
    retrained on all non-test rows; with ``ensemble``, also its K fold models."""

    ensemble: bool = Field(
        False,
        description="also store the best configuration's K fold models (retrained as its "
        "cross-validation trained them) for prediction by their average; K more trainings",
    )


class StudySpec(_Strict):
    """A whole study: data, model, training, search space, CV, objective, sampler, pruner."""

    name: str | None = Field(None, min_length=1, max_length=200)
    dataset: str = Field(
        min_length=1,
        max_length=200,
        description="'builtin:NAME' (mnist1d also 'builtin:mnist1d:SIZE') or an uploaded id",
    )
    task: Task | None = None
    n_trials: Annotated[int, Field(ge=1), at_most("max_trials")] = 50
    timeout_s: Annotated[float | None, Field(gt=0), at_most("max_timeout_s")] = None
    seed: int = Field(0, ge=0, lt=2**32)
    model: ModelSpec = ModelSpec()
    training: TrainingSpec = TrainingSpec()
    search_space: SearchSpace = SearchSpace()
    cv: CVSpec = CVSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    warm_start: WarmStartSpec | None = None
    final_model: FinalModelSpec = FinalModelSpec()

    @field_validator("name", "dataset")
    @classmethod
    def _no_control_characters(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A NUL cannot be stored in PostgreSQL text; newlines and escapes garble logs.
        for i, char in enumerate(value or ""):
            if unicodedata.category(char) == "Cc":
                raise ValueError(
                    f"{info.field_name} must not contain control characters, "
                    f"got {char!r} at position {i}"
                )
        return value

    @model_validator(mode="after")
    def _metric_fits_task(self) -> StudySpec:
        metric = self.objective.metric
        if self.task == "regression" and metric == "accuracy":
            raise ValueError("objective.metric 'accuracy' needs task 'classification'")
        if self.task == "classification" and metric == "mse":
            raise ValueError("objective.metric 'mse' needs task 'regression'")
        return self

    @model_validator(mode="after")
    def _search_fits_network(self) -> StudySpec:
        model, space = self.model, self.search_space
        if space.hidden is not None and model.kind in ("layers", "plugin"):
            raise ValueError(
                f"search_space.hidden searches a template's widths; model.kind {model.kind!r} "
                "fixes its own (give the widths in the network)"
            )
        depth = max((len(h) for h in space.hidden or [model.hidden]), default=0)
        groups = model.groups(depth)
        for group in space.groups:
            if group not in groups:
                named = ", ".join(groups) or "none"
                raise ValueError(
                    f"search_space.dropout.{group}: the network has no dropout group "
                    f"{group!r} (its groups: {named})"
                )
        return self


def stored_model(spec: dict[str, Any]) -> ModelSpec:
    """The ``model`` of a spec stored as JSON (validated at submission, under its limits)."""
    return ModelSpec.model_validate(spec.get("model") or {}, context={"limits": UNLIMITED})


def default_metric(task: Task) -> Metric:
    return "accuracy" if task == "classification" else "mse"


def metric_direction(metric: Metric) -> Literal["maximize", "minimize"]:
    return "maximize" if metric == "accuracy" else "minimize"
