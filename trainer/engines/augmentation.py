"""Data augmentation of the training rows, on the device, for M stacked models at once.

Both engines call :meth:`StackedAugmentation.apply` on a training step's batch, the
population with its M models' rows ``x`` ``[M, B, d]`` (flat features, the sample shape
``input_shape`` beside them, standardized by each model's fold), the per-trial engine with its
one model's batch as M = 1; validation, scoring and prediction never call it. Every random
number is counter-based (:mod:`trainer.rng`), keyed per model by (its fold's seed, its own
epoch, the step, the operation) through :func:`step_keys`, so a model draws the same
augmentation alone, in a stack beside any neighbours, and in either engine. Per model m, in
this order, each only where the model has it (a model without it keeps its rows bit for bit):

* flip p (images ``[C, H, W]``): each sample is mirrored along its last axis (x ↦ W − 1 − x)
  with probability p: u < p, u ~ U[0, 1);
* shift s (signals ``[C, L]``, images ``[C, H, W]``): each sample is translated along each
  spatial axis by its own integer o = ⌊u·(2s + 1)⌋ − s, uniform on {−s, …, s},
  out[i] = x[i − o] where 0 ≤ i − o < L, else 0 (zero fill: the fold's mean, as the inputs
  are standardized);
* rotate r and scale s (images): each sample is resampled through its own affine map, angle
  θ = (2u − 1)·r degrees and zoom a = 1 + (2u′ − 1)·s, output point p ↦ input point
  R(θ)·p / a about the image centre (in pixel units, so non-square images rotate rigidly;
  θ = 90° is ``torch.rot90(image, 1, (H, W))``), bilinear, zeros outside (``F.affine_grid``
  and ``F.grid_sample``, one call for the stack);
* noise σ: x ↦ x + σ·z, z ~ N(0, 1) by Box–Muller from two uniforms, z = √(−2 ln(1 − u₁))
  · (cos 2πu₂, sin 2πu₂) (|z| < 5.8: u₁'s 24 bits cut the tail beyond 5.8σ);
* mixup α (Zhang et al., 2018): one λ ~ Beta(α, α) per model and step and a random pairing
  π of the batch's real rows (padding rows are paired only with padding rows), x̃ = λx +
  (1 − λ)x[π], and the targets likewise: ỹ = λy + (1 − λ)y[π] with y one-hot class
  probabilities (the loss then a soft-target cross-entropy) or regression values.

λ ~ Beta(α, α) is exact: λ = G₁/(G₁ + G₂) with G₁, G₂ ~ Gamma(α) independent, each G(α) =
G(α + 1)·U^{1/α} (the boost that makes a shape below 1 exact) and G(α + 1) by Marsaglia and
Tsang (2000): d = α + 2/3, c = 1/√(9d), x ~ N(0, 1), v = (1 + cx)³, accepted when v > 0 and
ln u < x²/2 + d − dv + d ln v, G = dv. Its acceptance rate is ≥ 0.95 for a shape ≥ 1, so
:data:`ROUNDS` proposals drawn at once leave a draw unaccepted with probability below 0.05⁸ ≈
4·10⁻¹¹; such a draw takes λ = 1/2. Logarithms throughout (λ = sigmoid(ln G₁ − ln G₂)) keep
a tiny α, whose G underflows, exact.

Nothing here reads a value back to the host: every per-model choice is a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch.nn import functional as F

from trainer import rng
from trainer.specs.study_spec import AUGMENT, SpecError, Task

# The operations in the order they apply; each draws from its own column of step_keys.
OPS = ("flip", "shift", "affine", "noise", "mixup")
AUGMENT_STREAM = 0xA06  # step_keys' stream, apart from the batch order and dropout keys
ROUNDS = 8  # Marsaglia–Tsang proposals per Gamma draw
# What sample shapes (their rank) each augmentation needs.
NEEDS: dict[str, tuple[tuple[int, ...], str]] = {
    "shift": ((2, 3), "signals [C, L] or images [C, H, W]"),
    "flip": ((3,), "images [C, H, W]"),
    "rotate": ((3,), "images [C, H, W]"),
    "scale": ((3,), "images [C, H, W]"),
}


@dataclass(frozen=True)
class Augmentation:
    """A trial's augmentation: noise σ, mixup α, shift s, flip p, rotate (degrees), scale
    (fraction); 0 is off."""

    noise: float = 0.0
    mixup: float = 0.0
    shift: int = 0
    flip: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Augmentation:
        """From a trial's values, ``augment.<name>`` each (absent: off)."""

        def value(name: str) -> float:
            return float(values.get(AUGMENT + name, 0.0))

        return cls(
            noise=value("noise"),
            mixup=value("mixup"),
            shift=int(value("shift")),
            flip=value("flip"),
            rotate=value("rotate"),
            scale=value("scale"),
        )

    def values(self) -> dict[str, float | int]:
        """The augmentations that are on, as ``augment.<name>`` (a trial's parameters)."""
        return {AUGMENT + f.name: v for f in fields(self) if (v := getattr(self, f.name))}

    def ops(self) -> set[str]:
        """The operations (:data:`OPS`) this augmentation runs."""
        on = {"flip": self.flip, "shift": self.shift, "noise": self.noise, "mixup": self.mixup}
        return {op for op, v in on.items() if v} | (
            {"affine"} if self.rotate or self.scale else set()
        )


