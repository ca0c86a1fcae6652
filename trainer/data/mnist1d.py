"""MNIST-1D (Greydanus, 2020), generated procedurally: no download.

Ten hand-made 12-point templates of the digits are padded, dilated, scaled, translated,
given correlated and i.i.d. noise, sheared and resampled to 40 points. The defaults are
those of the reference implementation (``get_dataset_args``); the paper's figures
(MLP ≈ 68 %, CNN ≈ 94 % test accuracy) are for 4,000 training and 1,000 test samples.
The draw order differs from the reference code, so samples are the same distribution,
not the same numbers.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)
TEMPLATE_LEN = 12
PADDING = (36, 60)
SCALE_COEFF = 0.4
MAX_TRANSLATION = 48
CORR_NOISE_SCALE = 0.25
IID_NOISE_SCALE = 2e-2
SHEAR_SCALE = 0.75
FINAL_LENGTH = 40


def _templates() -> np.ndarray:
    x = TEMPLATES - TEMPLATES.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]  # every signal starts and ends at 0
    return x / 6.0


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def _transform(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low, high = PADDING
    pad = low + int(rng.random() * (high - low + 1))
    x = np.concatenate([x + 1e-8, np.zeros(pad)])
    x = _resample(x, TEMPLATE_LEN + high)  # dilate
    x = x * (1 + SCALE_COEFF * (rng.random() - 0.5))
    shift = int(rng.integers(MAX_TRANSLATION))
    x = np.roll(x, shift)
    mask = x != 0
    corr_noise = gaussian_filter1d(CORR_NOISE_SCALE * rng.standard_normal(x.shape), 2)
    x = np.where(mask, x, corr_noise)
    x = x + IID_NOISE_SCALE * rng.standard_normal(x.shape)
    x = x - SHEAR_SCALE * (rng.random() - 0.5) * np.linspace(-0.5, 0.5, len(x))
    return _resample(x, FINAL_LENGTH)


def make_mnist1d(n_samples: int = 5_000, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(X, y)``: ``X`` float32 ``[n, 40]``, ``y`` int64 labels 0…9, classes balanced."""
    rng = np.random.default_rng(seed)
    templates = _templates()
    labels = np.arange(n_samples) % len(templates)
    X = np.stack([_transform(templates[label], rng) for label in labels])
    order = rng.permutation(n_samples)
    return X[order].astype(np.float32), labels[order].astype(np.int64)
