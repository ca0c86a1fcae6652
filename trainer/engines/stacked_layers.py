"""The stacked layers with weights: M models' Linear, Conv, BatchNorm and dropout at once.

:class:`StackedLayers` holds the M models' parameters and BatchNorm statistics, each stacked
along a leading model axis and keyed by its name in the network (``named_parameters()``,
``named_buffers()``, as ``torch.func.stack_module_state`` keys them), with the copy that early
stopping keeps of each model's best epoch. A network's own tensors go in and out by name
(:meth:`StackedLayers.load`, :meth:`StackedLayers.export`); stacked, a Linear's weight is kept
transposed, ``[M, in, out]``, the operand ``torch.baddbmm`` reads, and every other tensor has
its own shape after the model axis.

A stacked value is ``[M, B, *shape]``: model m's batch of B samples in row m. The population
engine (:mod:`trainer.engines.population`) runs a traced network (:mod:`trainer.engines.stacking`)
through the layer methods:

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
from torch import nn
from torch.nn import functional as F

from trainer import rng, torch_internals
from trainer.engines import stacking
from trainer.engines.trial_config import TrialConfig

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
    """The layers of M models of one network (``template``, traced as ``program``): their
    weights and statistics by name, each model's BatchNorm momentum and dropout keep
    probabilities, and the stacked layer arithmetic (the program's
    :class:`~trainer.engines.stacking.Stack`)."""

    def __init__(
        self, program: stacking.Program, template: nn.Module, M: int, device: torch.device
    ) -> None:
        self.program = program
        layers = [cast(WeightLayer, template.get_submodule(n)) for n in program.layers]
        norms = [cast(NormLayer, template.get_submodule(n)) for n in program.norms]
        self.convs = [
            ConvShape(
                F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d, m.stride, m.padding, m.dilation
            )
            if isinstance(m, nn.Conv1d | nn.Conv2d)
            else None
            for m in layers
        ]
        self.eps = [float(m.eps) for m in norms]
        # Each layer's tensors by name: weight and bias (None: it has none), BatchNorm's γ, β.
        self.weight_of = [f"{n}.weight" for n in program.layers]
        self.bias_of = [
            f"{n}.bias" if m.bias is not None else None
            for n, m in zip(program.layers, layers, strict=True)
        ]
        self.gamma_of = [f"{n}.weight" for n in program.norms]
        self.beta_of = [f"{n}.bias" for n in program.norms]
        self.running_of = [(f"{n}.running_mean", f"{n}.running_var") for n in program.norms]
        self.transposed = {
            name for name, m in zip(self.weight_of, layers, strict=True) if isinstance(m, nn.Linear)
        }
        # Weights first, then biases, γ and β: the order in which per-model sums over the whole
        # stack (the gradient's norm) have always run, so results stay bit for bit.
        order = [*self.weight_of, *[b for b in self.bias_of if b], *self.gamma_of, *self.beta_of]
        # The template's tensors in every row until a trial's own are loaded.
        params, buffers = torch.func.stack_module_state([template])
        self.params = {
            name: nn.Parameter(
                self.stacked(name, params[name].detach()).to(device).repeat_interleave(M, 0)
            )
            for name in order
        }
        self.buffers = {
            name: buffers[name].to(device).repeat_interleave(M, 0)
            for pair in self.running_of
            for name in pair
        }
        self.best = {name: t.detach().clone() for name, t in self.state().items()}
        # Per model: BatchNorm momentum; keep probabilities per dropout group (row 0: the
        # dropouts without a group).
        self.bn_momentum = torch.zeros(M, 1, device=device)
        self.groups: list[str | None] = [None]
        for _, group, _ in program.dropouts:
            if group not in self.groups:
                self.groups.append(group)
        self.keep = torch.ones(len(self.groups), M, device=device)

    # --- state by name -------------------------------------------------------------------

    def state(self) -> dict[str, torch.Tensor]:
        """Every stacked tensor by name: parameters, then BatchNorm statistics."""
        return {**self.params, **self.buffers}

    def stacked(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Models' tensor ``name`` as a network holds it (``[K, …]``) in the stacked layout."""
        return value.transpose(1, 2) if name in self.transposed else value

    def units(self) -> dict[str, tuple[int, ...]]:
        """Each Linear and Conv weight by name, with the dims of its stacked tensor that hold
        a unit's incoming vector (what max-norm bounds): ``in`` of a Linear's ``[M, in, out]``
        (a unit is a column), ``C, k…`` of a Conv's ``[M, out, C, k…]``."""
        return {
            name: (1,) if name in self.transposed else tuple(range(2, self.params[name].dim()))
            for name in self.weight_of
        }

    @property
    def running(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each BatchNorm's running mean and variance ``[M, C]``, in call order."""
        return [(self.buffers[mean], self.buffers[var]) for mean, var in self.running_of]

    @torch.no_grad()
    def load(self, rows: slice, nets: Sequence[nn.Module], config: TrialConfig) -> None:
        """Put ``nets`` (one per row of ``rows``) and ``config``'s BatchNorm momentum and
        dropouts in ``rows``; their best copy starts as they are."""
        params, buffers = torch.func.stack_module_state(list(nets))
        for name, param in self.params.items():
            param[rows] = self.stacked(name, params[name])
        for name, buffer in self.buffers.items():
            buffer[rows] = buffers[name]
        for name, tensor in self.state().items():
            self.best[name][rows] = tensor[rows]
        self.bn_momentum[rows] = config.bn_momentum
        for index, group in enumerate(self.groups):
            self.keep[index, rows] = 1.0 - config.dropout_of(group)

    @torch.no_grad()
    def keep_best(self, improved: torch.Tensor) -> None:
        """The models ``improved`` (a mask ``[M]``) make their tensors now their best."""
        for name, value in self.state().items():
            best = self.best[name]
            best.copy_(torch.where(per_model(improved, value), value, best))

    @torch.no_grad()
    def export(self, row: int, net: nn.Module) -> nn.Module:
        """``net`` (of the template's structure) with row ``row``'s best tensors, by name: the
        inverse of :meth:`load`. In evaluation mode."""
        for name in self.params:
            best = self.best[name][row]
            net.get_parameter(name).copy_(best.t() if name in self.transposed else best)
        for name in self.buffers:
            net.get_buffer(name).copy_(self.best[name][row])
        return net.eval()

    # --- the arithmetic ------------------------------------------------------------------

    def linear(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Linear layer ``layer`` of every model at once: ``[M, B, …, in]`` → ``[M, B, …, out]``,
        one batched matmul over the models' weights ``[M, in, out]``."""
        w, b = self.params[self.weight_of[layer]], self.bias_of[layer]
        bias = None if b is None else self.params[b][:, None, :]
        if h.dim() == 3:  # [M, B, in]: one batched matmul, no reshape
            return torch.bmm(h, w) if bias is None else torch.baddbmm(bias, h, w)
        flat = h.reshape(h.shape[0], -1, h.shape[-1])
        out = torch.bmm(flat, w) if bias is None else torch.baddbmm(bias, flat, w)
        return out.view(*h.shape[:-1], w.shape[-1])

    def convolve(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Convolution ``layer`` of every model at once: ``[M, B, C, …]`` → ``[M, B, out, …]``.

        The models' channels side by side make one input ``[B, M·C, …]``; a convolution with M
        groups convolves group m (model m's C channels) with model m's filters only.
        """
        M, B, C, *spatial = h.shape
        w, b, conv = self.params[self.weight_of[layer]], self.bias_of[layer], self.convs[layer]
        assert conv is not None
        out = conv.function(
            h.transpose(0, 1).reshape(B, M * C, *spatial),
            w.flatten(0, 1),
            None if b is None else self.params[b].reshape(-1),
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
        _, group, channels = self.program.dropouts[index]
        keep = self.keep[self.groups.index(group)]
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
        mean_run, var_run = (self.buffers[name] for name in self.running_of[layer])
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
        gamma = self.params[self.gamma_of[layer]].view(shape)
        beta = self.params[self.beta_of[layer]].view(shape)
        return (h - mean) / torch.sqrt(var + eps) * gamma + beta

    def normalize_full(self, h: torch.Tensor, layer: int, stepping: torch.Tensor) -> torch.Tensor:
        """:meth:`normalize` of a batch with every row real, by torch's own BatchNorm kernel
        (forward and backward in one pass each, 3× faster than the masked arithmetic on a
        CPU): the M models' channels side by side are M·C channels of one BatchNorm."""
        M, B, C, *spatial = h.shape
        x = h.transpose(0, 1).reshape(B, M * C, *spatial)
        gamma = self.params[self.gamma_of[layer]].reshape(-1)
        beta = self.params[self.beta_of[layer]].reshape(-1)
        out, mean, var = torch_internals.batch_norm_statistics(x, gamma, beta, self.eps[layer])
        with torch.no_grad():
            n = B * math.prod(spatial)
            # PyTorch keeps the unbiased batch variance in the running estimate.
            m = self.bn_momentum * stepping[:, None].to(h.dtype)
            mean_run, var_run = (self.buffers[name] for name in self.running_of[layer])
            mean_run.mul_(1 - m).add_(m * mean.view(M, C))
            var_run.mul_(1 - m).add_(m * var.view(M, C) * (n / max(n - 1, 1)))
        return out.view(B, M, C, *out.shape[2:]).transpose(0, 1)
