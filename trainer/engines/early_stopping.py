"""Early stopping on a monitored validation loss, for M models at once or one alone.

Per model, at the end of each epoch e it trained, with validation loss v:

* it improves when v < best − δ (δ = ``min_delta``): best ← v, best epoch ← e, misses ← 0;
  a model without validation rows (a refit) improves every epoch, so its last weights are
  its best and patience never runs out;
* otherwise misses ← misses + 1, and it should stop once misses ≥ patience.

The caller keeps the weights of the best epoch and restores them when the model stops. The rule
is written once, on tensors ``[M]`` (:class:`StoppingRule`, the population engine's); the
per-trial engine reads it for one model as Python numbers (:class:`EarlyStopping`).
"""

from __future__ import annotations

import math

import torch


class StoppingRule:
    """Early stopping of M models, each with its own patience; every state is a tensor ``[M]``.

    ``dtype`` is the losses' precision: best − δ is computed in it (the population compares
    float32 losses, the per-trial engine Python floats, i.e. float64).
    """

    def __init__(
        self,
        patience: torch.Tensor,
        min_delta: float = 0.0,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = torch.full(patience.shape, math.inf, dtype=dtype, device=patience.device)
        self.best_epoch = torch.full_like(patience, -1)
        self.bad_epochs = torch.zeros_like(patience)

    def restart(self, rows: slice, patience: int) -> None:
        """Models ``rows`` start again, with ``patience``, nothing seen yet."""
        self.patience[rows] = patience
        self.best[rows], self.best_epoch[rows], self.bad_epochs[rows] = math.inf, -1, 0

    def step(
        self,
        loss: torch.Tensor,
        epoch: torch.Tensor,
        trained: torch.Tensor,
        *,
        always: torch.Tensor | bool = False,
    ) -> torch.Tensor:
        """Record the epoch ``epoch`` of the models ``trained`` (a mask), whose validation
        loss is ``loss``; ``always`` marks models without validation rows. Returns the mask
        of those that improved."""
        better = (loss < self.best - self.min_delta) | always
        improved = trained & better
        self.best = torch.where(improved, loss, self.best)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.bad_epochs = torch.where(improved, 0, self.bad_epochs + trained.long())
        return improved

    @property
    def should_stop(self) -> torch.Tensor:
        return self.bad_epochs >= self.patience


class EarlyStopping:
    """One model's early stopping: :class:`StoppingRule` with one row, read as numbers."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.rule = StoppingRule(torch.tensor([patience]), min_delta, dtype=torch.float64)

    def step(self, loss: float, epoch: int, *, always: bool = False) -> bool:
        """Record one epoch's loss (``always``: the model has no validation rows); return
        whether it is the new best."""
        loss_row = torch.tensor([loss], dtype=torch.float64)
        trained = torch.ones(1, dtype=torch.bool)
        return bool(self.rule.step(loss_row, torch.tensor([epoch]), trained, always=always))

    @property
    def best(self) -> float:
        return float(self.rule.best)

    @property
    def best_epoch(self) -> int:
        return int(self.rule.best_epoch)

    @property
    def should_stop(self) -> bool:
        return bool(self.rule.should_stop)
