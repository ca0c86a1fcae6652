"""Every network a study can tune, built by one path: templates and ``layers`` stacks alike.

Networks take flat features ``[batch, n_features]`` (what the engines hold on the device) and
view them as ``[batch, *input_shape]`` with a leading ``nn.Unflatten`` where the shape has
axes. The built-in templates are layer stacks (:func:`template_layers`); a ``layers`` spec is
built by :mod:`trainer.nets.layers`; a ``plugin`` by its entry point (:mod:`trainer.nets.plugins`).

The trial's regularization reaches any of them the same way (:func:`configure`): every
Dropout (``Dropout1d/2d`` too) gets the trial's p, or its group's when the module carries a
``group`` attribute (as ``layers`` dropouts with a group do), and every BatchNorm the trial's
momentum. L2 and L1 apply to the parameters of rank ≥ 2 (:mod:`trainer.engines.regularizers`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from trainer.nets import plugins
from trainer.nets.layers import Walked, walk
from trainer.specs.network_spec import (
    ActivationLayer,
    ConvLayer,
    DropoutLayer,
    Layer,
    LinearLayer,
    ModelSpec,
    NormLayer,
    ResidualLayer,
    ShapeLayer,
)
from trainer.specs.spec_base import SpecError

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class NetworkError(SpecError):
    """The network does not fit the data, or its plugin cannot be built; ``field`` names
    where. (A layer that does not fit is a :class:`~trainer.nets.layers.LayerError`.)"""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field)


# The spec fields each built-in template is built from: what the API, the CLI and the report
# show of it (an MLP has no channels; a layers stack or a plugin none of these).
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden", "batch_norm", "dropout_groups"),
    "cnn": ("channels", "kernel_size", "stride", "hidden", "batch_norm", "dropout_groups"),
}


def _block(group: str | None, batch_norm: bool) -> list[Layer]:
    """BatchNorm → ReLU → Dropout: what follows every hidden layer of a template."""
    norm: list[Layer] = [NormLayer(type="batchnorm")] if batch_norm else []
    return [*norm, ActivationLayer(type="relu"), DropoutLayer(type="dropout", group=group)]


def template_layers(
    spec: ModelSpec, input_shape: tuple[int, ...], hidden: Sequence[int] | None = None
) -> tuple[list[Layer], list[Layer]]:
    """A template as two layer stacks: the CNN's convolutions (``[]`` for an MLP) and the
    MLP head. ``dropout_groups: per_layer`` names the dropouts ``layer1``, ``layer2``, …"""
    widths = list(spec.hidden if hidden is None else hidden)
    per_layer = spec.dropout_groups == "per_layer"
    names = iter(f"layer{i}" for i in range(1, 10_000))
    features: list[Layer] = []
    if spec.kind == "cnn":
        conv: Literal["conv1d", "conv2d"] = "conv1d" if len(input_shape) == 2 else "conv2d"
        for out in spec.channels:
            features += [
                ConvLayer(
                    type=conv,
                    out=out,
                    kernel=spec.kernel_size,
                    stride=spec.stride,
                    padding=spec.kernel_size // 2,
                ),
                *_block(next(names) if per_layer else None, spec.batch_norm),
            ]
        features.append(ShapeLayer(type="flatten"))
    head: list[Layer] = []
    for width in widths:
        head += [LinearLayer(type="linear", out=width)]
        head += _block(next(names) if per_layer else None, spec.batch_norm)
    return features, [*head, LinearLayer(type="linear")]


def _walk_template(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    n_outputs: int,
    hidden: Sequence[int] | None,
    build: bool,
) -> tuple[Walked, Walked | None]:
    if spec.kind == "cnn" and len(input_shape) not in (2, 3):
        raise NetworkError(
            "model.kind",
            f"model.kind 'cnn' needs inputs with a spatial shape (C, L) or (C, H, W), got "
            f"{input_shape}; use model.kind 'mlp' for tabular data",
        )
    features, head = template_layers(spec, input_shape, hidden)
    if not features:
        return walk(head, (math.prod(input_shape),), n_outputs, build=build), None
    conv = walk(features, input_shape, n_outputs, build=build, last=False)
    return walk(head, conv.shape, n_outputs, build=build), conv


def footprint(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    hidden: Sequence[int] | None = None,
) -> Walked:
    """The network's parameters and activations per sample, without allocating it (a
    plugin is built on the ``meta`` device, which allocates nothing). Raises
    :class:`~trainer.nets.layers.LayerError` naming the layer that does not fit the data."""
    if spec.kind == "layers":
        return walk(spec.layers or [], input_shape, n_outputs)
    if spec.kind == "plugin":
        return _plugin_footprint(spec, input_shape, n_outputs)
    head, conv = _walk_template(spec, input_shape, n_outputs, hidden, build=False)
    if conv is None:
        return head
    return Walked(
        head.shape, conv.parameters + head.parameters, conv.activations + head.activations
    )


def _plugin_footprint(spec: ModelSpec, input_shape: tuple[int, ...], n_outputs: int) -> Walked:
    """Build the plugin on the meta device and run a batch of two through it: its size, its
    activations (the outputs of its leaf modules) and whether it maps to ``n_outputs``."""
    try:
        with torch.device("meta"):
            net = build(spec, input_shape, n_outputs)
    except plugins.PluginError as exc:
        raise NetworkError(exc.field, str(exc)) from None
    activations = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output[0].numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        out = net.eval()(torch.zeros(2, math.prod(input_shape), device="meta"))
    except Exception as exc:
        raise NetworkError(
            "model.options",
            f"plugin {spec.name!r}'s network fails on inputs of shape (batch, "
            f"{', '.join(map(str, input_shape))}): {type(exc).__name__}: {exc}",
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    if tuple(out.shape) != (2, n_outputs):
        raise NetworkError(
            "model.options",
            f"plugin {spec.name!r}'s network maps (batch, {', '.join(map(str, input_shape))}) "
            f"to {tuple(out.shape[1:])} per sample, not ({n_outputs},) (the data's outputs)",
        )
    return Walked((n_outputs,), count_parameters(net), activations)


def build(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    hidden: Sequence[int] | None = None,
) -> nn.Module:
    """The network of ``spec`` on flat inputs, with torch's default initialisation under the
    current seed (dropout and momentum as :func:`configure` sets them)."""
    unflatten = [nn.Unflatten(1, input_shape)] if len(input_shape) > 1 else []
    if spec.kind == "plugin":
        assert spec.name is not None
        module = plugins.find(spec.name).build(input_shape, n_outputs, dict(spec.options))
        return nn.Sequential(*unflatten, module) if unflatten else module
    if spec.kind == "layers":
        walked = walk(spec.layers or [], input_shape, n_outputs, build=True)
        return nn.Sequential(*unflatten, *(walked.modules or []))
    head, conv = _walk_template(spec, input_shape, n_outputs, hidden, build=True)
    if conv is None:
        return nn.Sequential(*(head.modules or []))
    # Named parts: the same parameter names as the CNN class of model files of version 1.
    parts = OrderedDict(
        view=unflatten[0],
        features=nn.Sequential(*(conv.modules or [])),
        head=nn.Sequential(*(head.modules or [])),
    )
    return nn.Sequential(parts)


def narrow(width: float, units: int) -> int:
    """A hidden width ``units`` scaled by ``width`` in (0, 1]: rounded half up, at least 1."""
    return max(1, math.floor(width * units + 0.5))


def narrowed(
    spec: ModelSpec,
    width: float,
    input_shape: tuple[int, ...],
    n_outputs: int,
    hidden: Sequence[int] | None = None,
) -> tuple[ModelSpec, list[int]]:
    """``spec`` (with template widths ``hidden``) as the network of size ``width`` and its
    template widths: every hidden width w becomes :func:`narrow` (w) — a template's ``hidden``
    and ``channels``, a ``layers`` stack's ``out`` s (its last linear has none) — except where a
    residual's body must end at its input's width, which it then keeps (the input's width,
    scaled or not). Units keep their order, so the narrow network's units are the leading ones
    of the wide network's, layer by layer (what the population's masks rely on)."""
    widths = list(spec.hidden if hidden is None else hidden)
    if spec.kind == "plugin":
        raise NetworkError(
            "search_space.width",
            "search_space.width scales a template's or a layers stack's widths; a plugin's "
            "widths are its own code",
        )
    if spec.kind == "layers":
        layers = _narrowed_layers(spec.layers or [], width, input_shape, n_outputs, None)
        return spec.model_copy(update={"layers": layers}), widths
    scaled = [narrow(width, w) for w in widths]
    channels = [narrow(width, c) for c in spec.channels]
    return spec.model_copy(update={"hidden": scaled, "channels": channels}), scaled


def _narrowed_layers(
    layers: Sequence[Layer],
    width: float,
    shape: tuple[int, ...],
    n_outputs: int,
    ends_at: int | None,
) -> list[Layer]:
    """:func:`narrowed` of a layer list on inputs of ``shape``; ``ends_at``: a residual body's
    last Linear/Conv gets that width (its input's), whatever its own ``out`` scales to."""
    weighted = [i for i, x in enumerate(layers) if isinstance(x, LinearLayer | ConvLayer)]
    result: list[Layer] = []
    for i, layer in enumerate(layers):
        new: Layer = layer
        if isinstance(layer, LinearLayer | ConvLayer) and layer.out is not None:
            out = ends_at if ends_at is not None and i == weighted[-1] else None
            new = layer.model_copy(update={"out": out or narrow(width, layer.out)})
        elif isinstance(layer, ResidualLayer):
            body = _narrowed_layers(layer.layers, width, shape, n_outputs, shape[0])
            new = layer.model_copy(update={"layers": body})
        result.append(new)
        if not (isinstance(new, LinearLayer) and new.out is None):  # the last layer: no shape
            shape = walk([new], shape, n_outputs, last=False).shape
    return result


def configure(
    net: nn.Module, *, dropout: Callable[[str | None], float], bn_momentum: float
) -> nn.Module:
    """Give every Dropout the p of its group (``dropout(group)``; None: no group) and every
    BatchNorm the momentum."""
    for module in net.modules():
        if isinstance(module, DROPOUTS):
            module.p = dropout(getattr(module, "group", None))
        elif isinstance(module, NORMS):
            module.momentum = bn_momentum
    return net


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_text(layer: Layer) -> str:
    values = layer.model_dump(exclude={"type", "layers"}, exclude_none=True)
    if isinstance(layer, LinearLayer) and layer.out is None:
        values = {"out": "outputs"}
    if isinstance(layer, ResidualLayer):
        return "residual(" + " → ".join(_layer_text(x) for x in layer.layers) + ")"
    inside = ", ".join(f"{k}={v}" for k, v in values.items())
    return f"{layer.type}({inside})" if inside else layer.type


def summary(spec: ModelSpec) -> str:
    """The network in one line, as a person would say it (the report's "Network")."""
    if spec.kind == "layers":
        return " → ".join(_layer_text(x) for x in spec.layers or [])
    if spec.kind == "plugin":
        about = describe(spec)
        where = (
            f"{about['package']} {about['version']}" if about["package"] else "not installed here"
        )
        options = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "no options"
        return f"plugin {spec.name} ({where}), {options}"
    norm = ", BatchNorm" if spec.batch_norm else ""
    groups = ", a dropout p per layer" if spec.dropout_groups == "per_layer" else ""
    head = "-".join(map(str, spec.hidden)) or "none (linear)"
    if spec.kind == "cnn":
        convs = "-".join(map(str, spec.channels))
        return (
            f"CNN: channels {convs}, kernel {spec.kernel_size}, stride {spec.stride}; "
            f"hidden {head}{norm}{groups}"
        )
    return f"MLP: hidden {head}{norm}{groups}"


def describe(spec: ModelSpec) -> dict[str, Any]:
    """The network as the report and the API show it: the template, the layers, or the
    plugin's name, options and installed version (None where it is not installed)."""
    if spec.kind == "plugin":
        try:
            plugin = plugins.find(spec.name or "")
            package, version = plugin.package, plugin.version
        except plugins.PluginError:
            package = version = None
        return {
            "kind": "plugin",
            "name": spec.name,
            "options": spec.options,
            "package": package,
            "version": version,
        }
    if spec.kind == "layers":
        return {
            "kind": "layers",
            "layers": [x.model_dump(exclude_none=True) for x in spec.layers or []],
        }
    return spec.model_dump(include={"kind", *TEMPLATE_FIELDS[spec.kind]})
