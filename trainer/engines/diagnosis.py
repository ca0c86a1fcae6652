"""Reading a fold's learning curves the way a practitioner does.

With training loss t_e and validation loss v_e over epochs e = 0…E−1, best epoch
b = argmin v and L₀ the loss of the trivial predictor (class prior, or the target mean):

* ``over-fitting``:    after b the validation loss rose by more than 10 % of v_b (and by more
                       than 1 % of L₀, so that noise on a near-zero loss does not count)
                       while the training loss kept falling (t_{E−1} < t_b): it learns noise.
* ``still improving``: the fold ran out of epochs with b among the last 10 % of them (at
                       least the last two) and v fell by more than 1 % over those epochs:
                       more epochs would likely help.
* ``under-fitting``:   min t > ½·L₀: the model barely beats the trivial predictor even on
                       the data it trains on, so it is too constrained (λ, p too high).
* ``converged``:       none of the above: validation loss flattened and stopping was timely.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np

Diagnosis = Literal["over-fitting", "still improving", "under-fitting", "converged"]
# Severity order, used to break ties when folds disagree.
DIAGNOSES: tuple[Diagnosis, ...] = ("over-fitting", "under-fitting", "still improving", "converged")
OVERFIT_RISE = 0.10
UNDERFIT_RATIO = 0.5
RECENT_FRACTION = 0.10
NOISE_FLOOR = 0.01
STILL_IMPROVING_DROP = 0.01


def trivial_loss(task: str, y_fit: np.ndarray, n_outputs: int) -> float:
    """The loss of the trivial predictor on a fold's fit rows, the scale of "under-fitting":
    for classification the prior's entropy −Σ_c π_c log π_c (predicting the class
    frequencies π), for regression 1 (predicting the mean of z-scored targets)."""
    if task == "regression":
        return 1.0
    prior = np.bincount(y_fit, minlength=n_outputs) / len(y_fit)
    prior = prior[prior > 0]
    return float(-(prior * np.log(prior)).sum())


def diagnose_fold(
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    *,
    max_epochs: int,
    baseline_loss: float,
) -> Diagnosis:
    """Classify one fold's curves (see the module docstring for the rules)."""
    epochs = len(val_loss)
    best = min(range(epochs), key=val_loss.__getitem__)
    v_best = val_loss[best]
    rise = val_loss[-1] - v_best
    if (
        best < epochs - 1
        and rise > max(OVERFIT_RISE * abs(v_best), NOISE_FLOOR * baseline_loss)
        and train_loss[-1] < train_loss[best]
    ):
        return "over-fitting"
    recent = max(2, math.ceil(RECENT_FRACTION * max_epochs))
    window_start = val_loss[max(0, epochs - 1 - recent)]
    if (
        epochs >= max_epochs
        and best >= epochs - recent
        and window_start - v_best > STILL_IMPROVING_DROP * abs(window_start)
    ):
        return "still improving"
    if min(train_loss) > UNDERFIT_RATIO * baseline_loss:
        return "under-fitting"
    return "converged"


def diagnose_trial(fold_diagnoses: Sequence[Diagnosis]) -> Diagnosis:
    """The folds' majority; a tie goes to the more severe reading."""
    counts = Counter(fold_diagnoses)
    return max(DIAGNOSES, key=lambda d: (counts[d], -DIAGNOSES.index(d)))
