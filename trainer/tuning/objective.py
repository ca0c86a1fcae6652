"""The per-trial engine's Optuna objective: draw a configuration, cross-validate it, record it.

The search (:mod:`trainer.tuning.per_trial_search`) calls it for studies whose trials do not
stack, one trial at a time; it serves ``study.optimize`` as it is. :func:`fold_schedule` is how
the folds of such a trial (and of the final model's fold ensemble) follow one another.
"""

from __future__ import annotations

import optuna

from trainer.engines.per_trial import Schedule, cross_validate
from trainer.engines.results import DivergedError
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec
from trainer.tuning.optuna_internals import trial_id
from trainer.tuning.records import TrialRecord
from trainer.tuning.space import suggest, trial_seed
from trainer.tuning.trade_off import report, should_prune, told
from trainer.tuning.trial_errors import TrialFailed, TrialInterrupted, failure_reason
from trainer.tuning.trial_training import TrialTraining


def fold_schedule(spec: StudySpec) -> Schedule:
    """Folds one after another for the Wilcoxon pruner (it prunes between folds), else in
    lockstep (the median pruner compares epochs across all folds)."""
    return "sequential" if spec.pruner.between_folds else "lockstep"


class Objective:
    """``objective(trial) -> CV mean`` (and a trade-off's size: :func:`~trainer.tuning.trade_off.
    told`) for ``study.optimize`` or ask-and-tell.

    Lockstep folds report the fold-mean metric per epoch (for median/hyperband pruning and the
    dashboard's curves); with the Wilcoxon pruner folds run one after another and each fold's
    score is reported at step k, the paired instance that pruner compares against the best trial.
    ``training.should_stop`` is polled after every epoch; when it answers a reason the trial
    raises :class:`TrialInterrupted` (Optuna records it as failed, with that ``fail_reason``).
    Any other error of training fails the trial with ``fail_reason`` and raises
    :class:`TrialFailed` (catch it in ``study.optimize``), except the types in
    ``training.passthrough`` (a caller's database errors), which propagate unchanged.
    ``note`` says why the study trains per trial (recorded on every trial).
    """

    def __init__(self, training: TrialTraining, *, note: str | None = None) -> None:
        self.training = training
        self.schedule = fold_schedule(training.spec)
        self.note = note

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        training = self.training
        spec = training.spec
        config = TrialConfig.from_values(spec, suggest(trial, spec))
        TrialRecord(config=config.hyperparameters()).write(trial)
        lockstep = self.schedule == "lockstep"

        def prune(step: int, value: float) -> None:
            report(trial, step, value)
            if should_prune(trial):
                raise optuna.TrialPruned(f"pruned at step {step} with value {value:.5g}")

        def on_epoch(epoch: int, value: float) -> None:
            reason = training.stop_reason()
            if reason is not None:
                TrialRecord(fail_reason=reason).write(trial)
                raise TrialInterrupted(reason, trial_ids=[trial_id(trial)])
            if lockstep:
                prune(epoch, value)

        try:
            result = cross_validate(
                training.dataset,
                config,
                training.protocol.splits,
                metric=training.protocol.metric,
                device=training.device,
                seed=trial_seed(spec.seed, trial.number),
                schedule=self.schedule,
                on_epoch=on_epoch,
                on_fold=None if lockstep else prune,
            )
        except DivergedError as exc:
            TrialRecord(fail_reason=str(exc)).write(trial)
            raise
        except (TrialInterrupted, optuna.TrialPruned):
            raise
        except training.passthrough:
            raise
        except Exception as exc:
            TrialRecord(fail_reason=failure_reason(exc)).write(trial)
            raise TrialFailed(failure_reason(exc)) from exc
        record = TrialRecord.of_result(result, config, "per-trial", self.note)
        record.write(trial)
        return told(spec, record)
