"""Study specifications: the typed, validated description of one tuning study.

The same pydantic models validate a spec file for ``regtune tune`` and a request body at
the service's HTTP boundary, so an error names the offending field the same way in both.
The operator's limits come as validation context (``trainer.specs.spec_base``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from trainer.specs.network_spec import (
    GROUP_NAME,
    ModelSpec,
)
from trainer.specs.spec_base import (
    UNLIMITED,
    Limits,
    SpecError,
    Strict,
    _limits,
    at_most,
    check_widths,
    field_problem,
)

__all__ = [
    "UNLIMITED",
    "Limits",
    "ModelSpec",
    "SpecError",
    "StudySpec",
    "at_most",
]

Task = Literal["classification", "regression"]
StrictModel = TypeVar("StrictModel", bound=Strict)
Metric = Literal["accuracy", "mse", "loss"]
Scalar = float | int | str


class Range(Strict):
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


def _validated(model: type[StrictModel], value: dict[str, Any]) -> StrictModel:
    """``value`` as ``model``, or a ValueError listing each field's problem on one line."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValueError("; ".join(field_problem(e) for e in exc.errors())) from None


def _parse_param(value: Any) -> Range | list[Scalar] | Scalar:
    """Dispatch on the JSON shape, so that an error speaks of the shape the user meant."""
    if isinstance(value, Range):
        return value
    if isinstance(value, dict):
        return _validated(Range, value)
    if isinstance(value, list):
        if not all(_is_scalar(v) for v in value):
            raise ValueError("a list of choices may hold only numbers or strings")
        return value
    if _is_scalar(value):
        return value
    raise ValueError("must be a range {low, high, log}, a list of choices, or a number")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float | str) and not isinstance(value, bool)


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
    "max_norm": Domain(0.0, low_open=True),
    "width": Domain(0.0, 1.0, low_open=True),
}
OPTIMIZERS = ("adam", "sgd")
# Search-space entries that take a range, a list of choices or a number (``hidden`` is apart).
SEARCHABLE = (*DOMAINS, "optimizer")
# The five regularization hyperparameters: always searched or fixed, never absent.
CORE = ("weight_decay", "l1", "dropout", "bn_momentum", "patience")
# Data augmentations, searched as ``augment.<name>`` and off unless given: noise σ, mixup α,
# shift s (positions), flip p, rotate (degrees), scale (a fraction of the size).
AUGMENT_DOMAINS: dict[str, Domain] = {
    "noise": Domain(0.0),
    "mixup": Domain(0.0, low_open=True),
    "shift": Domain(0, integer=True),
    "flip": Domain(0.0, 1.0),
    "rotate": Domain(0.0, 180.0),
    "scale": Domain(0.0, 1.0, high_open=True),
}
AUGMENT = "augment."  # an augmentation's prefix in a search space and a trial's parameters


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


def domain(name: str) -> Domain | None:
    """The domain of a searched parameter by its Optuna name (``augment.<name>`` included)."""
    if name.startswith(AUGMENT):
        return AUGMENT_DOMAINS.get(name.removeprefix(AUGMENT))
    return DOMAINS.get(name)


