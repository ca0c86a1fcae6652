"""Networks of a ModelSpec with a fixed dropout and momentum, as a trial would build them."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from trainer.nets import networks
from trainer.specs.study_spec import ModelSpec


def build_model(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    dropout: float,
    bn_momentum: float,
    hidden: Sequence[int] | None = None,
) -> nn.Module:
    net = networks.build(spec, input_shape, n_outputs, hidden=hidden)
    return networks.configure(net, dropout=lambda _: dropout, bn_momentum=bn_momentum)


def parameter_count(
    spec: ModelSpec, input_shape: tuple[int, ...], n_outputs: int, **kwargs: Sequence[int]
) -> int:
    return networks.footprint(spec, input_shape, n_outputs, **kwargs).parameters
