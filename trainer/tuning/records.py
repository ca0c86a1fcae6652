"""What a trial records next to its value: one typed record, stored as Optuna user attributes.

Optuna keeps a trial's extras as a dict of JSON values (``user_attrs``). Every module of
regtune reads and writes them through :class:`TrialRecord`, so a field has one name, one
type and one meaning everywhere (the engine that writes it, the API, the report, the refit),
and :class:`BestTrial` is the one summary of a study's best trial (``GET /v1/studies/{id}``
and ``regtune tune --json`` alike), inside :class:`StudyResult`, what a finished study shows.
How trials are shown is ruled here too: ``LISTED``, the attributes a trial list fetches, and
:func:`best_first`, the one order of trials by value (the API, the report and the CLI).
:class:`SplitRows` is a study's protocol as rows (``GET /v1/studies/{id}/splits``, ``regtune
splits``, ``regtune tune --splits``), to score a baseline in the very same folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:  # the HTTP client reads these records: it must not load torch or Optuna
    from optuna.trial import FrozenTrial

    from trainer.data.splits import Split
    from trainer.engines.results import CVResult
    from trainer.engines.trial_config import TrialConfig

SIGNIFICANT_DIGITS = 5


class HasUserAttrs(Protocol):
    """An Optuna trial, live (``optuna.Trial``) or frozen (``FrozenTrial``)."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...


