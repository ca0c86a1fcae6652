"""The tuned model: a study's chosen trial retrained on every non-test row, scored once on the
held-out test rows, and packed as a model file (:mod:`trainer.model_file`).

The retraining itself is :func:`trainer.tuning.refit.refit`; this module decides what it
retrains (the trial's configuration, for the folds' median best epoch count, with the
trial's seed) and what the file holds beside the network (the trial's CV scores and, with
``final_model.ensemble``, its K fold models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import torch

from trainer.data.datasets import Dataset
from trainer.engines.per_trial import fold_ensemble
from trainer.engines.results import DivergedError, FittedModel
from trainer.engines.trial_config import TrialConfig
from trainer.model_file import packing
from trainer.model_file.model_format import ModelFile
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.objective import fold_schedule
from trainer.tuning.records import TrialRecord
from trainer.tuning.refit import refit
from trainer.tuning.space import trial_seed


def refit_epochs(best_epochs: Sequence[int]) -> int:
    """How long the refit trains: the median over folds of the best epoch, as a count.

    ``best_epochs`` are 0-based (a fold whose best weights came after its first epoch says
    0), so the count is the median + 1; the median of an even number of folds is rounded
    (half to even). The median, not the mean: one fold that stopped late does not drag the
    refit along.
    """
    return max(1, round(float(np.median(best_epochs))) + 1)


def refit_trial(
    spec: StudySpec,
    dataset: Dataset,
    protocol: CVProtocol,
    trial: optuna.trial.FrozenTrial,
    *,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> FittedModel:
    """Retrain ``trial``'s configuration on all non-test rows and score it on the test rows.

    It trains for :func:`refit_epochs` epochs (the median over folds of the best epoch), with
    the trial's own seed unless ``seed`` is given (to see how much the test score varies
    between refits).
    """
    record = TrialRecord.of(trial)
    assert record.config is not None and record.best_epochs is not None, "a completed trial"
    config = TrialConfig.from_values(spec, record.config)
    epochs = refit_epochs(record.best_epochs)
    return refit(
        dataset,
        config,
        protocol.pool,
        protocol.test,
        metric=protocol.metric,
        epochs=epochs,
        device=device,
        seed=trial_seed(spec.seed, trial.number) if seed is None else seed,
    )


def final_model(
    spec: StudySpec,
    dataset: Dataset,
    protocol: CVProtocol,
    trial: optuna.trial.FrozenTrial,
    *,
    device: torch.device | str = "cpu",
    study: dict[str, Any] | None = None,
) -> tuple[FittedModel, ModelFile]:
    """:func:`refit_trial`, and the refitted model packed as a file (:mod:`trainer.model_file`)
    with the trial's CV scores, its test score and ``study`` metadata; with
    ``spec.final_model.ensemble`` the file also holds the trial's K fold models. A fold
    that diverges when retrained costs the ensemble, not the model: the file then says why
    in ``ensemble_error``."""
    fitted = refit_trial(spec, dataset, protocol, trial, device=device)
    ensemble, ensemble_error = None, None
    if spec.final_model.ensemble:
        try:
            ensemble = fold_ensemble(
                dataset,
                fitted.config,
                protocol.splits,
                protocol.test,
                metric=protocol.metric,
                device=device,
                seed=trial_seed(spec.seed, trial.number),
                schedule=fold_schedule(spec),
            )
        except DivergedError as exc:
            ensemble_error = f"the fold ensemble could not be built: {exc}"
    record = TrialRecord.of(trial)
    packed = packing.pack(
        fitted,
        dataset,
        metric=protocol.metric,
        n_train=len(protocol.pool),
        n_test=len(protocol.test),
        cv={"cv_mean": record.cv_mean, "cv_std": record.cv_std, "fold_scores": record.fold_scores},
        trial={
            "number": trial.number,
            "params": trial.params,
            "best_epochs": record.best_epochs,
            "diagnosis": record.diagnosis,
        },
        study=study,
        ensemble=ensemble,
        ensemble_error=ensemble_error,
    )
    return fitted, packed
