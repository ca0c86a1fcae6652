"""The rows of a stack: one device copy of the data, and each model's fold of it.

Row r of a stack of M = P·K models is fold ``r mod K`` of the trial in slot ``r div K``. Each
model reads its fold's fit, validation and scored rows by index gathers into one copy of the
data on the device, standardized with its fold's μ, σ (and, for a table, encoded with its
fold's encoder), fitted on the fold's fit rows only; regression targets are z-scored the same
way. Index lists of unequal length are padded, their lengths kept to mask the padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from trainer.data.datasets import Dataset
from trainer.data.preprocessing import Standardizer
from trainer.data.splits import Split
from trainer.data.tabular import TableEncoder
from trainer.engines.diagnosis import trivial_loss


def _padded(indices: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """Index lists of unequal length as ``[M, max]`` (padded with 0) and their lengths."""
    width = max(1, max(len(i) for i in indices))
    table = np.zeros((len(indices), width), dtype=np.int64)
    for m, index in enumerate(indices):
        table[m, : len(index)] = index
    return torch.as_tensor(table, device=device), [len(i) for i in indices]


class StackedRows:
    """The data a stack's models train and are scored on; mixed into the population."""

    K: int
    M: int
    task: str

    def load_rows(self, dataset: Dataset, splits: Sequence[Split], dev: torch.device) -> list[int]:
        """Put the data on ``dev`` and index each model's fold; the fit rows' counts."""
        M = self.M
        # Data: one device copy; fold k's standardization (and a table's encoding) fitted on
        # its fit rows only. A table encoded per fold has a copy per fold, X[k].
        features = [dataset.fold_features(s.fit) for s in splits]
        self.encoders: list[TableEncoder | None] = [encoder for _, encoder in features]
        self.x_scalers = [
            Standardizer.fit(X[s.fit]) for (X, _), s in zip(features, splits, strict=True)
        ]
        fold_of_row = [r % self.K for r in range(M)]
        self.x_copy: torch.Tensor | None = None  # the copy of X each row reads
        if all(X is dataset.X for X, _ in features):
            self.X = torch.as_tensor(dataset.X, device=dev)
        else:
            self.X = torch.as_tensor(np.stack([X for X, _ in features]), device=dev)
            self.x_copy = torch.as_tensor(fold_of_row, device=dev)[:, None]

        def by_row(values: Sequence[np.ndarray] | Sequence[float]) -> torch.Tensor:
            return torch.as_tensor(
                np.stack([np.asarray(values[k]) for k in fold_of_row]),
                device=dev,
                dtype=torch.float32,
            )

        self.x_mean = by_row([s.mean for s in self.x_scalers])[:, None, :]
        self.x_std = by_row([s.std for s in self.x_scalers])[:, None, :]
        self.y_scalers: list[Standardizer] | None = None
        if dataset.task == "regression":
            self.y_scalers = y_scalers = [Standardizer.fit(dataset.y[s.fit, None]) for s in splits]
            self.y_mean = by_row([float(s.mean[0]) for s in y_scalers])
            self.y_std = by_row([float(s.std[0]) for s in y_scalers])
        else:
            self.y_mean = self.y_std = torch.zeros(M, device=dev)
        self.baseline = [
            trivial_loss(dataset.task, dataset.y[s.fit], dataset.n_outputs) for s in splits
        ]
        self.y = torch.as_tensor(dataset.y, device=dev)
        rows = [splits[k] for k in fold_of_row]
        self.fit_index, fit_len = _padded([s.fit for s in rows], dev)
        self.val_index, val_len = _padded([s.val for s in rows], dev)
        self.score_index, score_len = _padded([s.score for s in rows], dev)
        self.fit_len = torch.tensor(fit_len, device=dev)
        self.val_len = torch.tensor(val_len, device=dev)
        self.score_len = torch.tensor(score_len, device=dev)
        return fit_len

    def features(self, index: torch.Tensor) -> torch.Tensor:
        """Standardized features of ``index`` ``[M, B]`` → ``[M, B, d]``, each model its own."""
        x = self.X[index] if self.x_copy is None else self.X[self.x_copy, index]
        return (x - self.x_mean) / self.x_std

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        y = self.y[index]
        if self.task == "regression":
            return ((y - self.y_mean[:, None]) / self.y_std[:, None])[..., None]
        return y