class Augment(Strict):
    """Data augmentation of the training rows, each a range, choices or a number like any
    search-space entry, and off when absent: ``noise`` σ, ``mixup`` α, ``shift`` s, ``flip``
    p, ``rotate`` degrees, ``scale`` fraction (what each does: ``trainer.engines.augmentation``).
    """

    noise: Param | None = None
    mixup: Param | None = None
    shift: Param | None = None
    flip: Param | None = None
    rotate: Param | None = None
    scale: Param | None = None

    @field_validator(*AUGMENT_DOMAINS, mode="wrap")
    @classmethod
    def _parse(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Param | None:
        if value is None:
            return None
        return check_domain(AUGMENT_DOMAINS[info.field_name or ""], _parse_param(value))

    def given(self) -> dict[str, Param]:
        """The augmentations given, by their search-space names (``augment.noise``, …)."""
        entries = {name: getattr(self, name) for name in AUGMENT_DOMAINS}
        return {AUGMENT + name: e for name, e in entries.items() if e is not None}


class SearchSpace(Strict):
    """What Optuna searches. Each entry is a :class:`Range`, a list of choices or a number.

    The five regularization parameters default to the ranges of the product spec; ``lr``,
    ``batch_size``, ``optimizer`` and ``hidden`` (a list of layer-width lists) are searched
    only when given, otherwise the ``training``/``model`` values hold. ``dropout.<group>``
    is a dropout group's own range (default: the ``dropout`` range). ``max_norm`` c > 0, the
    max-norm constraint (after every optimizer step each unit's incoming weight vector is
    rescaled to norm ≤ c), is off unless given. ``width`` in (0, 1], the model's size (a
    multiplier on every hidden width, :func:`trainer.nets.networks.narrowed`), likewise.
    ``augment.<name>`` (:class:`Augment`, also nested as ``augment``) is a data
    augmentation, off unless given.
    """

    weight_decay: Param = Range(low=1e-6, high=1e-1, log=True)
    l1: Param = Range(low=1e-7, high=1e-3, log=True)
    dropout: Param = Range(low=0.0, high=0.7)
    bn_momentum: Param = Range(low=0.01, high=0.99)
    patience: Param = Range(low=2, high=20)
    lr: Param | None = None
    batch_size: Param | None = None
    optimizer: Param | None = None
    max_norm: Param | None = None
    width: Param | None = None
    hidden: list[list[Annotated[int, Field(ge=1)]]] | None = None
    groups: dict[str, Param] = Field(
        default_factory=dict, description="dropout groups' own ranges, given as dropout.<group>"
    )
    augment: Augment = Field(
        default_factory=Augment, description="data augmentations, given as augment.<name>"
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
        dotted = [k for k in data if isinstance(k, str) and k.startswith("dropout.")]
        gathered = {key.removeprefix("dropout."): data.pop(key) for key in dotted}
        groups = data.get("groups", {})
        if gathered and isinstance(groups, dict):
            data["groups"] = groups | gathered
        # Otherwise ``groups`` stays as given: its own validator refuses a non-mapping.
        dotted = [k for k in data if isinstance(k, str) and k.startswith(AUGMENT)]
        augment = {key.removeprefix(AUGMENT): data.pop(key) for key in dotted}
        nested = data.get("augment", {})
        if augment and isinstance(nested, dict):
            data["augment"] = nested | augment
        return data

    @field_validator("groups", mode="before")
    @classmethod
    def _group_ranges(cls, value: Any) -> dict[str, Param]:
        if not isinstance(value, dict):
            raise ValueError(
                f"must be an object of dropout groups' ranges, got {type(value).__name__} "
                "(dropout group ranges are written 'dropout.<group>')"
            )
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
        groups = {f"dropout.{g}": v for g, v in data.pop("groups", {}).items()}
        augment = data.pop("augment", None) or {}  # written as augment.<name>, if given
        return data | groups | {AUGMENT + n: v for n, v in augment.items() if v is not None}

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
                check_widths(choice, _limits(info))
        return value


def _points(value: Param | None) -> list[float]:
    if isinstance(value, Range):
        return [value.low, value.high]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int | float)]
    if isinstance(value, int | float):
        return [value]
    return []


class TrainingSpec(Strict):
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


class CVSpec(Strict):
    """k-fold CV; ``test_fraction`` > 0 holds out a test split that the search never sees."""

    folds: Annotated[int, Field(ge=2), at_most("max_folds")] = 5
    shuffle: bool = True
    inner_validation: float = Field(0.1, gt=0, le=0.5)
    test_fraction: float = Field(0.0, ge=0, le=0.5)


TradeOff = Literal["parameters", "nonzero_parameters"]


class ObjectiveSpec(Strict):
    """``accuracy`` (classification, maximized), ``mse`` (regression), ``loss`` (minimized).

    ``trade_off`` makes the study two-objective: the metric, and the network's size,
    minimized: ``parameters`` (the trial's parameter count) or ``nonzero_parameters`` (its
    parameters with |θ| ≥ 1e-3 at the kept epoch, mean over folds: what L1 buys). The study's
    result is then the Pareto front of the two (``trainer.tuning.trade_off``).
    """

    metric: Metric | None = None
    trade_off: TradeOff | None = Field(
        None,
        description="also minimize the network's size: 'parameters' or 'nonzero_parameters' "
        "(|θ| ≥ 1e-3 at the kept epoch, mean over folds); the study returns the Pareto front",
    )


# Samplers that search two objectives (a trade-off); CMA-ES searches one.
TWO_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "random", "gp", "grid")


class SamplerSpec(Strict):
    kind: Literal["tpe", "random", "gp", "cmaes", "grid", "nsga2"] = "tpe"
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE/GP model")
    grid_points: int = Field(5, ge=2, le=100, description="grid values per range (grid only)")
    population_size: int = Field(
        50, ge=2, le=10_000, description="trials per generation (nsga2 only)"
    )


class PrunerSpec(Strict):
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


class WarmStartSpec(Strict):
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


class Within(Strict):
    """``final_model.pick`` of a trade-off study: the smallest Pareto trial whose metric is
    within ``within`` of the best trial's (in the metric's units and direction)."""

    within: float = Field(ge=0, description="how much of the metric to give up, at most")


class FinalModelSpec(Strict):
    """What the model file holds once the study completes: always the chosen configuration
    (``pick``: the best by default) retrained on all non-test rows; with ``ensemble``, also
    its K fold models."""

    ensemble: bool = Field(
        False,
        description="also store the best configuration's K fold models (retrained as its "
        "cross-validation trained them) for prediction by their average; K more trainings",
    )
    pick: Literal["best"] | Within = Field(
        "best",
        description="the trial refitted: 'best' (by the metric), or {\"within\": d} (a "
        "trade-off study): the smallest Pareto trial whose metric is within d of the best's",
    )

    @field_validator("pick", mode="wrap")
    @classmethod
    def _parse_pick(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Our own dispatch instead of pydantic's union errors, which list every branch.
        if value == "best" or isinstance(value, Within):
            return value
        if isinstance(value, dict):
            return _validated(Within, value)
        raise ValueError(
            f'must be "best" or {{"within": d}}, d ≥ 0 in the metric\'s units, got {value!r}'
        )


class StudySpec(Strict):
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
    # Orders a tenant's own studies on shared workers (higher first); never another tenant's.
    priority: int = Field(0, ge=-1000, le=1000)
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
    def _trade_off_fits(self) -> StudySpec:
        trade_off, sampler = self.objective.trade_off, self.sampler.kind
        if trade_off is not None and sampler not in TWO_OBJECTIVE_SAMPLERS:
            raise ValueError(
                f"sampler.kind {sampler!r} searches one objective; objective.trade_off makes "
                f"two: use one of {list(TWO_OBJECTIVE_SAMPLERS)}"
            )
        if trade_off is not None and self.pruner.kind == "wilcoxon":
            raise ValueError(
                "pruner.kind 'wilcoxon' compares a trial with the single best one; "
                "objective.trade_off has a front of them: use median, hyperband or none"
            )
        if trade_off is None and isinstance(self.final_model.pick, Within):
            raise ValueError(
                "final_model.pick {'within': d} chooses among the Pareto trials of a "
                "trade-off: it needs objective.trade_off"
            )
        return self

    @model_validator(mode="after")
    def _search_fits_network(self) -> StudySpec:
        model, space = self.model, self.search_space
        if space.hidden is not None and model.kind in ("layers", "plugin"):
            raise ValueError(
                f"search_space.hidden searches a template's widths; model.kind {model.kind!r} "
                "fixes its own (give the widths in the network)"
            )
        if space.width is not None and model.kind == "plugin":
            raise ValueError(
                "search_space.width scales a template's or a layers stack's widths; a "
                "plugin's widths are its own code (give them in model.options)"
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


def default_metric(task: Task) -> Metric:
    return "accuracy" if task == "classification" else "mse"


def metric_direction(metric: Metric) -> Literal["maximize", "minimize"]:
    return "maximize" if metric == "accuracy" else "minimize"
