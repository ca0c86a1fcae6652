"""Each torch internal regtune reaches has a public fallback that computes the same thing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer import torch_internals


def without(monkeypatch: pytest.MonkeyPatch, internal: str) -> None:
    """Run the rest of the test as on a torch that lacks ``internal``."""
    monkeypatch.setattr(torch_internals, internal, None)


def test_the_fused_adam_fallback_takes_the_kernels_step(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 3)]

    def state() -> list[list[torch.Tensor]]:
        gen.manual_seed(0)
        params = [torch.randn(s, generator=gen) for s in shapes]
        grads = [torch.randn(s, generator=gen) for s in shapes]
        m1 = [torch.randn(s, generator=gen) * 0.1 for s in shapes]
        m2 = [torch.rand(s, generator=gen) * 0.1 for s in shapes]
        steps = [torch.tensor(float(t)) for t in (1, 3, 7)]  # each tensor its own t
        return [params, grads, m1, m2, steps]

    kernel, fallback = state(), state()
    hyper = {"lr": 3e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    torch_internals.fused_adam_(*kernel, **hyper)
    without(monkeypatch, "_FUSED_ADAM")
    torch_internals.fused_adam_(*fallback, **hyper)
    for a, b in zip(kernel, fallback, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert not torch.equal(kernel[0][0], state()[0][0])  # it did step


def test_a_fused_adam_of_another_schema_falls_back_to_the_public_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def other_schema(*args: object, **kwargs: object) -> None:
        raise TypeError("_fused_adam_() got an unexpected keyword argument 'beta1'")

    params, grads = [torch.ones(3)], [torch.full((3,), 0.5)]
    moments, steps = [torch.zeros(3)], [torch.tensor(1.0)]
    monkeypatch.setattr(torch_internals, "_FUSED_ADAM", other_schema)
    hyper = {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    torch_internals.fused_adam_(params, grads, moments, [torch.zeros(3)], steps, **hyper)
    # Adam's first step moves every weight by lr (m̂ = g, v̂ = g²): 1 − 0.1.
    torch.testing.assert_close(params[0], torch.full((3,), 0.9))
    assert torch_internals._FUSED_ADAM is None  # and the public step from then on


@pytest.mark.parametrize("shape", [(16, 6), (8, 4, 5, 5)])
def test_the_batch_norm_fallback_normalizes_and_measures_alike(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...]
) -> None:
    def run() -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(1)
        x = (torch.randn(shape, generator=gen) * 3 + 1).requires_grad_()
        weight = torch.rand(shape[1], generator=gen).requires_grad_()
        bias = torch.randn(shape[1], generator=gen).requires_grad_()
        out, mean, var = torch_internals.batch_norm_statistics(x, weight, bias, 1e-5)
        assert not (mean.requires_grad or var.requires_grad)
        (out * torch.arange(out.numel()).view(out.shape).sin()).sum().backward()
        assert x.grad is not None and weight.grad is not None and bias.grad is not None
        return out.detach(), mean, var, x.grad, weight.grad, bias.grad

    kernel = run()
    without(monkeypatch, "_NATIVE_BATCH_NORM")
    for a, b in zip(kernel, run(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    dims = [0, *range(2, len(shape))]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3 + 1
    torch.testing.assert_close(kernel[2], x.var(dims, unbiased=False), rtol=1e-4, atol=1e-5)


def test_the_foreach_fallback_scales_every_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    tensors = [torch.ones(3), torch.full((2, 2), 2.0)]
    torch_internals.foreach_mul_(tensors, 0.5)
    without(monkeypatch, "_FOREACH_MUL")
    torch_internals.foreach_mul_(tensors, 0.5)
    assert [t.tolist() for t in tensors] == [[0.25] * 3, [[0.5, 0.5], [0.5, 0.5]]]


def test_batch_norms_are_told_apart_without_the_base_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Mine(nn.BatchNorm1d):  # a plugin's own subclass
        pass

    modules = [nn.BatchNorm1d(3), nn.BatchNorm2d(3), nn.BatchNorm3d(3), Mine(3), nn.Linear(3, 3)]
    with_base = [torch_internals.is_batch_norm(m) for m in modules]
    without(monkeypatch, "_BATCH_NORM_BASE")
    assert [torch_internals.is_batch_norm(m) for m in modules] == with_base
    assert with_base == [True, True, True, True, False]


def test_the_compile_cache_limit_only_rises() -> None:
    import torch._dynamo

    config = torch._dynamo.config
    before = config.cache_size_limit
    try:
        torch_internals.raise_compile_cache_limit(before + 5)
        assert config.cache_size_limit == before + 5
        torch_internals.raise_compile_cache_limit(1)
        assert config.cache_size_limit == before + 5
    finally:
        config.cache_size_limit = before
