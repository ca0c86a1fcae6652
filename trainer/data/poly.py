"""``builtin:poly``: polynomial regression where an unregularized model over-fits, generated."""

from __future__ import annotations

import math

import numpy as np


def make_poly(
    n_samples: int = 200, degree: int = 20, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The weight-decay demonstration of *Dive into Deep Learning* (§3.6).

    x ~ N(0, 1); features xⁱ/i! for i = 0…19; y = 5 + 1.2x − 3.4x²/2! + 5.6x³/3! + ε,
    ε ~ N(0, 0.1²). Only 4 of 20 weights are non-zero, so with 100 training samples
    an unregularized model fits the noise. Half of the 200 samples make the test split.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, 1))
    powers = np.arange(degree)
    features = x**powers / np.array([math.factorial(int(i)) for i in powers])
    true_w = np.zeros(degree)
    true_w[:4] = [5.0, 1.2, -3.4, 5.6]
    y = features @ true_w + noise * rng.standard_normal(n_samples)
    return features, y
