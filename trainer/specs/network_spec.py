"""The network of a study: a template, a declarative layer stack, or a plugin, as specs.

A layer stack is validated here for its own sake (known types, bounds, nesting, size); its
shapes against the data are checked by :mod:`trainer.nets.layers` once the dataset is known.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trainer.specs.spec_base import Strict, _limits, at_most, check_widths

MAX_KERNEL = 64
MAX_STRIDE = 16
MAX_NESTING = 8  # residuals inside residuals
GROUP_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
# An entry point's name: no dots, colons, slashes or shell characters, so that it can only
# ever name an installed entry point, never a module path.
PLUGIN_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class LinearLayer(Strict):
    """``nn.Linear`` on a flat input; the last layer leaves ``out`` out (the data's outputs)."""

    type: Literal["linear"]
    out: Annotated[int | None, Field(ge=1), at_most("max_width")] = None


class ConvLayer(Strict):
    """``nn.Conv1d`` on ``(C, L)`` or ``nn.Conv2d`` on ``(C, H, W)``; ``padding "same"`` is
    ⌊kernel/2⌋ on each side (an odd kernel at stride 1 keeps the size)."""

    type: Literal["conv1d", "conv2d"]
    out: Annotated[int, Field(ge=1), at_most("max_width")]
    kernel: int = Field(ge=1, le=MAX_KERNEL)
    stride: int = Field(1, ge=1, le=MAX_STRIDE)
    padding: Literal["same"] | Annotated[int, Field(ge=0, le=MAX_KERNEL)] = "same"


class NormLayer(Strict):
    """BatchNorm over the features (rank 1) or the channels (rank 2 and 3)."""

    type: Literal["batchnorm"]


class DropoutLayer(Strict):
    """Inverted dropout; a ``group`` has its own p (``dropout.<group>``), else ``dropout``."""

    type: Literal["dropout"]
    group: str | None = Field(None, pattern=GROUP_NAME)


class ActivationLayer(Strict):
    type: Literal["relu", "gelu", "tanh", "sigmoid"]


class LeakyReLULayer(Strict):
    type: Literal["leaky_relu"]
    slope: float = Field(0.01, ge=0, le=1)


class PoolLayer(Strict):
    """Max or average pooling over ``(C, L)`` or ``(C, H, W)``; stride defaults to kernel."""

    type: Literal["maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"]
    kernel: int = Field(ge=1, le=MAX_KERNEL)
    stride: int | None = Field(None, ge=1, le=MAX_KERNEL)


class ShapeLayer(Strict):
    """``global_avgpool``: the mean over positions, ``(C, …)`` → ``(C,)``; ``flatten``."""

    type: Literal["global_avgpool", "flatten"]


class ResidualLayer(Strict):
    """``x + f(x)``, ``f`` the ``layers`` inside, whose output shape must be the input's."""

    type: Literal["residual"]
    layers: list[Layer] = Field(min_length=1)


Layer = Annotated[
    LinearLayer
    | ConvLayer
    | NormLayer
    | DropoutLayer
    | ActivationLayer
    | LeakyReLULayer
    | PoolLayer
    | ShapeLayer
    | ResidualLayer,
    Field(discriminator="type"),
]
ResidualLayer.model_rebuild()


def _count_layers(layers: list[Any], depth: int = 0) -> int:
    if depth > MAX_NESTING:
        raise ValueError(f"residuals may nest at most {MAX_NESTING} deep")
    return sum(
        1 + (_count_layers(x.layers, depth + 1) if isinstance(x, ResidualLayer) else 0)
        for x in layers
    )


def dropout_groups(layers: list[Any]) -> list[str]:
    """The dropout groups a layer list names, in order of first appearance."""
    seen: list[str] = []
    for layer in layers:
        if isinstance(layer, ResidualLayer):
            seen += [g for g in dropout_groups(layer.layers) if g not in seen]
        elif isinstance(layer, DropoutLayer) and layer.group and layer.group not in seen:
            seen.append(layer.group)
    return seen


def has_shared_dropout(layers: list[Any]) -> bool:
    """Whether a layer list has a dropout without a group (it takes ``dropout``)."""
    return any(
        (isinstance(x, DropoutLayer) and x.group is None)
        or (isinstance(x, ResidualLayer) and has_shared_dropout(x.layers))
        for x in layers
    )


JSONValue = str | int | float | bool | None | list[Any] | dict[str, Any]


class ModelSpec(Strict):
    """The network: a built-in template, a declarative ``layers`` stack, or a ``plugin``.

    ``mlp``: per hidden layer Linear → BatchNorm1d → ReLU → Dropout, then a Linear head;
    ``hidden: []`` is a linear model. ``cnn``: per entry of ``channels`` Conv (``kernel_size``,
    ``stride``, padding ⌊kernel/2⌋) → BatchNorm → ReLU → Dropout, flatten, then the MLP head.
    Both are layer stacks under the hood (:mod:`trainer.nets.layers`). ``dropout_groups:
    "per_layer"`` gives each of a template's dropouts its own p (groups ``layer1``, …).
    ``layers``: the list of ``layers``, checked against the data's shape at submission.
    ``plugin``: ``name`` is an entry point of the group ``regtune.networks`` installed on the
    API host and the workers, called with ``options`` as keyword arguments.
    """

    kind: Literal["mlp", "cnn", "layers", "plugin"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256, 256])
    batch_norm: bool = True
    channels: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32, 64])
    kernel_size: int = Field(3, ge=1, le=15)
    stride: int = Field(2, ge=1, le=4)
    dropout_groups: Literal["shared", "per_layer"] = "shared"
    layers: list[Layer] | None = None
    name: str | None = Field(None, pattern=PLUGIN_NAME)
    options: dict[str, JSONValue] = Field(default_factory=dict)

    @field_validator("hidden", "channels")
    @classmethod
    def _widths(cls, value: list[int], info: ValidationInfo) -> list[int]:
        check_widths(value, _limits(info))
        return value

    @field_validator("layers")
    @classmethod
    def _layer_count(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        limit = _limits(info).max_network_layers
        if value is not None and (count := _count_layers(value)) > limit:
            raise ValueError(f"at most {limit} layers (residual bodies included), got {count}")
        return value

    @field_validator("options")
    @classmethod
    def _options_size(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limit = _limits(info).max_plugin_options_bytes
        if len(json.dumps(value)) > limit:
            raise ValueError(f"must be at most {limit} bytes of JSON")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> ModelSpec:
        if self.kind == "layers" and not self.layers:
            raise ValueError("model.kind 'layers' needs model.layers, a non-empty list")
        if self.kind != "layers" and self.layers is not None:
            raise ValueError(f"model.layers is for model.kind 'layers', not {self.kind!r}")
        if self.kind == "plugin" and self.name is None:
            raise ValueError("model.kind 'plugin' needs model.name, an installed plugin's name")
        if self.kind != "plugin" and (self.name is not None or self.options):
            raise ValueError(f"model.name and model.options are for 'plugin', not {self.kind!r}")
        return self

    def groups(self, depth: int | None = None) -> list[str]:
        """The dropout groups of the network (a template's for ``depth`` hidden layers)."""
        if self.kind == "layers":
            return dropout_groups(self.layers or [])
        if self.kind == "plugin" or self.dropout_groups == "shared":
            return []
        blocks = len(self.channels) if self.kind == "cnn" else 0
        hidden = len(self.hidden) if depth is None else depth
        return [f"layer{i + 1}" for i in range(blocks + hidden)]

    def shares_dropout(self) -> bool:
        """Whether some dropout takes the shared ``dropout`` (not a group's own p)."""
        if self.kind == "layers":
            return has_shared_dropout(self.layers or [])
        return self.kind == "plugin" or self.dropout_groups == "shared"
