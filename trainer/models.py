"""Networks whose regularization is set per trial: dropout p and BatchNorm momentum m."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from trainer.spec import ModelSpec


def mlp_layers(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    *,
    dropout: float,
    bn_momentum: float,
    batch_norm: bool,
) -> list[nn.Module]:
    """Linear → BatchNorm1d → ReLU → Dropout per hidden width, then a Linear head."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(n_in, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width, momentum=bn_momentum))
        layers += [nn.ReLU(), nn.Dropout(dropout)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return layers


class CNN(nn.Module):
    """Conv → BatchNorm → ReLU → Dropout blocks over a 1-D or 2-D input, then an MLP head.

    Inputs arrive flat (``[batch, prod(input_shape)]``) and are viewed as
    ``[batch, *input_shape]`` with ``input_shape = (channels, *spatial)``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        spec: ModelSpec,
        n_out: int,
        *,
        dropout: float,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"a CNN needs inputs with a spatial shape (C, L) or (C, H, W), got {input_shape}; "
                "use model.kind 'mlp' for tabular data"
            )
        self.input_shape = input_shape
        conv, norm = (
            (nn.Conv1d, nn.BatchNorm1d) if len(input_shape) == 2 else (nn.Conv2d, nn.BatchNorm2d)
        )
        blocks: list[nn.Module] = []
        channels = input_shape[0]
        for out in spec.channels:
            blocks.append(conv(channels, out, spec.kernel_size, spec.stride, spec.kernel_size // 2))
            if spec.batch_norm:
                blocks.append(norm(out, momentum=bn_momentum))
            blocks += [nn.ReLU(), nn.Dropout(dropout)]
            channels = out
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            n_flat = self.features.eval()(torch.zeros(1, *input_shape)).shape[1]
        self.head = nn.Sequential(
            *mlp_layers(
                n_flat,
                spec.hidden,
                n_out,
                dropout=dropout,
                bn_momentum=bn_momentum,
                batch_norm=spec.batch_norm,
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(x.shape[0], *self.input_shape)))


def build_model(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    n_out: int,
    *,
    dropout: float,
    bn_momentum: float,
    hidden: Sequence[int] | None = None,
) -> nn.Module:
    """The network of ``spec`` with the trial's dropout and BN momentum (and searched widths)."""
    if hidden is not None:
        spec = spec.model_copy(update={"hidden": list(hidden)})
    if spec.kind == "cnn":
        return CNN(input_shape, spec, n_out, dropout=dropout, bn_momentum=bn_momentum)
    return nn.Sequential(
        *mlp_layers(
            math.prod(input_shape),
            spec.hidden,
            n_out,
            dropout=dropout,
            bn_momentum=bn_momentum,
            batch_norm=spec.batch_norm,
        )
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def feature_shapes(spec: ModelSpec, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The output shape ``(channels, *spatial)`` of each of a CNN's conv blocks ([] for an MLP).

    With padding k // 2 a convolution's output length is ⌊(n + 2⌊k/2⌋ − k) / stride⌋ + 1.
    """
    if spec.kind != "cnn":
        return []
    k, stride = spec.kernel_size, spec.stride
    shapes, spatial = [], list(input_shape[1:])
    for out in spec.channels:
        spatial = [(n + 2 * (k // 2) - k) // stride + 1 for n in spatial]
        shapes.append((out, *spatial))
    return shapes


def parameter_count(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    n_out: int,
    *,
    hidden: Sequence[int] | None = None,
) -> int:
    """``count_parameters(build_model(...))`` by arithmetic, without allocating the network.

    So that a size limit can refuse a model too large to build.
    """
    widths = list(spec.hidden if hidden is None else hidden)
    bn = 2 if spec.batch_norm else 0  # BatchNorm's weight and bias per channel
    total = 0
    shapes = [input_shape, *feature_shapes(spec, input_shape)]
    kernel = spec.kernel_size ** (len(input_shape) - 1)
    for (channels, *_), (out, *_) in itertools.pairwise(shapes):
        total += channels * out * kernel + out + bn * out
    n_in = math.prod(shapes[-1])
    for width in widths:
        total += n_in * width + width + bn * width
        n_in = width
    return total + n_in * n_out + n_out
