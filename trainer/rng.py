"""Counter-based random numbers: a value depends on (seed, counters), never on call order.

A population trains many models in one tensor program, yet each model must draw the same
batch order and dropout masks as it would alone. A stateful generator cannot give that (its
stream depends on how many draws the neighbours took); a hash of the model's seed and the
position of the draw can. The hash is SplitMix64 (Steele, Lea & Flood, 2014) on int64 tensors,
so it runs vectorized on the CPU and the GPU alike.
"""

from __future__ import annotations

import numpy as np
import torch

_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64
_STREAM = 0xD1B54A32D192ED03 - 2**64


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _int64(value: int) -> int:
    """Wrap a Python int into int64's range, as the tensor arithmetic does."""
    return (value + 2**63) % 2**64 - 2**63


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """A bijective mix of 64-bit integers whose outputs pass BigCrush as a sequence."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def keys(seeds: torch.Tensor, *counters: int) -> torch.Tensor:
    """One 64-bit key per seed for the draw named by ``counters`` (e.g. epoch, step, layer)."""
    key = splitmix64(seeds.to(torch.int64))
    for counter in counters:
        key = splitmix64(key ^ _int64(counter * _STREAM))
    return key


def keys_at(seeds: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """:func:`keys` with one counter per seed, as a tensor: ``keys_at(s, c)[m] == keys(s[m:m+1],
    int(c[m]))``. A population's models sit at different epochs once slots are refilled."""
    key = splitmix64(seeds.to(torch.int64))
    return splitmix64(key ^ (counter.to(torch.int64) * _STREAM))


def key_table(key: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """Keys ``[rows, columns, M]`` for a grid of draws under each key (e.g. step × layer).

    Entry (i, j) is ``keys(key, i, j)`` (``key`` in the place of the seeds): one vectorized
    hash instead of a loop of small ones.
    """
    streams = torch.arange(rows * columns, device=key.device, dtype=torch.int64)
    i, j = streams // columns, streams % columns
    first = splitmix64(splitmix64(key)[None, :] ^ (i * _STREAM)[:, None])
    return splitmix64(first ^ (j * _STREAM)[:, None]).view(rows, columns, len(key))


def uniform(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform [0, 1) floats of ``shape`` per key: ``key`` [M] → [M, *shape]."""
    n = 1
    for size in shape:
        n *= size
    position = torch.arange(n, device=key.device, dtype=torch.int64)
    bits = splitmix64(key[:, None] ^ splitmix64(position)[None, :])
    values = _shr(bits, 40).to(torch.float32) * (1.0 / (1 << 24))
    return values.view(len(key), *shape)


_POSITIONS: dict[tuple[int, str], torch.Tensor] = {}


def _position_hashes(n: int, device: torch.device) -> torch.Tensor:
    """``splitmix64(0…n−1)``, the same for every call of a given size: cached in eager mode,
    computed in place inside a compiled graph (a tensor a graph made, kept in a global, costs
    a recompile when read back, and under CUDA graphs may be overwritten by the next replay;
    inductor fuses the few extra hashes into the kernel that uses them)."""
    if torch.compiler.is_compiling():
        return splitmix64(torch.arange(n, device=device, dtype=torch.int64))
    cached = _POSITIONS.get((n, str(device)))
    if cached is None:
        cached = splitmix64(torch.arange(n, device=device, dtype=torch.int64))
        _POSITIONS[(n, str(device))] = cached
    return cached


LANES = 8  # Bernoulli draws per 64-bit hash: one byte each


def keep_threshold(keep: torch.Tensor) -> torch.Tensor:
    """t − 1 (int8) for a byte lane u kept when u < t = round(2⁸·keep) − 2⁷, i.e. u ≤ t − 1,
    which fits int8 (t itself reaches 2⁷ at keep = 1): what :func:`keep_mask` compares with,
    for a caller that draws many masks at the same keep probabilities to compute once."""
    return (torch.round(keep.to(torch.float64) * 256) - 129).clamp(-128, 127).to(torch.int8)


def keep_mask(
    key: torch.Tensor,
    shape: tuple[int, ...],
    keep: torch.Tensor,
    dtype: torch.dtype = torch.bool,
    threshold: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bernoulli(keep[m]) draws of ``shape`` per key: ``key`` [M], ``keep`` [M] → [M, *shape],
    as booleans or, with a floating ``dtype``, as 1.0 (kept) and 0.0 (``threshold``:
    :func:`keep_threshold` of ``keep``, if the caller has it).

    Dropout needs far fewer random bits than :func:`uniform` spends: each 64-bit hash is read as
    eight bytes u, uniform on [−2⁷, 2⁷), and an element is kept when u < t = round(2⁸·keep) −
    2⁷, so keep is applied to the nearest 1/256 (p = 0.37 drops with probability 95/256 =
    0.3711; keep = 1 always keeps, and a p below 1/512 never drops). That is an eighth of the
    hashing of one hash per element, and on a CPU the hashing was a quarter of a small MLP's
    training step (BENCHMARKS.md, "Profile of one CPU epoch").
    """
    n = 1
    for size in shape:
        n *= size
    words = -(-n // LANES)
    bits = splitmix64(key[:, None] ^ _position_hashes(words, key.device)[None, :])
    lanes = bits.view(torch.int8)[:, :n]
    below = (keep_threshold(keep) if threshold is None else threshold)[:, None]
    if dtype == torch.bool:
        return (lanes <= below).view(len(key), *shape)
    # Written straight as floats: on a CPU, making and converting a bool tensor costs 5× the
    # comparison itself.
    out = torch.empty((len(key), n), dtype=dtype, device=key.device)
    return torch.le(lanes, below, out=out).view(len(key), *shape)


def strided_keep_mask(
    key: torch.Tensor,
    shape: tuple[int, ...],
    keep: torch.Tensor,
    stride: torch.Tensor,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """:func:`keep_mask` of ``shape`` ``(B, …)`` per key where model m's sample b is drawn from
    positions ``b·stride[m] + i`` (``i`` its flat index within the sample) instead of
    ``b·n + i`` (n the sample's size): the draws of its first ``stride[m]`` elements per sample
    are exactly those :func:`keep_mask` gives a network whose samples have ``stride[m]``
    elements, the narrow network whose units are the leading ones (``trainer.nets.networks.
    narrowed``). With ``stride`` n it is :func:`keep_mask`, bit for bit (one hash per element,
    not per eight: only stacks with narrowed trials pay it)."""
    batch, n = shape[0], 1
    for size in shape[1:]:
        n *= size
    b = torch.arange(batch, device=key.device, dtype=torch.int64)
    i = torch.arange(n, device=key.device, dtype=torch.int64)
    position = (b[None, :, None] * stride.to(torch.int64)[:, None, None] + i).flatten(1)
    bits = splitmix64(key[:, None] ^ splitmix64(position // LANES))
    # The byte lane (position mod 8) of the hash, as keep_mask's int8 view reads it
    # (little-endian: lane j is bits 8j…8j+7).
    lanes = (bits >> (8 * (position % LANES))) & 0xFF
    lanes = lanes - (lanes >= 128).to(torch.int64) * 256
    below = keep_threshold(keep).to(torch.int64)[:, None]
    return (lanes <= below).to(dtype).view(len(key), *shape)


def permutations(key: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Per key: a random order of ``0…lengths[m]−1``, then the padding ``lengths[m]…width−1``."""
    noise = uniform(key, (width,))
    padding = torch.arange(width, device=key.device)[None, :] >= lengths[:, None]
    return torch.argsort(noise + padding.to(noise.dtype) * 2.0, dim=1)


SAMPLER_STREAM = 0x5A3  # a process's own sampler stream: derived_seed(seed, SAMPLER_STREAM, k)


def derived_seed(*parts: int) -> int:
    """An independent 32-bit seed for the stream named by ``parts`` (a study's seed and a
    trial's number, a trial's seed and a fold): numpy's ``SeedSequence`` hashes them, so
    nearby parts give unrelated seeds."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
