"""What every trial of a search trains on, and what may stop it: one value both engines take.

A search's trials differ only in their configuration; the spec, the dataset, the CV protocol
(:mod:`trainer.tuning.cv_protocol`), the device and the caller's rules for stopping are the
same for all of them, in the per-trial engine (:mod:`trainer.tuning.per_trial_search`) and in
the population engine (:mod:`trainer.tuning.population_search`) alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer.data.datasets import Dataset
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol


@dataclass(frozen=True)
class TrialTraining:
    """The trials' spec, dataset, CV protocol (folds and metric) and device.

    ``should_stop`` is polled after every epoch; a reason it answers (None: go on) interrupts
    the running trials (:class:`~trainer.tuning.trial_errors.TrialInterrupted`). Errors of the
    ``passthrough`` types (a caller's database errors) propagate unchanged; any other error of
    training fails its trials, with the reason, and the search goes on.
    """

    spec: StudySpec
    dataset: Dataset
    protocol: CVProtocol
    device: torch.device | str = "cpu"
    should_stop: Callable[[], str | None] | None = None
    passthrough: tuple[type[BaseException], ...] = ()

    def stop_reason(self) -> str | None:
        """Why the trials must stop now, if the caller says they must."""
        return self.should_stop() if self.should_stop is not None else None
