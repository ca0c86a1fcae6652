"""A declarative layer stack: its shapes, its size, and the torch modules it builds.

A shape here is one sample's, without the batch axis: ``(features,)`` for a flat input,
``(C, L)`` for a 1-D signal, ``(C, H, W)`` for an image. :func:`walk` follows a stack of
layer specs (:data:`trainer.specs.network_spec.Layer`) from the data's input shape, checking
each layer against the shape it receives, so that a bad stack is refused at submission with the
layer and the problem named, before anything is allocated. The same walk counts the parameters
and the activations (for the memory model of :mod:`trainer.engines.layout`) and builds the
modules, so
the check, the count and the network can never disagree.

Per layer, with n an input length, k the kernel, s the stride and p the padding:

* convolution and pooling: output length ⌊(n + 2p − k)/s⌋ + 1, which must be ≥ 1;
* parameters: Linear ``in·out + out``, Conv ``C·out·k^d + out``, BatchNorm ``2C``;
* activations: every layer's output, one word per element per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainer.specs.network_spec import (
    ActivationLayer,
    ConvLayer,
    DropoutLayer,
    Layer,
    LeakyReLULayer,
    LinearLayer,
    NormLayer,
    PoolLayer,
    ResidualLayer,
    ShapeLayer,
)
from trainer.specs.spec_base import SpecError

Shape = tuple[int, ...]
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
POOLS: dict[str, type[nn.Module]] = {
    "maxpool1d": nn.MaxPool1d,
    "maxpool2d": nn.MaxPool2d,
    "avgpool1d": nn.AvgPool1d,
    "avgpool2d": nn.AvgPool2d,
}
# The rank of input each spatial layer takes: (C, L) or (C, H, W).
RANKS = {"conv1d": 2, "conv2d": 3, **{name: 1 + int(name[-2]) for name in POOLS}}


class LayerError(SpecError):
    """A layer does not fit the shape it receives: the message names it (``model.layers[3]``)
    and ``field`` is its dotted place in the spec (``model.layers.3``), for a 422."""

    def __init__(self, path: str, layer: str, problem: str) -> None:
        super().__init__(f"{path} ({layer}): {problem}", path.replace("[", ".").replace("]", ""))


class Residual(nn.Module):
    """``x + f(x)``: the body's output is added to its input (shapes checked by the walk)."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@dataclass
class Walked:
    """What a stack is on a given input: its output shape, size, and (if built) modules."""

    shape: Shape
    parameters: int = 0
    activations: int = 0  # per sample, the sum over layers of their output's elements
    modules: list[nn.Module] | None = None


def walk(
    layers: Sequence[Layer],
    input_shape: Shape,
    n_outputs: int,
    *,
    path: str = "model.layers",
    build: bool = False,
    last: bool = True,
) -> Walked:
    """Follow ``layers`` from ``input_shape``; raise :class:`LayerError` at the first misfit.

    ``last``: this list ends the network, so its last layer must be the ``linear`` without
    ``out`` whose width is ``n_outputs`` (and no other layer may leave ``out`` out).
    """
    result = Walked(tuple(input_shape), modules=[] if build else None)
    for i, layer in enumerate(layers):
        where = f"{path}[{i}]"
        final = last and i == len(layers) - 1
        shape, params, modules = _step(layer, result.shape, n_outputs, where, final, build)
        result.shape = shape
        result.parameters += params
        result.activations += math.prod(shape)
        if result.modules is not None:
            result.modules += modules
    if last and not (isinstance(layers[-1], LinearLayer) and layers[-1].out is None):
        raise LayerError(
            f"{path}[{len(layers) - 1}]",
            layers[-1].type,
            "the last layer must be a linear without 'out': its width is the data's "
            f"{n_outputs} outputs",
        )
    return result


def _rank_problem(layer: str, shape: Shape, rank: int) -> str:
    wanted = {1: "a flat input (features,)", 2: "(channels, length)", 3: "(channels, H, W)"}
    hint = "; add a flatten before it" if rank == 1 else ""
    return f"needs {wanted[rank]}, got shape {shape}{hint}"


