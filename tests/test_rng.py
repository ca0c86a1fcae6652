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


def test_keep_masks_keep_each_model_at_its_own_rate_and_ignore_the_neighbours() -> None:
    key = rng.keys(torch.arange(4), 3, 5)
    keep = torch.tensor([1.0, 0.7, 0.25, 0.3])
    mask = rng.keep_mask(key, (250, 99), keep)  # 99: not a multiple of the eight lanes per hash
    assert mask.shape == (4, 250, 99) and mask.dtype == torch.bool
    assert mask[0].all()
    # The float form (what dropout multiplies by) holds the same draws as 1.0 and 0.0.
    as_float = rng.keep_mask(key, (250, 99), keep, dtype=torch.float32)
    assert as_float.dtype == torch.float32 and torch.equal(as_float, mask.float())
    for m in (1, 2):  # 24,750 draws: σ of the rate ≤ 0.003
        assert abs(mask[m].float().mean().item() - keep[m].item()) < 0.012
    assert torch.equal(rng.keep_mask(key[1:3], (250, 99), keep[1:3]), mask[1:3])
    # Neighbouring elements come from different lanes of one hash: they must not be correlated.
    flat = mask[1].flatten().float()
    correlation = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].item()
    assert abs(correlation) < 0.03
    # keep is applied to the nearest 1/256: a p below 1/512 drops nothing, 1/256 drops.
    tiny = rng.keep_mask(key[:2], (250, 99), torch.tensor([0.999, 1 - 1 / 256]))
    assert tiny[0].all() and not tiny[1].all()


def test_a_key_table_holds_the_keys_of_each_counter_pair() -> None:
    key = rng.keys(torch.tensor([11, 12, 13]), 4)
    table = rng.key_table(key, 5, 3)
    for i in range(5):
        for j in range(3):
            assert torch.equal(table[i, j], rng.keys(key, i, j))  # int64 wrap-around included


def test_a_compiled_graph_draws_the_same_masks_without_caching_a_tensor(monkeypatch) -> None:
    """Inside a compiled graph the position hashes are computed, not kept in the module's
    cache (a graph's tensor in a global costs a recompile, and CUDA graphs may overwrite it)."""
    key, keep = torch.tensor([3, 99]), torch.tensor([0.7, 0.2])
    eager = rng.keep_mask(key, (5, 7), keep)
    rng._POSITIONS.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(rng.keep_mask(key, (5, 7), keep), eager)
    assert rng._POSITIONS == {}
