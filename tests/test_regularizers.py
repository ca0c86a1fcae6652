"""L2 (coupled, decoupled) and L1 checked against hand-computed updates."""

from __future__ import annotations

import copy

import pytest
import torch
from networks_of import build_model
from torch import nn
from torch.nn import functional as F

from trainer.engines.regularizers import make_optimizer, split_parameters
from trainer.specs.study_spec import ModelSpec


def two_layer() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    return net, x, y


def data_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    clone = copy.deepcopy(net)
    F.cross_entropy(clone(x), y).backward()
    return [p.grad.clone() for p in clone.parameters()]


@pytest.mark.parametrize("decoupled", [False, True])
def test_one_sgd_step_matches_the_hand_computed_update(decoupled: bool) -> None:
    net, x, y = two_layer()
    lr, lam = 0.1, 0.05
    before = [p.detach().clone() for p in net.parameters()]
    grads = data_grads(net, x, y)
    opt, reg = make_optimizer(
        net, optimizer="sgd", lr=lr, weight_decay=lam, l1=0.0, decoupled=decoupled, momentum=0.0
    )
    F.cross_entropy(net(x), y).backward()
    reg.decay(lr)
    opt.step()
    weights = {id(w) for w in split_parameters(net)[0]}
    for p, theta, g in zip(net.parameters(), before, grads, strict=True):
        if id(p) not in weights:  # biases are not regularized
            expected = theta - lr * g
        elif decoupled:  # θ ← θ − ηλθ, then the plain SGD step
            expected = (1 - lr * lam) * theta - lr * g
        else:  # the gradient gets + λθ
            expected = theta - lr * (g + lam * theta)
        torch.testing.assert_close(p.detach(), expected)


def test_decoupled_adam_equals_adamw_on_the_regularized_group() -> None:
    net, x, y = two_layer()
    ref = copy.deepcopy(net)
    lr, lam = 0.01, 0.1
    opt, reg = make_optimizer(
        net, optimizer="adam", lr=lr, weight_decay=lam, l1=0.0, decoupled=True
    )
    weights, others = split_parameters(ref)
    adamw = torch.optim.AdamW(
        [{"params": weights, "weight_decay": lam}, {"params": others, "weight_decay": 0.0}],
        lr=lr,
    )
    for _ in range(5):
        for model, optimizer in ((net, opt), (ref, adamw)):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if model is net:
                reg.decay(lr)
            optimizer.step()
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_l1_gradient_is_lambda_sign_theta_on_weights_only() -> None:
    model = build_model(ModelSpec(hidden=[5]), (3,), 2, dropout=0.0, bn_momentum=0.1)
    first = model[0]
    with torch.no_grad():
        first.weight[0, 0] = 0.0  # sign(0) = 0
    lam1 = 0.01
    _, reg = make_optimizer(
        model, optimizer="sgd", lr=0.1, weight_decay=0.0, l1=lam1, decoupled=False
    )
    reg.penalty().backward()
    weights = split_parameters(model)[0]
    for w in weights:
        torch.testing.assert_close(w.grad, lam1 * torch.sign(w.detach()))
    assert first.weight.grad[0, 0] == 0.0
    ids = {id(w) for w in weights}
    untouched = [p for p in model.parameters() if id(p) not in ids]
    assert len(untouched) == 4  # two Linear biases, BatchNorm weight and bias
    assert all(p.grad is None for p in untouched)


def test_l1_and_l2_can_include_biases_and_batchnorm() -> None:
    model = build_model(ModelSpec(hidden=[5]), (3,), 2, dropout=0.0, bn_momentum=0.1)
    regularized, others = split_parameters(model, include_bias_and_bn=True)
    assert others == [] and len(regularized) == len(list(model.parameters()))
    _, reg = make_optimizer(
        model,
        optimizer="adam",
        lr=0.1,
        weight_decay=0.0,
        l1=0.5,
        decoupled=False,
        include_bias_and_bn=True,
    )
    reg.penalty().backward()
    bn = model[1]
    torch.testing.assert_close(bn.weight.grad, 0.5 * torch.sign(bn.weight.detach()))


def test_sparsity_counts_weights_below_threshold() -> None:
    net = nn.Sequential(nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].weight[:3].fill_(5e-4)
    _, reg = make_optimizer(net, optimizer="sgd", lr=0.1, weight_decay=0, l1=0, decoupled=False)
    assert reg.sparsity() == pytest.approx(0.3)
