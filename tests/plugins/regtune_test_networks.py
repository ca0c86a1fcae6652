"""Network plugins for the tests: an installed distribution's entry points, as an operator's.

Putting this folder on ``sys.path`` (or ``PYTHONPATH``) makes ``importlib.metadata`` find the
``.dist-info`` beside it, exactly as it finds a distribution installed with pip.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class TinyConvNet(nn.Module):
    """A network written as people write them: modules as attributes, a custom forward with
    functional calls, a residual, channel dropout and pooling."""

    def __init__(self, input_shape: tuple[int, ...], n_outputs: int, width: int) -> None:
        super().__init__()
        channels = input_shape[0]
        self.conv = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(width)
        self.inner = nn.Conv2d(width, width, 3, padding=1)
        self.drop = nn.Dropout2d()
        self.pool = nn.MaxPool2d(2)
        self.head_drop = nn.Dropout()
        self.head = nn.Linear(width * math.prod(n // 2 for n in input_shape[1:]), n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(self.conv(x)))
        h = h + F.relu(self.inner(h))  # a residual
        h = self.pool(self.drop(h))
        return self.head(self.head_drop(torch.flatten(h, 1)))


def tiny_convnet(input_shape: tuple[int, ...], n_outputs: int, width: int = 4) -> nn.Module:
    return TinyConvNet(input_shape, n_outputs, width)


class Recurrent(nn.Module):
    """A GRU over a (steps, features) input: a layer the population engine cannot stack."""

    def __init__(self, input_shape: tuple[int, ...], n_outputs: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_shape[-1], hidden, batch_first=True)
        self.drop = nn.Dropout()
        self.head = nn.Linear(hidden, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x)
        return self.head(self.drop(last[0]))


def recurrent(input_shape: tuple[int, ...], n_outputs: int, hidden: int = 8) -> nn.Module:
    return Recurrent(input_shape, n_outputs, hidden)


def wrong_width(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """Maps to one output too many: refused at submission."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs + 1))
