"""Counter-based randomness: the same draw whatever else is drawn beside it."""

from __future__ import annotations

import torch

from trainer import rng


def test_permutations_are_permutations_and_ignore_the_padding_width() -> None:
    key = rng.keys(torch.tensor([3, 4, 5]), 7)
    lengths = torch.tensor([10, 6, 13])
    wide = rng.permutations(key, lengths, 20)
    for m, n in enumerate(lengths.tolist()):
        assert sorted(wide[m, :n].tolist()) == list(range(n))
        assert sorted(wide[m, n:].tolist()) == list(range(n, 20))
        alone = rng.permutations(key[m : m + 1], lengths[m : m + 1], n)[0]
        assert torch.equal(alone, wide[m, :n])  # a member's order does not depend on the others


def test_uniforms_are_uniform_and_keyed() -> None:
    key = rng.keys(torch.arange(4), 0, 1)
    u = rng.uniform(key, (250, 100))
    assert u.shape == (4, 250, 100) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005  # 1e5 draws: σ of the mean ≈ 0.0009
    assert abs((u < 0.3).float().mean().item() - 0.3) < 0.005
    assert not torch.equal(u[0], u[1])
    assert torch.equal(rng.uniform(key[2:3], (250, 100))[0], u[2])
    assert not torch.equal(rng.uniform(rng.keys(torch.arange(4), 0, 2), (250, 100)), u)