def check_data(given: Iterable[str], input_shape: Sequence[int]) -> None:
    """Refuse an augmentation (``augment.<name>``, as the search space gives it) that the
    data's sample shape cannot take, naming its field: ``SpecError``."""
    for name in given:
        ranks, what = NEEDS.get(name.removeprefix(AUGMENT), ((len(input_shape),), ""))
        if len(input_shape) not in ranks:
            field = f"search_space.{name}"
            raise SpecError(f"{field}: needs {what}, the dataset is {describe(input_shape)}", field)


def describe(input_shape: Sequence[int]) -> str:
    """What a sample shape is, in words."""
    shape = f"[{', '.join(map(str, input_shape))}]"
    if len(input_shape) == 1:
        return f"a table of {input_shape[0]} features"
    if len(input_shape) == 2:
        return f"signals [C, L] = {shape}"
    if len(input_shape) == 3:
        return f"images [C, H, W] = {shape}"
    return f"samples of shape {shape}"


def step_keys(epoch_key: torch.Tensor, steps: int) -> torch.Tensor:
    """Keys ``[steps, len(OPS), M]`` of an epoch's augmentation, from each model's epoch key
    (``rng.keys(seed, epoch)``): entry (s, o, m) depends on model m's seed, epoch, s and o
    only."""
    return rng.key_table(rng.keys(epoch_key, AUGMENT_STREAM), steps, len(OPS))


# --- the operations, each on [M, b, *shape] with its draws given ----------------------------


