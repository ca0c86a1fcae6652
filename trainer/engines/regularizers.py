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
* max-norm c:   after every optimizer step each unit's incoming weight vector w (a row of a
                Linear weight, one output filter of a Conv) is projected onto ‖w‖ ≤ c,
                w ← w·min(1, c/‖w‖) (:func:`max_norm_`); only the weights (rank ≥ 2), never
                biases or BatchNorm, whatever ``regularize_bias_and_bn`` says.

Which parameters are regularized (:func:`regularized_names`), the max-norm projection and the
sparsity that L1 leads to (:func:`sparsity`) are the same rules in both engines; the per-trial
engine applies the penalties through ``torch.optim`` here, the population engine its stacked
update (:mod:`trainer.engines.stacked_optim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from trainer import torch_internals

SPARSITY_THRESHOLD = 1e-3


def regularized_names(model: nn.Module, *, include_bias_and_bn: bool = False) -> set[str]:
    """The names of the regularized parameters: those of rank ≥ 2 (weights, not biases or
    BatchNorm's affine vectors), or every parameter if asked."""
    return {name for name, p in model.named_parameters() if include_bias_and_bn or p.dim() >= 2}


def split_parameters(
    model: nn.Module, *, include_bias_and_bn: bool = False
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Return ``(regularized, others)`` (:func:`regularized_names`), in the model's order."""
    names = regularized_names(model, include_bias_and_bn=include_bias_and_bn)
    params = list(model.named_parameters())
    return [p for n, p in params if n in names], [p for n, p in params if n not in names]


def max_norm_(
    weight: torch.Tensor, c: torch.Tensor | float, unit_dims: tuple[int, ...]
) -> torch.Tensor:
    """Max-norm, in place (call it under ``torch.no_grad``): each unit's incoming vector w,
    ``weight``'s entries along ``unit_dims`` (its other dims pick the unit), becomes
    w·c/‖w‖ where ‖w‖ > c and stays as it is elsewhere, i.e. w ← w·min(1, c/‖w‖).

    ``c`` is a number, or a tensor broadcasting against ``weight`` (one c per stacked model;
    ∞ leaves a model bit for bit as it is, and so does a NaN norm). One module's Linear weight
    ``[out, in]`` has ``unit_dims`` (1,) and a Conv weight ``[out, C, k…]`` (1, 2, …).
    """
    norm = torch.linalg.vector_norm(weight, dim=unit_dims, keepdim=True)
    return weight.mul_(torch.where(norm > c, c / norm, 1.0))


def incoming_dims(weight: torch.Tensor) -> tuple[int, ...]:
    """The dims of one module's weight ``[out, …]`` that hold a unit's incoming vector: all but
    the first (the unit)."""
    return tuple(range(1, weight.dim()))


@torch.no_grad()
def sparsity(regularized: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per model, the fraction of its regularized weights with |θ| < 10⁻³: each tensor holds
    M models' ``[M, …]``; the fractions ``[M]`` in float64."""
    small = torch.stack([(p.abs() < SPARSITY_THRESHOLD).flatten(1).sum(1) for p in regularized])
    total = sum(p[0].numel() for p in regularized)
    return small.sum(0).double() / max(total, 1)


@torch.no_grad()
def nonzero(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per model, how many of its parameters have |θ| ≥ 10⁻³ (:func:`sparsity`'s threshold):
    each tensor holds M models' ``[M, …]``; the counts ``[M]`` (int64).

    Both engines pass every parameter of the network, the ones that
    :func:`trainer.nets.networks.count_parameters` counts (weights, biases, BatchNorm's γ and
    β; not its running statistics, which are buffers), at the kept (best) epoch: so a
    trade-off's ``nonzero_parameters`` is at most its ``parameters``, and equal without L1.
    """
    return torch.stack([(p.abs() >= SPARSITY_THRESHOLD).flatten(1).sum(1) for p in params]).sum(0)


@dataclass
class Regularizer:
    """The per-trial penalties on one model's parameters."""

    regularized: list[nn.Parameter]
    weight_decay: float
    l1: float
    decoupled: bool
    max_norm: float | None = None
    constrained: list[nn.Parameter] = field(default_factory=list)  # max-norm's weights

    def penalty(self) -> torch.Tensor | float:
        """The term added to the data loss: λ₁‖θ‖₁ (coupled L2 lives in the optimizer)."""
        if self.l1 == 0.0:
            return 0.0
        return self.l1 * sum(p.abs().sum() for p in self.regularized)

    @torch.no_grad()
    def decay(self, lr: float) -> None:
        """Decoupled L2, θ ← (1 − ηλ)θ, to run just before ``optimizer.step()``."""
        if self.decoupled and self.weight_decay:
            torch_internals.foreach_mul_(self.regularized, 1.0 - lr * self.weight_decay)

    @torch.no_grad()
    def project(self) -> None:
        """Max-norm (:func:`max_norm_`) of every weight, to run just after ``optimizer.step()``;
        nothing when it is off."""
        if self.max_norm is not None:
            for weight in self.constrained:
                max_norm_(weight, self.max_norm, incoming_dims(weight))

    def sparsity(self) -> float:
        """:func:`sparsity` of this one model (0 if nothing is regularized)."""
        if not self.regularized:
            return 0.0
        return float(sparsity([p[None] for p in self.regularized])[0])


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
    max_norm: float | None = None,
) -> tuple[torch.optim.Optimizer, Regularizer]:
    """The optimizer (coupled L2 only on the regularized group) and the trial's regularizer
    (its max-norm c, None: off, on the weights of rank ≥ 2)."""
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
    weights, _ = split_parameters(model)  # max-norm: the weights only, never biases or BN
    return opt, Regularizer(regularized, weight_decay, l1, decoupled, max_norm, weights)
