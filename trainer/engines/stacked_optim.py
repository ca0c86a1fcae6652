"""One optimizer step of M stacked models at once: L1, clipping, L2 and Adam or SGD per model,
then max-norm.

Each model m has its own learning rate η_m, L2 λ_m, L1 λ₁_m, max-norm c_m and Adam step count
t_m, as tensors, so the whole stack takes one step in one call; a model that does not step
(stopped, pruned, an empty slot, no batch of its own this step) is gated out with
``torch.where``: zeroing its gradient would not do, Adam's moments would still move its weights.

:class:`StackedOptimizer` holds those per-model values and the optimizer's state (Adam's
moments or SGD's momentum, by the parameters' names) and takes each step: by
:func:`stacked_update` (compiled, where the population is), or on an eager CPU by torch's fused
Adam over runs of stepping models (:func:`fused_adam_runs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer import torch_internals
from trainer.engines import compiled
from trainer.engines.regularizers import max_norm_
from trainer.engines.stacked_layers import per_model
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import TrainingSpec

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def regularized_gradients(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    weight_decay: torch.Tensor,
    l1: torch.Tensor | None,
    decayed: list[bool],
    decoupled: bool,
    grad_clip: float | None,
    in_place: bool = True,
) -> list[torch.Tensor]:
    """Per model: g ← ∇ + λ₁·sign θ (L1), clipped to ‖g‖ ≤ c over the model's parameters,
    then + λθ (coupled L2), in the order torch's optimizers and ``clip_grad_norm_`` take them.
    ``grads`` are updated in place where that is possible, unless not ``in_place`` (a compiled
    step must not mutate them: they are new tensors every step, so not static for CUDA
    graphs, and inductor fuses the new ones away)."""
    grads = list(grads)
    for i, (p, d) in enumerate(zip(params, decayed, strict=True)):
        if l1 is not None and d:  # sign: 4× faster than sgn on CPU
            g = grads[i]
            grads[i] = (g.addcmul_ if in_place else g.addcmul)(torch.sign(p), per_model(l1, p))
    if grad_clip is not None:
        norm = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
        coef = (grad_clip / (norm + 1e-6)).clamp(max=1.0)
        grads = [g * per_model(coef, g) for g in grads]
        in_place = True  # these are this function's own
    if not decoupled:
        for i, (p, d) in enumerate(zip(params, decayed, strict=True)):
            if d:
                g = grads[i]
                grads[i] = (g.addcmul_ if in_place else g.addcmul)(p, per_model(weight_decay, p))
    return grads


def stacked_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    moments: list[tuple[torch.Tensor, torch.Tensor]],
    steps: torch.Tensor,
    stepping: torch.Tensor,
    *,
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
    l1: torch.Tensor | None,
    decayed: list[bool],
    adam: bool,
    decoupled: bool,
    momentum: float,
    grad_clip: float | None,
    max_norm: torch.Tensor | None,
    unit_dims: list[tuple[int, ...] | None],
) -> None:
    """One Adam or SGD step of every stepping model m of the stack, in place, in one call.

    Gradients as :func:`regularized_gradients`; decoupled L2 θ ← (1 − ηλ)θ. Adam (t the
    model's own step count): m₁ ← β₁m₁ + (1 − β₁)g, m₂ ← β₂m₂ + (1 − β₂)g², θ ← θ −
    η/(1 − β₁ᵗ) · m₁/(√m₂/√(1 − β₂ᵗ) + ε), written as torch.optim.Adam writes it. SGD:
    b ← μb + g, θ ← θ − ηb. Then, with ``max_norm`` (c per model, ∞: off), the weights
    that have ``unit_dims`` are projected (:func:`project_max_norm`). A model whose
    ``stepping`` is false keeps θ, its moments and t bit for bit. Compiled, each parameter's
    update is one fused loop.
    """
    go = stepping
    grads = regularized_gradients(
        params,
        grads,
        weight_decay=weight_decay,
        l1=l1,
        decayed=decayed,
        decoupled=decoupled,
        grad_clip=grad_clip,
        in_place=False,
    )
    steps.add_(go.to(steps.dtype))
    if decoupled:
        decay_decoupled(params, go, lr=lr, weight_decay=weight_decay, decayed=decayed)
    if adam:
        b1, b2 = ADAM_BETAS
        # Bias corrections in float64, as torch computes them from a Python float step.
        t = steps.double()
        step_size = (lr.view(-1).double() / (1 - b1**t).clamp(min=1e-300)).float()
        root2 = (1 - b2**t).clamp(min=1e-300).sqrt().float()
        for p, g, (m1, m2) in zip(params, grads, moments, strict=True):
            gate = per_model(go, p)
            new_m1 = m1.lerp(g, 1 - b1)
            new_m2 = torch.addcmul(m2 * b2, g, g, value=1 - b2)
            denom = new_m2.sqrt() / per_model(root2, p) + ADAM_EPS
            m1.copy_(torch.where(gate, new_m1, m1))
            m2.copy_(torch.where(gate, new_m2, m2))
            p.copy_(torch.where(gate, p - per_model(step_size, p) * (new_m1 / denom), p))
    else:
        for p, g, (b, _) in zip(params, grads, moments, strict=True):
            gate = per_model(go, p)
            if momentum:
                b.copy_(torch.where(gate, momentum * b + g, b))
                g = b
            p.copy_(torch.where(gate, p - per_model(lr, p) * g, p))
    if max_norm is not None:
        project_max_norm(params, go, max_norm=max_norm, unit_dims=unit_dims)


def project_max_norm(
    params: list[torch.Tensor],
    go: torch.Tensor,
    *,
    max_norm: torch.Tensor,
    unit_dims: list[tuple[int, ...] | None],
) -> None:
    """Max-norm (:func:`~trainer.engines.regularizers.max_norm_`) of the stepping models'
    weights, each with its own c (``max_norm`` ``[M]``); a tensor whose ``unit_dims`` is None
    (a bias, BatchNorm) is not touched, nor is a model that did not step (its c taken as ∞)."""
    c = torch.where(go, max_norm, math.inf)
    for p, dims in zip(params, unit_dims, strict=True):
        if dims is not None:
            max_norm_(p, per_model(c, p), dims)


def decay_decoupled(
    params: list[torch.Tensor],
    go: torch.Tensor,
    *,
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
    decayed: list[bool],
) -> None:
    """AdamW's decoupled L2, θ ← (1 − ηλ)θ, for the stepping models."""
    shrink = 1 - lr * weight_decay
    for p, d in zip(params, decayed, strict=True):
        if d:
            p.copy_(torch.where(per_model(go, p), p * per_model(shrink, p), p))


def fused_adam_runs(
    runs: list[Run],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    moments: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    decayed: list[bool],
) -> None:
    """The Adam step of :func:`stacked_update` by torch's fused CPU kernel
    (:func:`trainer.torch_internals.fused_adam_`), one call per :class:`Run` of stepping models
    and per kind of tensor (L2-decayed or not), with the run's λ₁ added first and its coupled
    λ inside the kernel (the kernel's ``weight_decay``: bit for bit the same as adding λθ
    before, measured).

    A run's rows are one slice of each stacked tensor, so a step costs a few calls whatever
    the stack's size; a model left out keeps its weights and moments. Unfused, the stacked
    update streams every tensor through memory about ten times; on a CPU that is slower than
    the matmuls of a small model (BENCHMARKS.md, "Profile of one CPU epoch"), and the kernel
    does it once.
    """
    b1, b2 = ADAM_BETAS
    kinds = [(decay, [i for i, d in enumerate(decayed) if d == decay]) for decay in (True, False)]
    for run in runs:
        rows = slice(run.start, run.stop)
        step = torch.full((), float(run.t))  # the kernel reads one step count per tensor
        for decay, chosen in kinds:
            if not chosen:
                continue
            p = [params[i][rows] for i in chosen]
            g = [grads[i][rows] for i in chosen]
            if decay and run.l1:
                for weights, gradient in zip(p, g, strict=True):
                    gradient.add_(weights.sign(), alpha=run.l1)  # sign: 4× faster than sgn
            torch_internals.fused_adam_(
                p,
                g,
                [moments[i][0][rows] for i in chosen],
                [moments[i][1][rows] for i in chosen],
                [step] * len(chosen),
                lr=run.lr,
                beta1=b1,
                beta2=b2,
                eps=ADAM_EPS,
                weight_decay=run.weight_decay if decay else 0.0,
            )


@dataclass(frozen=True)
class Run:
    """Consecutive stepping models ``start…stop−1`` that share η, λ, λ₁ (both 0 where they were
    applied already) and Adam's step count t: one slice of every stacked tensor."""

    start: int
    stop: int
    lr: float
    weight_decay: float
    l1: float
    t: int


def runs_of(rows: np.ndarray, values: np.ndarray) -> list[Run]:
    """The :class:`Run` s of the stepping ``rows`` (ascending), ``values`` ``[M, 4]`` holding
    each model's (η, λ, λ₁, t). (A loop: a CPU stack has a few dozen models, for which
    numpy's per-call cost is more than the loop's.)"""
    runs: list[Run] = []
    start, last, current = -1, -2, None
    for row, (lr, weight_decay, l1, t) in zip(rows.tolist(), values[rows].tolist(), strict=True):
        here = (lr, weight_decay, l1, int(t))
        if row != last + 1 or here != current:
            if current is not None:
                runs.append(Run(start, last + 1, *current))
            start, current = row, here
        last = row
    if current is not None:
        runs.append(Run(start, last + 1, *current))
    return runs


class StackedOptimizer:
    """The optimizer of M stacked models: Adam (``adam``) or SGD with momentum, L1, clipping,
    L2 and max-norm as ``training`` says, each model with its own η, λ, λ₁ and c
    (:meth:`restart`).

    ``params`` are the stack's parameters by name, ``regularized`` the names that L1 and L2
    apply to and ``units`` the weights that max-norm bounds, with the dims of a unit's incoming
    vector (:meth:`~trainer.engines.stacked_layers.StackedLayers.units`); ``compile``: the
    update runs under ``torch.compile``.
    """

    def __init__(
        self,
        params: dict[str, nn.Parameter],
        regularized: set[str],
        *,
        units: dict[str, tuple[int, ...]],
        training: TrainingSpec,
        adam: bool,
        compile: bool,
    ) -> None:
        self.params, self.training, self.adam, self.compile = params, training, adam, compile
        first = next(iter(params.values()))
        M, device = first.shape[0], first.device
        self.lr = torch.zeros(M, 1, 1, device=device)
        self.weight_decay = torch.zeros(M, 1, 1, device=device)
        self.l1 = torch.zeros(M, 1, 1, device=device)
        self.max_norm = torch.full((M,), math.inf, device=device)  # ∞: no max-norm
        # The same per model on the host, with Adam's step count: (η, λ, λ₁, t) by column.
        self.host = np.zeros((M, 4))
        self.decayed = [name in regularized for name in params]
        self.unit_dims = [units.get(name) for name in params]
        self.moments = {
            name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in params.items()
        }
        self.steps = torch.zeros(M, device=device)  # Adam's t per model, for stacked_update
        # torch's fused Adam over row views (one call per learning rate) is the fastest eager
        # CPU update; elsewhere the one-call stacked update (compiled, fused by inductor).
        self.fused = adam and device.type == "cpu" and not compile

    @torch.no_grad()
    def restart(self, rows: slice, config: TrialConfig) -> None:
        """Models ``rows`` take ``config``'s η, λ, λ₁ and c, with fresh moments and step counts."""
        self.lr[rows] = config.lr
        self.host[rows] = (config.lr, config.weight_decay, config.l1, 0)
        self.weight_decay[rows] = config.weight_decay
        self.l1[rows] = config.l1
        self.max_norm[rows] = math.inf if config.max_norm is None else config.max_norm
        for m1, m2 in self.moments.values():
            m1[rows], m2[rows] = 0.0, 0.0
        self.steps[rows] = 0.0

    @torch.no_grad()
    def step(
        self, stepping: torch.Tensor, rows: np.ndarray, *, uses_l1: bool, uses_max_norm: bool
    ) -> None:
        """One step of every model whose ``stepping`` is set (``rows``: the same models as the
        host knows them, for the fused CPU kernel); ``uses_l1``: some model's λ₁ is not 0,
        ``uses_max_norm``: some model has a max-norm c (otherwise nothing is projected)."""
        # The Parameters themselves (updated in place under no_grad): a compiled update sees
        # them as static for CUDA graphs, which a detached alias is not.
        params: list[torch.Tensor] = list(self.params.values())
        grads = [
            p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params.values()
        ]
        moments = list(self.moments.values())
        l1 = self.l1 if uses_l1 else None
        max_norm = self.max_norm if uses_max_norm else None
        decoupled = self.training.l2_mode == "decoupled"
        if not self.fused:
            update = (
                compiled.compile_step(stacked_update, stepping.device)
                if self.compile
                else stacked_update
            )
            update(
                params,
                grads,
                moments,
                self.steps,
                stepping,
                lr=self.lr,
                weight_decay=self.weight_decay,
                l1=l1,
                decayed=self.decayed,
                adam=self.adam,
                decoupled=decoupled,
                momentum=self.training.momentum,
                grad_clip=self.training.grad_clip,
                max_norm=max_norm,
                unit_dims=self.unit_dims,
            )
            return
        # The fused kernel takes t from the host's count (the device's serves stacked_update).
        self.host[rows, 3] += 1  # counted before the step, as torch's Adam does
        values = self.host.copy()
        if self.training.grad_clip is not None:
            # Clipping comes between L1 and L2: both by the stacked arithmetic, not per run.
            grads = regularized_gradients(
                params,
                grads,
                weight_decay=self.weight_decay,
                l1=l1,
                decayed=self.decayed,
                decoupled=decoupled,
                grad_clip=self.training.grad_clip,
            )
            values[:, 1:3] = 0.0
        if decoupled:  # AdamW's L2 is no gradient: it shrinks the weights before the step
            decay_decoupled(
                params, stepping, lr=self.lr, weight_decay=self.weight_decay, decayed=self.decayed
            )
            values[:, 1] = 0.0
        runs = runs_of(rows, values)
        fused_adam_runs(runs, params, grads, moments, decayed=self.decayed)
        if max_norm is not None:
            project_max_norm(params, stepping, max_norm=max_norm, unit_dims=self.unit_dims)
