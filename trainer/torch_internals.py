"""The few torch internals regtune reaches, each behind one function that says why.

Each is faster, or more general, than what torch's public API offers for the same thing; every
other module goes through here, so a torch release that renames or drops one changes one
place. Each function falls back to public operations (the same maths, slower or less general)
when the internal is missing, and tests/test_torch_internals.py checks the fallbacks compute
what the internals do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

_FUSED_ADAM: Any = getattr(torch, "_fused_adam_", None)
_NATIVE_BATCH_NORM: Any = getattr(torch, "native_batch_norm", None)
_FOREACH_MUL: Any = getattr(torch, "_foreach_mul_", None)
# The base class of every BatchNorm (1d/2d/3d, lazy and synchronized ones, plugins' subclasses).
_BATCH_NORM_BASE: Any = getattr(nn.modules.batchnorm, "_BatchNorm", None)
_PUBLIC_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def fused_adam_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    steps: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
) -> None:
    """One Adam step of each tensor, in place, with its own step count t (already counted):
    g ← g + λθ (coupled L2, ``weight_decay``), m₁ ← β₁m₁ + (1 − β₁)g, m₂ ← β₂m₂ + (1 − β₂)g²,
    θ ← θ − η/(1 − β₁ᵗ) · m₁/(√m₂/√(1 − β₂ᵗ) + ε).

    Why ``torch._fused_adam_``: it is the kernel behind ``torch.optim.Adam(fused=True)``, one
    pass over each tensor, and it takes any tensors, here row views of the stacked weights
    (the optimizer object wants leaf parameters and keeps its own state). On a CPU the unfused
    update is slower than a small model's matmuls (BENCHMARKS.md, "Profile of one CPU epoch").
    Fallback: the same arithmetic in public operations, tensor by tensor.
    """
    global _FUSED_ADAM
    if _FUSED_ADAM is not None:
        no_max_moments: list[torch.Tensor] = []  # amsgrad is off
        try:
            # The schema of torch 2.0 to 2.13 (ATen's native_functions.yaml): params, grads,
            # moments, max moments, steps; lr, betas, weight decay, eps, amsgrad, maximize.
            _FUSED_ADAM(
                list(params),
                list(grads),
                list(exp_avgs),
                list(exp_avg_sqs),
                no_max_moments,
                list(steps),
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=weight_decay,
                eps=eps,
                amsgrad=False,
                maximize=False,
            )
            return
        except TypeError:  # a torch whose schema differs: the public arithmetic from now on
            _FUSED_ADAM = None
    for p, g, m1, m2, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        m1.lerp_(g, 1 - beta1)
        m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = lr / (1 - torch.pow(beta1, t.double()))
        root2 = (1 - torch.pow(beta2, t.double())).sqrt()
        p.sub_((step_size * m1 / (m2.sqrt() / root2 + eps)).to(p.dtype))


def batch_norm_statistics(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BatchNorm of ``x`` ``[B, C, …]`` with batch statistics, and those statistics: the output
    (differentiable), and each channel's batch mean and biased variance (not differentiable).

    Why ``torch.native_batch_norm``: one kernel forward and one backward, which also hands back
    the statistics it computed, so a caller can move its running statistics with its own
    momentum per channel (``F.batch_norm`` moves them with one momentum for all, and returns
    no statistics). Fallback: ``F.batch_norm`` and the statistics computed again.
    """
    if _NATIVE_BATCH_NORM is not None:
        out, mean, rstd = _NATIVE_BATCH_NORM(x, weight, bias, None, None, True, 0.0, eps)
        with torch.no_grad():
            return out, mean, rstd.pow(-2) - eps
    out = F.batch_norm(x, None, None, weight, bias, training=True, momentum=0.0, eps=eps)
    with torch.no_grad():
        var, mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], unbiased=False)
    return out, mean, var


@torch.no_grad()
def foreach_mul_(tensors: Sequence[torch.Tensor], factor: float) -> None:
    """Every tensor times ``factor``, in place.

    Why ``torch._foreach_mul_``: one call for the whole list (one kernel launch on a GPU),
    which is how torch's own optimizers scale their parameters. Fallback: one ``mul_`` each.
    """
    if _FOREACH_MUL is not None:
        _FOREACH_MUL(tuple(tensors), factor)
        return
    for tensor in tensors:
        tensor.mul_(factor)


def is_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm of any dimension, kind or subclass.

    Why ``nn.modules.batchnorm._BatchNorm``: it is the one base class of them all, a plugin
    network's own subclasses included. Fallback: the public BatchNorm classes.
    """
    return isinstance(module, _BATCH_NORM_BASE or _PUBLIC_BATCH_NORMS)


def raise_compile_cache_limit(limit: int) -> None:
    """Let ``torch.compile`` keep at least ``limit`` graphs per compiled function.

    Why ``torch._dynamo.config``: it is where the limit lives (``torch.compile`` takes no such
    argument); a long-lived worker meets one graph per network shape, and past dynamo's default
    of 8 it would train eagerly. Imported here, on first compilation, because importing
    ``torch._dynamo`` costs seconds. Fallback: none is needed, the default limit stays.
    """
    try:
        import torch._dynamo
    except ImportError:  # a torch without dynamo compiles nothing either
        return
    config: Any = torch._dynamo.config
    # recompile_limit since torch 2.6 (cache_size_limit stays as its alias), cache_size_limit
    # before: set whichever this torch has.
    for name in ("recompile_limit", "cache_size_limit"):
        current = getattr(config, name, None)
        if isinstance(current, int):
            setattr(config, name, max(current, limit))
            return