def flip(x: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """Samples ``x`` ``[M, b, …]`` mirrored along their last axis where ``drawn`` ``[M, b]``."""
    return torch.where(_rows(drawn, x), x.flip(-1), x)


def shift(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Samples ``x`` ``[M, b, C, *spatial]`` translated by ``offsets`` ``[M, b, len(spatial)]``
    (integers) along each spatial axis, zero fill: out[i] = x[i − o]."""
    axes = offsets.shape[-1]
    for a in range(axes):
        dim = x.dim() - axes + a
        length = x.shape[dim]
        source = torch.arange(length, device=x.device) - offsets[..., a, None]  # [M, b, L]
        view = [*source.shape[:2]] + [1] * (x.dim() - 2)
        view[dim] = length
        source = source.view(view)
        inside = (source >= 0) & (source < length)
        index = source.clamp(0, length - 1).expand(x.shape)
        x = torch.where(inside, x.gather(dim, index), 0.0)
    return x


def affine(
    x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, on: torch.Tensor
) -> torch.Tensor:
    """Images ``x`` ``[M, b, C, H, W]`` rotated by ``angle`` (radians) and zoomed by ``zoom``
    ``[M, b]`` about their centre, bilinear with zeros outside, for the models ``on`` ``[M]``
    (the others as they are)."""
    M, b, C, H, W = x.shape
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # Output point p ↦ input point R(θ)·p/a in pixels, written in grid_sample's [−1, 1] units.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (H / W), torch.zeros_like(cos)], -1),
            torch.stack([sin * (W / H), cos, torch.zeros_like(cos)], -1),
        ],
        -2,
    ).view(M * b, 2, 3)
    flat = x.reshape(M * b, C, H, W)
    grid = F.affine_grid(theta, [M * b, C, H, W], align_corners=False)
    moved = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(on.view(M, 1, 1, 1, 1), moved.view(x.shape), x)


def mix(
    x: torch.Tensor, targets: torch.Tensor, pairs: torch.Tensor, lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: λx + (1 − λ)x[π] and the same of ``targets`` (``[M, b, …]`` each; one-hot or
    values), with ``pairs`` π ``[M, b]`` and ``lam`` λ ``[M]``."""

    def mixed(values: torch.Tensor) -> torch.Tensor:
        weight = _rows(lam, values)
        partner = values.gather(1, _rows(pairs, values).expand(values.shape))
        return weight * values + (1.0 - weight) * partner

    return mixed(x), mixed(targets)


def _rows(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` ``[M]`` or ``[M, b]`` shaped to broadcast against ``like`` ``[M, b, …]``."""
    return value.reshape(*value.shape, *[1] * (like.dim() - value.dim()))


# --- the draws ------------------------------------------------------------------------------


def normal(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """N(0, 1) draws ``[M, *shape]`` per key, by Box–Muller (both halves used): element k
    depends on its key and k only, whatever ``shape``'s leading size."""
    n = math.prod(shape)
    u = rng.uniform(key, (-(-n // 2), 2))
    radius = torch.sqrt(-2.0 * torch.log1p(-u[..., 0]))
    turn = 2 * math.pi * u[..., 1]
    z = torch.stack([radius * torch.cos(turn), radius * torch.sin(turn)], -1)
    return z.reshape(len(key), -1)[:, :n].reshape(len(key), *shape)


def beta(key: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """λ ~ Beta(α, α) ``[M]`` per key (α ``[M]`` > 0), exact: see the module's docstring."""
    u = rng.uniform(key, (2, ROUNDS + 1, 3))
    proposals, boost = u[:, :, :ROUNDS], u[:, :, ROUNDS, 0]  # [M, 2, R, 3], [M, 2]
    a = alpha[:, None, None]
    d = a + 2.0 / 3.0  # Marsaglia–Tsang for shape α + 1: d = (α + 1) − 1/3
    c = 1.0 / torch.sqrt(9.0 * d)
    radius = torch.sqrt(-2.0 * torch.log1p(-proposals[..., 0]))
    x = radius * torch.cos(2 * math.pi * proposals[..., 1])
    v = (1.0 + c * x) ** 3
    log_v = torch.log(torch.where(v > 0, v, 1.0))
    accepted = (v > 0) & (torch.log1p(-proposals[..., 2]) < 0.5 * x * x + d - d * v + d * log_v)
    rounds = torch.arange(ROUNDS, device=key.device)
    first = torch.where(accepted, rounds, ROUNDS).amin(-1, keepdim=True)  # [M, 2, 1]
    log_gamma = torch.log(d[..., 0]) + log_v.gather(-1, first.clamp(max=ROUNDS - 1))[..., 0]
    log_gamma = log_gamma + torch.log1p(-boost) / alpha[:, None]  # G(α) = G(α + 1)·U^{1/α}
    lam = torch.sigmoid(log_gamma[:, 0] - log_gamma[:, 1])
    return torch.where((first[..., 0] < ROUNDS).all(-1), lam, 0.5)


# --- M models' augmentations ----------------------------------------------------------------


class StackedAugmentation:
    """The augmentations of M models of a stack on samples of ``input_shape``: each model's
    values as tensors ``[M]`` (:meth:`load`), applied by :meth:`apply`."""

    def __init__(
        self,
        M: int,
        input_shape: Sequence[int],
        task: Task,
        n_outputs: int,
        device: torch.device | str,
    ) -> None:
        self.input_shape, self.task, self.n_outputs = tuple(input_shape), task, n_outputs
        self.values = {f.name: torch.zeros(M, device=device) for f in fields(Augmentation)}
        self.ops: tuple[str, ...] = ()  # what some model runs (in OPS' order): the rest is skipped

    @torch.no_grad()
    def load(self, rows: slice, augmentation: Augmentation) -> None:
        """Models ``rows`` take ``augmentation``'s values (:meth:`use` says what runs)."""
        for name, values in self.values.items():
            values[rows] = float(getattr(augmentation, name))

    def use(self, augmentations: Iterable[Augmentation]) -> None:
        """Run the operations that some of ``augmentations`` (the models in the stack) has."""
        used = set[str]().union(*(a.ops() for a in augmentations))
        self.ops = tuple(op for op in OPS if op in used)

    def apply(
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        valid: torch.Tensor | None,
        keys: torch.Tensor,
        width: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A step's training rows augmented: ``x`` ``[M, b, d]``, ``targets`` (class ids
        ``[M, b]``, or values ``[M, b, 1]``), ``valid`` ``[M, b]`` the real rows (a prefix of
        each model's batch; None: all), ``keys`` ``[len(OPS), M]`` the step's
        (:func:`step_keys`), ``width`` the engine's batch size B ≥ b. With mixup, class ids
        come back as class probabilities ``[M, b, classes]``."""
        if not self.ops:
            return x, targets
        v, M, b = self.values, x.shape[0], x.shape[1]
        samples = x.view(M, b, *self.input_shape)
        key = dict(zip(OPS, keys, strict=True))
        if "flip" in self.ops:
            samples = flip(samples, rng.uniform(key["flip"], (b,)) < v["flip"][:, None])
        if "shift" in self.ops:
            axes = len(self.input_shape) - 1
            s = v["shift"][:, None, None]
            drawn = torch.floor(rng.uniform(key["shift"], (b, axes)) * (2 * s + 1)) - s
            samples = shift(samples, torch.minimum(drawn, s).long())
        if "affine" in self.ops:
            u = 2 * rng.uniform(key["affine"], (b, 2)) - 1
            angle = u[..., 0] * v["rotate"][:, None] * (math.pi / 180)
            zoom = 1 + u[..., 1] * v["scale"][:, None]
            on = (v["rotate"] > 0) | (v["scale"] > 0)
            samples = affine(samples, angle, zoom, on)
        x = samples.reshape(M, b, -1)
        if "noise" in self.ops:
            x = x + _rows(v["noise"], x) * normal(key["noise"], (b, x.shape[-1]))
        if "mixup" in self.ops:
            real = torch.full((M,), b, device=x.device) if valid is None else valid.sum(1)
            pairs, lam = self.mixup_draws(key["mixup"], real, width)
            x, targets = mix(x, self.probabilities(targets), pairs[:, :b], lam)
        return x, targets

    def mixup_draws(
        self, key: torch.Tensor, real: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup's pairing π ``[M, width]`` of each model's ``real`` rows (the rest, padding,
        paired among themselves) and its λ ``[M]`` (1 where a model has no mixup)."""
        alpha = self.values["mixup"]
        on = alpha > 0
        lam = torch.where(on, beta(rng.keys(key, 0), torch.where(on, alpha, 1.0)), 1.0)
        # Drawn over the whole batch width, so that a partial batch pairs as a padded one.
        return rng.permutations(rng.keys(key, 1), real, width), lam

    def probabilities(self, targets: torch.Tensor) -> torch.Tensor:
        """Class ids as one-hot class probabilities (regression values as they are)."""
        if self.task != "classification":
            return targets
        # By comparison: F.one_hot checks the ids' range, a read on the host.
        classes = torch.arange(self.n_outputs, device=targets.device)
        return (targets[..., None] == classes).to(torch.float32)
