"""Early stopping on a monitored validation loss."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Stop after ``patience`` consecutive epochs without an improvement of more than ``min_delta``.

    An epoch improves when ``loss < best − min_delta``; the caller keeps the weights of the
    best epoch and restores them when :attr:`should_stop` turns true.
    """

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, loss: float, epoch: int) -> bool:
        """Record one epoch's loss; return whether it is the new best."""
        if loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience
