"""L2 (coupled or decoupled), L1 and the optimizers that apply them.

Let θ be the regularized parameters (the parameters of rank ≥ 2 by default, i.e. the weights
of Linear and Conv layers, in any network; biases and BatchNorm affine parameters too if
asked), η the learning rate, λ the L2 strength
and λ₁ the L1 strength.

* coupled L2:   g ← ∇L + λθ, i.e. the loss gains (λ/2)‖θ‖²; this is what
  ``torch.optim.SGD/Adam(weight_decay=λ)`` do, so we pass λ to the optimizer.
* decoupled L2: θ ← θ − ηλθ before the optimizer's own update (Loshchilov & Hutter);
  with Adam this is exactly ``torch.optim.AdamW``.
* L1:           the loss gains λ₁‖θ‖₁, whose gradient is λ₁·sign(θ) with sign(0) = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SPARSITY_THRESHOLD = 1e-3


def split_parameters(
    model: nn.Module, *, include_bias_and_bn: bool = False
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Return ``(regularized, others)``: the parameters of rank ≥ 2 (weights, not biases or
    BatchNorm's affine vectors), or every parameter if asked."""
    if include_bias_and_bn:
        return list(model.parameters()), []
    params = list(model.parameters())
    return [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]


@dataclass
class Regularizer:
    """The per-trial penalties on one model's parameters."""

    regularized: list[nn.Parameter]
    weight_decay: float
    l1: float
    decoupled: bool

    def penalty(self) -> torch.Tensor | float:
        """The term added to the data loss: λ₁‖θ‖₁ (coupled L2 lives in the optimizer)."""
        if self.l1 == 0.0:
            return 0.0
        return self.l1 * sum(p.abs().sum() for p in self.regularized)

    @torch.no_grad()
    def decay(self, lr: float) -> None:
        """Decoupled L2, θ ← (1 − ηλ)θ, to run just before ``optimizer.step()``."""
        if self.decoupled and self.weight_decay:
            torch._foreach_mul_(tuple(self.regularized), 1.0 - lr * self.weight_decay)

    @torch.no_grad()
    def sparsity(self) -> float:
        """Fraction of regularized weights with |θ| < 1e-3."""
        total = sum(p.numel() for p in self.regularized)
        small = sum(int((p.abs() < SPARSITY_THRESHOLD).sum()) for p in self.regularized)
        return small / total if total else 0.0


def make_optimizer(
    model: nn.Module,
    *,
    optimizer: str,
    lr: float,
    weight_decay: float,
    l1: float,
    decoupled: bool,
    momentum: float = 0.9,
    include_bias_and_bn: bool = False,
) -> tuple[torch.optim.Optimizer, Regularizer]:
    """The optimizer (coupled L2 only on the regularized group) and the trial's regularizer."""
    regularized, others = split_parameters(model, include_bias_and_bn=include_bias_and_bn)
    coupled = 0.0 if decoupled else weight_decay
    groups = [{"params": regularized, "weight_decay": coupled}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr, fused=True)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    return opt, Regularizer(regularized, weight_decay, l1, decoupled)
