"""What a model trains on and is scored by: the data loss and the study's objective.

With outputs f(x) and targets y of the rows that count:

* data loss: mean cross-entropy −log softmax(f(x))_y (classification), or the squared error
  averaged over the outputs (regression, on standardized targets z = (y − μ)/σ);
* objective: ``accuracy``, the fraction of rows with argmax f(x) = y; ``mse``, the data loss in
  the target's own units, σ² times the loss on z; ``loss``, the data loss itself.

Mixup (:mod:`.augmentation`) changes the training loss only: its targets are class
probabilities, −Σ_c y_c log softmax(f(x))_c, or mixed values; validation and scoring take the
rows' own targets.

Both engines call these, the per-trial engine on one model's rows ``[B, …]``, the population
engine on M models' padded rows ``[M, B, …]`` with a mask of the real ones (each model its own
mean). Written once, so a new metric is one more branch here.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from trainer.specs.study_spec import Metric, Task


def data_loss(
    task: Task, outputs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """The mean data loss over the real rows: a scalar for one model's ``[B, out]``
    (``valid`` None: every row is real, torch's own reduction), or ``[M]`` for ``[M, B, out]``
    with ``valid`` ``[M, B]`` (True on real rows; a model with none has loss 0). Class
    ``targets`` are ids, or class probabilities ``[…, classes]`` (mixup's training targets:
    the cross-entropy −Σ_c y_c log softmax(f(x))_c)."""
    if valid is None:
        if task == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets)
    if task == "classification":
        per_row = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(0, 1), reduction="none")
        per_row = per_row.view(valid.shape)
    else:
        per_row = ((outputs - targets) ** 2).mean(-1)
    weight = valid.to(per_row.dtype)
    return (per_row * weight).sum(1) / weight.sum(1).clamp(min=1.0)


def objective(
    metric: Metric,
    loss: torch.Tensor,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    y_std: torch.Tensor | None = None,
) -> torch.Tensor:
    """The study's metric on the rows whose data ``loss`` was taken (shapes as
    :func:`data_loss`); ``y_std`` is σ of the standardized regression targets (None: the
    targets are the labels themselves). Computed in ``loss``'s and ``y_std``'s precision."""
    if metric == "accuracy":
        hits = outputs.argmax(-1) == targets
        if valid is None:
            return hits.float().mean(-1)
        return (hits & valid).sum(-1) / valid.sum(-1).clamp(min=1)
    if metric == "mse" and y_std is not None:
        return loss * y_std**2  # z = (y − μ)/σ, so an MSE on z is σ² times the MSE on y
    return loss