class WritableTrial(HasUserAttrs, Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


def compact(values: list[float]) -> list[float]:
    """Curves rounded to a few significant digits: small in storage, exact enough to plot."""
    return [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values]


@dataclass(frozen=True)
class TrialRecord:
    """A trial's user attributes; None: not recorded (yet, or for this kind of trial)."""

    config: dict[str, Any] | None = None  # the resolved configuration (hyperparameters)
    metric: str | None = None
    fold_scores: list[float] | None = None
    cv_mean: float | None = None
    cv_std: float | None = None
    best_epochs: list[int] | None = None  # per fold, from 0
    epochs: list[int] | None = None  # per fold, trained
    train_loss: list[list[float]] | None = None  # per fold and epoch
    val_loss: list[list[float]] | None = None
    l1_sparsity: float | None = None  # fraction of regularized weights with |θ| < 1e-3
    n_params: int | None = None
    # Parameters with |θ| ≥ 1e-3 at the kept epoch, mean over folds (regularizers.nonzero).
    nonzero_params: float | None = None
    wall_time_s: float | None = None
    diagnosis: str | None = None  # of the trial (trainer.engines.diagnosis)
    fold_diagnoses: list[str] | None = None
    engine: str | None = None  # "population" or "per-trial"
    engine_note: str | None = None  # why the trial did not train stacked
    fail_reason: str | None = None
    warm_start: str | None = None  # the earlier study and trial it repeats

    @classmethod
    def of(cls, trial: HasUserAttrs) -> TrialRecord:
        """The record of ``trial`` (attributes of other names are not regtune's: ignored)."""
        known = FIELDS.keys()
        return cls(**{k: v for k, v in trial.user_attrs.items() if k in known})

    @classmethod
    def of_result(
        cls, result: CVResult, config: TrialConfig, engine: str, note: str | None = None
    ) -> TrialRecord:
        """What a trial records once cross-validated: scores, curves, diagnosis, config."""
        folds = result.folds
        return cls(
            config=config.hyperparameters(),
            metric=result.metric,
            fold_scores=result.scores,
            cv_mean=result.mean,
            cv_std=result.std,
            best_epochs=[f.best_epoch for f in folds],
            epochs=[f.epochs for f in folds],
            train_loss=[compact(f.train_loss) for f in folds],
            val_loss=[compact(f.val_loss) for f in folds],
            l1_sparsity=float(np.mean([f.sparsity for f in folds])),
            n_params=result.n_params,
            nonzero_params=float(np.mean([f.nonzero_params for f in folds])),
            wall_time_s=result.wall_time_s,
            diagnosis=result.diagnosis,
            fold_diagnoses=[f.diagnosis for f in folds],
            engine=engine,
            engine_note=note,
        )

    def to_attrs(self) -> dict[str, Any]:
        """The recorded fields as Optuna user attributes (None fields left out)."""
        return {name: value for name in FIELDS if (value := getattr(self, name)) is not None}

    def write(self, trial: WritableTrial) -> None:
        for name, value in self.to_attrs().items():
            trial.set_user_attr(name, value)

    def fields_of(self, model: type[BaseModel]) -> dict[str, Any]:
        """The recorded fields that ``model`` (a response model) declares, by name."""
        return {name: getattr(self, name) for name in model.model_fields if name in FIELDS}

    def without_failure(self) -> TrialRecord:
        """The record a re-run starts from: everything but the failed attempt's reason."""
        return replace(self, fail_reason=None)


FIELDS = {f.name: f for f in fields(TrialRecord)}
# The attributes a trial list shows (fetched alone by the listing query).
LISTED = ("cv_std", "diagnosis", "fail_reason")


def best_first(direction: str) -> float:
    """The sign s for which ascending s·value puts the best value first: −1 when the study
    maximizes, +1 when it minimizes (the one ranking rule of the API, the report, the CLI)."""
    return -1.0 if direction == "maximize" else 1.0


class BestTrial(BaseModel):
    """A study's best trial: its value, parameters and what cross-validation measured."""

    number: int
    value: float
    params: dict[str, Any]
    config: dict[str, Any] | None
    fold_scores: list[float] | None
    cv_mean: float | None
    cv_std: float | None
    best_epochs: list[int] | None
    l1_sparsity: float | None
    diagnosis: str | None

    @classmethod
    def of(cls, trial: FrozenTrial) -> BestTrial:
        """``trial``, whose value is its metric (the first of a trade-off study's two)."""
        assert trial.values, "a best trial has a value"
        recorded = TrialRecord.of(trial).fields_of(cls)
        return cls(number=trial.number, value=trial.values[0], params=trial.params, **recorded)


class ParetoTrial(BaseModel):
    """A trial of a trade-off study's Pareto front: no other completed trial is as good on
    both objectives and better on one."""

    number: int
    values: list[float] = Field(description="[the metric, the trade-off (network size)]")
    params: dict[str, Any]
    fold_scores: list[float] | None
    cv_std: float | None

    @classmethod
    def of(cls, trial: FrozenTrial) -> ParetoTrial:
        assert trial.values is not None, "a Pareto trial is complete"
        recorded = TrialRecord.of(trial).fields_of(cls)
        return cls(number=trial.number, values=trial.values, params=trial.params, **recorded)


class StudyResult(BaseModel):
    """A study's result as the CLI shows it: ``regtune tune`` (its ``--json`` is this model)
    and ``regtune submit --wait`` render the same table from it."""

    study: str
    metric: str
    direction: str
    trials: dict[str, int]  # finished and pending trials by state, states with none left out
    best: BestTrial | None
    test_score: float | None
    trade_off: str | None = Field(
        None, description="the second objective, minimized (objective.trade_off), if any"
    )
    pareto: list[ParetoTrial] | None = Field(
        None, description="a trade-off study's Pareto front, best metric first"
    )
    chosen: int | None = Field(
        None, description="the trial refitted, where final_model.pick chose another than best"
    )


Rows = list[int]


class SplitRows(BaseModel):
    """A study's protocol as 0-based row indices into its dataset as stored (an upload after
    ``missing_target=drop``): fold k trains on every row that is neither test nor in
    ``folds[k]``, of which ``inner_validation[k]`` drive its early stopping."""

    test: Rows = Field(description="the held-out test rows ([] without test_fraction)")
    folds: list[Rows] = Field(description="per fold, the rows it scores")
    inner_validation: list[Rows] = Field(
        description="per fold, the rows of its training part that its early stopping watches"
    )

    @classmethod
    def of(cls, test: np.ndarray, splits: Sequence[Split]) -> SplitRows:
        """The rows of a protocol's test split and folds (:mod:`trainer.data.splits`)."""
        return cls(
            test=test.tolist(),
            folds=[split.score.tolist() for split in splits],
            inner_validation=[split.val.tolist() for split in splits],
        )
