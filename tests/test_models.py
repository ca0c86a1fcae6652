"""BatchNorm momentum and dropout p behave as the PyTorch conventions of SPEC.md."""

from __future__ import annotations

import math

import pytest
import torch
from networks_of import build_model
from torch import nn

from trainer.nets.networks import NetworkError
from trainer.specs.study_spec import ModelSpec


def test_batchnorm_running_stats_follow_pytorch_momentum() -> None:
    m = 0.3
    model = build_model(ModelSpec(hidden=[4]), (3,), 2, dropout=0.0, bn_momentum=m)
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d)
    torch.manual_seed(1)
    mean, var = torch.zeros(4), torch.ones(4)  # PyTorch's initial running statistics
    model.train()
    for _ in range(3):
        x = torch.randn(16, 3) * 2 + 1
        with torch.no_grad():
            h = model[0](x)
        model(x)
        # running = (1 − m)·running + m·batch; the variance is the unbiased batch variance
        mean = (1 - m) * mean + m * h.mean(0)
        var = (1 - m) * var + m * h.var(0, unbiased=True)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    # Evaluation normalizes with the running statistics, not the batch's.
    model.eval()
    x = torch.randn(5, 3)
    with torch.no_grad():
        h = model[0](x)
        expected = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
        torch.testing.assert_close(bn(h), expected)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.7])
def test_dropout_zeroes_a_fraction_p_and_scales_by_inverse_keep(p: float) -> None:
    model = build_model(
        ModelSpec(hidden=[1000], batch_norm=False), (1,), 1, dropout=p, bn_momentum=0.1
    )
    dropout = model[2]
    assert isinstance(dropout, nn.Dropout)
    torch.manual_seed(0)
    x = torch.rand(200, 1000) + 0.5  # strictly positive, so zeros come from dropout only
    out = dropout.train()(x)
    n = x.numel()
    zeroed = (out == 0).float().mean().item()
    # Binomial(n, p): five standard deviations is a bound a correct layer fails ~1e-6 of runs.
    assert abs(zeroed - p) < 5 * math.sqrt(p * (1 - p) / n)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    assert torch.equal(dropout.eval()(x), x)


def test_empty_hidden_is_a_linear_model() -> None:
    model = build_model(ModelSpec(hidden=[]), (7,), 3, dropout=0.5, bn_momentum=0.1)
    assert [type(m) for m in model] == [nn.Linear]


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_cnn_handles_1d_and_2d_inputs(shape: tuple[int, ...]) -> None:
    spec = ModelSpec(kind="cnn", channels=[4, 8], hidden=[16])
    model = build_model(spec, shape, 10, dropout=0.2, bn_momentum=0.1)
    x = torch.randn(5, math.prod(shape))
    assert model(x).shape == (5, 10)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == 0.1 for m in norms)


def test_cnn_refuses_tabular_input() -> None:
    with pytest.raises(NetworkError, match="spatial shape"):
        build_model(ModelSpec(kind="cnn"), (13,), 3, dropout=0.0, bn_momentum=0.1)
