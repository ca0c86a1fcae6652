"""How the differential tests compare two training runs of the same trial.

Two runs whose float reductions are the same must agree bit for bit (:func:`assert_identical`):
a trial in stacks of the *same size*, whatever its neighbours, refills or the epoch it started
at (each model's sums run over its own rows in the same kernel, so a neighbour's values never
enter them: measured 0.0 difference).

Two runs whose sums are reassociated can only agree within what float32 promises
(:func:`assert_close`): stacks of different sizes (oneDNN blocks a batched matmul or grouped
convolution by its batch, torch's BatchNorm kernel vectorizes across the stack's channels) and
the per-trial engine against the stacked one (``nn.Linear`` against ``bmm``). Each step's sums
then differ by a few ulps (float32's ε is 1.2e-7), and training carries that forward: every
later step starts from weights a few ulps apart and Adam's normalised step turns a gradient
that is zero in exact arithmetic into a full-size step. The drift is therefore bounded by
measurement, not by a formula: the same wine trial at P = 1 and P = 2 ended 9.4e-5 apart
(relative, validation loss after 7 Adam epochs; it failed a 1e-4 tolerance on a clean install),
three-epoch CNN and BatchNorm stacks 7e-5 to 1e-4. :data:`REASSOCIATED` is ten times the
largest, and a fold's chosen epoch may differ only where a looser tolerance is asked for (a
tie between two epochs within the drift may resolve either way).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

# Ten times the largest drift measured between two float orders of the same training.
REASSOCIATED = 1e-3


def assert_identical(a: Any, b: Any) -> None:
    """Two CV results (``trainer.engines.results.CVResult``) equal bit for bit."""
    for fa, fb in zip(a.folds, b.folds, strict=True):
        assert (fa.epochs, fa.best_epoch, fa.score) == (fb.epochs, fb.best_epoch, fb.score)
        np.testing.assert_array_equal(fa.val_loss, fb.val_loss)
        np.testing.assert_array_equal(fa.train_loss, fb.train_loss)
        assert fa.sparsity == fb.sparsity


def assert_close(a: Any, b: Any, rel: float = REASSOCIATED) -> None:
    """Two CV results of one trial within float32 drift: same epochs (when ``rel`` is within
    :data:`REASSOCIATED`), scores and curves within ``rel``."""
    for fa, fb in zip(a.folds, b.folds, strict=True):
        if rel <= REASSOCIATED:
            assert (fa.epochs, fa.best_epoch) == (fb.epochs, fb.best_epoch)
        assert fa.score == pytest.approx(fb.score, rel=rel, abs=rel)
        n = min(len(fa.val_loss), len(fb.val_loss))
        np.testing.assert_allclose(fa.val_loss[:n], fb.val_loss[:n], rtol=rel, atol=1e-6)
        np.testing.assert_allclose(fa.train_loss[:n], fb.train_loss[:n], rtol=rel, atol=1e-6)
        assert fa.sparsity == pytest.approx(fb.sparsity, abs=0.01)
