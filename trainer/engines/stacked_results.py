"""What a stack's models have done, and what each trial's K models come to.

Per model, on the device: whether it is still training, whether it diverged, its own epoch
count, its early stopping (:class:`~trainer.engines.early_stopping.StoppingRule`, the rule
both engines use) and the score of its best epoch; on the host, its learning curves. A trial's
CV result is read from its folds' best epochs and curves (:meth:`StackedResults.result`,
assembled by :meth:`trainer.engines.folds.Fold.result` as the per-trial engine's is).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainer.engines.early_stopping import StoppingRule
from trainer.engines.folds import Fold
from trainer.engines.results import CVResult
from trainer.specs.study_spec import Metric, TrainingSpec


@dataclass(frozen=True)
class EpochTable:
    """One epoch of every model, read on the host in one transfer (lists of M)."""

    train_loss: list[float]
    val_loss: list[float]
    trained: list[bool]  # it trained this epoch
    active: list[bool]  # it trains on
    diverged: list[bool]  # a loss of it has ever been NaN/inf
    best_score: list[float]


class StackedResults:
    """The progress and record of M models trained by ``training``, scored by ``metric``."""

    def __init__(self, M: int, training: TrainingSpec, metric: Metric, device: torch.device):
        self.training, self.metric = training, metric
        self.active = torch.zeros(M, dtype=torch.bool, device=device)  # every row starts empty
        self.diverged = torch.zeros(M, dtype=torch.bool, device=device)
        self.epochs = torch.zeros(M, dtype=torch.long, device=device)
        self.stopping = StoppingRule(
            torch.zeros(M, dtype=torch.long, device=device), training.min_delta
        )
        self.best_score = torch.full((M,), math.nan, device=device)
        self.host_active = [False] * M
        self.train_curves: list[list[float]] = [[] for _ in range(M)]
        self.val_curves: list[list[float]] = [[] for _ in range(M)]

    def restart(self, rows: slice, patience: int) -> None:
        """Models ``rows`` start training, with ``patience``, nothing recorded yet."""
        self.active[rows], self.diverged[rows] = True, False
        self.stopping.restart(rows, patience)
        self.best_score[rows], self.epochs[rows] = math.nan, 0
        for r in range(rows.start, rows.stop):
            self.host_active[r] = True
            self.train_curves[r], self.val_curves[r] = [], []

    def stop(self, rows: slice) -> None:
        """Models ``rows`` train no more (pruned, or a fold of their trial diverged)."""
        self.active[rows] = False
        for r in range(rows.start, rows.stop):
            self.host_active[r] = False

    def end_epoch(
        self,
        train_loss: torch.Tensor,
        val_loss: torch.Tensor,
        score: torch.Tensor,
        *,
        unvalidated: torch.Tensor,
    ) -> tuple[torch.Tensor, EpochTable]:
        """Record the epoch of the models that trained: divergence (a NaN/inf loss), early
        stopping on ``val_loss`` (``unvalidated``: models without validation rows), the
        ``score`` of a new best epoch, the end of training (patience or ``max_epochs``
        spent). Returns the mask of the models that improved, and the epoch as the host reads
        it (the epoch's one host synchronisation), its curves recorded."""
        trained = self.active.clone()
        diverged = trained & ~(torch.isfinite(train_loss) & torch.isfinite(val_loss))
        self.diverged |= diverged
        improved = self.stopping.step(
            val_loss, self.epochs, trained & ~diverged, always=unvalidated
        )
        self.best_score = torch.where(improved, score, self.best_score)
        self.epochs += trained.long()
        out_of_epochs = self.epochs >= self.training.max_epochs
        self.active &= ~diverged & ~self.stopping.should_stop & ~out_of_epochs
        rows = [train_loss, val_loss, trained, self.active, self.diverged, self.best_score]
        train_host, val_host, trained_host, active_host, diverged_host, score_host = torch.stack(
            rows
        ).tolist()
        for r, was in enumerate(trained_host):
            if was:
                self.train_curves[r].append(train_host[r])
                self.val_curves[r].append(val_host[r])
            self.host_active[r] = bool(active_host[r])
        table = EpochTable(
            train_host,
            val_host,
            [bool(t) for t in trained_host],
            [bool(a) for a in active_host],
            [bool(d) for d in diverged_host],
            score_host,
        )
        return improved, table

    @torch.no_grad()
    def result(
        self,
        rows: slice,
        folds: Sequence[Fold],
        sparsity: torch.Tensor,
        nonzero: torch.Tensor,
        *,
        n_params: int,
        started: float,
    ) -> CVResult:
        """The CV result of the trial in ``rows`` (one per fold of ``folds``), from its folds'
        best epochs; ``sparsity`` and ``nonzero`` ``[K]`` of their best weights
        (:mod:`trainer.engines.regularizers`); ``started``: when it began
        (``time.perf_counter``)."""
        table = torch.stack(
            [
                self.best_score[rows].double(),
                self.stopping.best_epoch[rows].double(),
                self.epochs[rows].double(),
                self.stopping.should_stop[rows].double(),
                sparsity,
                nonzero.double(),
            ]
        ).tolist()
        scores, best_epochs, epochs, stopped, sparsities, nonzeros = table
        curves = range(rows.start, rows.stop)
        return CVResult(
            metric=self.metric,
            folds=[
                fold.result(
                    score=scores[k],
                    best_epoch=int(best_epochs[k]),
                    epochs=int(epochs[k]),
                    stopped_early=bool(stopped[k]),
                    train_loss=self.train_curves[r],
                    val_loss=self.val_curves[r],
                    sparsity=sparsities[k],
                    nonzero_params=int(nonzeros[k]),
                    max_epochs=self.training.max_epochs,
                )
                for k, (fold, r) in enumerate(zip(folds, curves, strict=True))
            ],
            n_params=n_params,
            wall_time_s=time.perf_counter() - started,
        )
