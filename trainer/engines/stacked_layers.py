"""The stacked layers with weights: M models' Linear, Conv, BatchNorm and dropout at once.

A stacked value is ``[M, B, *shape]``: model m's batch of B samples in row m. The population
engine (:mod:`trainer.engines.population`) holds the M models' tensors and runs a traced network
(:mod:`trainer.engines.stacking`) through these methods:

* Linear: one ``torch.baddbmm`` over weights ``[M, in, out]``;
* convolution: one grouped convolution with M groups over the models' channels side by side
  (``[B, M·C, …]``, weights ``[M·out, C, k…]``), which is M independent convolutions;
* BatchNorm: per model, statistics over its own valid rows (and positions) and its own
  running statistics, ``running ← (1 − m_m)·running + m_m·batch``;
* dropout: inverted, keep probability 1 − p of the model's group, masks from
  :mod:`trainer.rng` keyed by the model's seed, epoch, step and dropout (whole channels for
  ``Dropout1d/2d``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from trainer import rng
from trainer.engines import stacking

WeightLayer = nn.Linear | nn.Conv1d | nn.Conv2d
NormLayer = nn.BatchNorm1d | nn.BatchNorm2d


class Pass(NamedTuple):
    """What a forward pass of the stack needs beside its input (the program's context).

    ``weight`` ``[M, B]`` is 1 on real rows; ``stepping`` ``[M]`` (training only) says whose
    BatchNorm running statistics move; ``keys`` ``[dropouts, M]`` draws the dropout masks
    (None: no dropout); ``full``: every row is real (plain, unmasked batch statistics).
    """

    weight: torch.Tensor
    stepping: torch.Tensor | None
    keys: torch.Tensor | None
    full: bool


@dataclass(frozen=True)
class ConvShape:
    """A convolution's function and geometry, as its module has them."""

    function: Callable[..., torch.Tensor]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]