Step = tuple[Shape, int, list[nn.Module]]  # output shape, parameters, modules (if built)


def _step(layer: Layer, shape: Shape, n_outputs: int, where: str, final: bool, build: bool) -> Step:
    """One layer: its output shape, its parameter count and (if ``build``) its modules."""
    kind = layer.type
    if isinstance(layer, LinearLayer):
        if len(shape) != 1:
            raise LayerError(where, kind, _rank_problem(kind, shape, 1))
        if layer.out is None and not final:
            raise LayerError(where, kind, "only the network's last linear may leave 'out' out")
        out = n_outputs if layer.out is None else layer.out
        linear: list[nn.Module] = [nn.Linear(shape[0], out)] if build else []
        return (out,), shape[0] * out + out, linear
    if isinstance(layer, ConvLayer | PoolLayer):
        rank = RANKS[kind]
        if len(shape) != rank:
            raise LayerError(where, kind, _rank_problem(kind, shape, rank))
        return _spatial(layer, shape, where, build)
    if isinstance(layer, NormLayer):
        norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return shape, 2 * shape[0], [norm(shape[0])] if build else []
    if isinstance(layer, DropoutLayer):
        if not build:
            return shape, 0, []
        dropout = nn.Dropout()
        dropout.group = layer.group  # type: ignore[assignment]  # read by trainer.nets.networks
        return shape, 0, [dropout]
    if isinstance(layer, ActivationLayer | LeakyReLULayer):
        if not build:
            return shape, 0, []
        if isinstance(layer, LeakyReLULayer):
            return shape, 0, [nn.LeakyReLU(layer.slope)]
        return shape, 0, [ACTIVATIONS[kind]()]
    if isinstance(layer, ShapeLayer):
        if kind == "flatten":
            return (math.prod(shape),), 0, [nn.Flatten()] if build else []
        if len(shape) < 2:
            raise LayerError(where, kind, f"needs (channels, positions…), got shape {shape}")
        pool = nn.AdaptiveAvgPool2d(1) if len(shape) == 3 else nn.AdaptiveAvgPool1d(1)
        return (shape[0],), 0, [pool, nn.Flatten()] if build else []
    assert isinstance(layer, ResidualLayer)
    body = walk(layer.layers, shape, n_outputs, path=f"{where}.layers", build=build, last=False)
    if body.shape != shape:
        raise LayerError(
            where,
            kind,
            f"its layers map {shape} to {body.shape}; a residual's output shape must be its "
            "input's",
        )
    residual: list[nn.Module] = []
    if body.modules is not None:
        residual.append(Residual(nn.Sequential(*body.modules)))
    return shape, body.parameters, residual


def _spatial(layer: ConvLayer | PoolLayer, shape: Shape, where: str, build: bool) -> Step:
    """A convolution or a pooling: output lengths ⌊(n + 2p − k)/s⌋ + 1 per spatial axis."""
    channels, *spatial = shape
    k = layer.kernel
    if isinstance(layer, ConvLayer):
        if layer.padding == "same" and k % 2 == 0:
            raise LayerError(
                where, layer.type, f"padding 'same' needs an odd kernel, got {k}; give a number"
            )
        p, s = (k // 2 if layer.padding == "same" else layer.padding), layer.stride
    else:
        p, s = 0, layer.stride or k
    lengths = tuple((n + 2 * p - k) // s + 1 for n in spatial)
    if min(lengths) < 1:
        raise LayerError(
            where,
            layer.type,
            f"kernel {k} is larger than the input's padded size {tuple(n + 2 * p for n in spatial)}"
            f" (input shape {shape})",
        )
    if isinstance(layer, PoolLayer):
        return (channels, *lengths), 0, [POOLS[layer.type](k, s)] if build else []
    conv = nn.Conv2d if layer.type == "conv2d" else nn.Conv1d
    params = channels * layer.out * k ** len(spatial) + layer.out
    convolution: list[nn.Module] = [conv(channels, layer.out, k, s, p)] if build else []
    return (layer.out, *lengths), params, convolution