def per_model(column: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-model value ``[M, …]`` shaped to broadcast against ``like`` ``[M, …]``."""
    return column.reshape(-1, *[1] * (like.dim() - 1))


class StackedLayers:
    """The layer arithmetic of a stack; :class:`trainer.engines.population.Population` holds the
    tensors it reads (one row per model) and mixes it in."""

    program: stacking.Program
    weights: list[nn.Parameter]
    biases: list[nn.Parameter]
    bias_of: list[int | None]  # which stacked bias each layer adds (None: it has none)
    convs: list[ConvShape | None]
    gammas: list[nn.Parameter]
    betas: list[nn.Parameter]
    running: list[tuple[torch.Tensor, torch.Tensor]]
    eps: list[float]
    bn_momentum: torch.Tensor  # [M, 1]
    keep: torch.Tensor  # [groups, M]
    group_of: list[int]  # each dropout's group (row of keep)

    def linear(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Linear layer ``layer`` of every model at once: ``[M, B, …, in]`` → ``[M, B, …, out]``,
        one batched matmul over the models' weights ``[M, in, out]``."""
        w, b = self.weights[layer], self.bias_of[layer]
        if h.dim() == 3:  # [M, B, in]: one batched matmul, no reshape
            return torch.bmm(h, w) if b is None else torch.baddbmm(self.biases[b], h, w)
        flat = h.reshape(h.shape[0], -1, h.shape[-1])
        out = torch.bmm(flat, w) if b is None else torch.baddbmm(self.biases[b], flat, w)
        return out.view(*h.shape[:-1], w.shape[-1])

    def convolve(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Convolution ``layer`` of every model at once: ``[M, B, C, …]`` → ``[M, B, out, …]``.

        The models' channels side by side make one input ``[B, M·C, …]``; a convolution with M
        groups convolves group m (model m's C channels) with model m's filters only.
        """
        M, B, C, *spatial = h.shape
        w, b, conv = self.weights[layer], self.bias_of[layer], self.convs[layer]
        assert conv is not None
        out = conv.function(
            h.transpose(0, 1).reshape(B, M * C, *spatial),
            w.flatten(0, 1),
            None if b is None else self.biases[b].reshape(-1),
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=M,
        )
        return out.view(B, M, w.shape[1], *out.shape[2:]).transpose(0, 1)

    def batch_norm(self, norm: int, h: torch.Tensor, context: Pass) -> torch.Tensor:
        """BatchNorm ``norm`` of every model at once (:meth:`normalize`)."""
        return self.normalize(h, norm, context.weight, context.stepping, full=context.full)

    def dropout(self, index: int, h: torch.Tensor, context: Pass) -> torch.Tensor:
        """Dropout ``index`` of every model: inverted, keep probability 1 − p of the model's
        group, the mask keyed by (step, dropout, model); ``Dropout1d/2d`` drop whole channels.
        Identity in evaluation mode."""
        if context.keys is None:
            return h
        keep = self.keep[self.group_of[index]]
        channels = self.program.dropouts[index][2]
        shape = tuple(h.shape[1:3]) + (1,) * (h.dim() - 3) if channels else tuple(h.shape[1:])
        mask = rng.keep_mask(context.keys[index], shape, keep, dtype=h.dtype)
        return h * mask.mul_(per_model(1.0 / keep, mask))

    def normalize(
        self,
        h: torch.Tensor,
        layer: int,
        weight: torch.Tensor,
        stepping: torch.Tensor | None,
        *,
        full: bool,
    ) -> torch.Tensor:
        """Per-model BatchNorm of ``h`` ``[M, B, C, …]`` over its valid rows and positions.

        ``weight`` ``[M, B]`` is 1 on real rows; ``stepping`` ``[M]`` (training only) says whose
        running statistics move: ``running ← (1 − m)·running + m·batch`` with m gated to 0.
        """
        M, _, C, *spatial = h.shape
        eps = self.eps[layer]
        dims = (1, *range(3, h.dim()))
        shape = (M, 1, C, *[1] * len(spatial))  # per model and channel
        mean_run, var_run = self.running[layer]
        if stepping is not None and full:
            return self.normalize_full(h, layer, stepping)
        if stepping is None:
            mean, var = mean_run.view(shape), var_run.view(shape)
        else:
            count = weight.sum(1).clamp(min=1.0)
            n = (count * math.prod(spatial)).view(M, *[1] * (h.dim() - 1))
            # Two-pass statistics: torch.var_mean over the middle axis is ~7× slower on CPU.
            if full:
                mean = h.mean(dims, keepdim=True)
                centred = h - mean
                var = (centred * centred).mean(dims, keepdim=True)
            else:
                rows = weight.view(*weight.shape, *[1] * (h.dim() - 2))
                mean = (h * rows).sum(dims, keepdim=True) / n
                centred = (h - mean) * rows
                var = (centred * centred).sum(dims, keepdim=True) / n
            with torch.no_grad():
                # PyTorch keeps the unbiased batch variance in the running estimate.
                unbiased = var * n / (n - 1).clamp(min=1.0)
                m = self.bn_momentum * stepping[:, None].to(h.dtype)
                mean_run.mul_(1 - m).add_(m * mean.view(M, C))
                var_run.mul_(1 - m).add_(m * unbiased.view(M, C))
        gamma, beta = self.gammas[layer].view(shape), self.betas[layer].view(shape)
        return (h - mean) / torch.sqrt(var + eps) * gamma + beta

    def normalize_full(self, h: torch.Tensor, layer: int, stepping: torch.Tensor) -> torch.Tensor:
        """:meth:`normalize` of a batch with every row real, by torch's own BatchNorm kernel
        (forward and backward in one pass each, 3× faster than the masked arithmetic on a
        CPU): the M models' channels side by side are M·C channels of one BatchNorm."""
        M, B, C, *spatial = h.shape
        x = h.transpose(0, 1).reshape(B, M * C, *spatial)
        gamma, beta = self.gammas[layer].reshape(-1), self.betas[layer].reshape(-1)
        eps = self.eps[layer]
        out, mean, rstd = torch.native_batch_norm(x, gamma, beta, None, None, True, 0.0, eps)
        with torch.no_grad():
            mean = mean.view(M, C)
            n = B * math.prod(spatial)
            var = (rstd.pow(-2) - eps).view(M, C)
            # PyTorch keeps the unbiased batch variance in the running estimate.
            m = self.bn_momentum * stepping[:, None].to(h.dtype)
            mean_run, var_run = self.running[layer]
            mean_run.mul_(1 - m).add_(m * mean)
            var_run.mul_(1 - m).add_(m * var * (n / max(n - 1, 1)))
        return out.view(B, M, C, *out.shape[2:]).transpose(0, 1)
