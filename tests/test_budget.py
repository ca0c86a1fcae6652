"""The trial budget across workers, and the ETA, from aggregate counts."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from service.store.trials import TrialCounts, eta_seconds


def test_retried_failures_do_not_use_budget_but_running_and_queued_trials_do() -> None:
    # Four trials failed in Optuna's terms: two were re-queued with their parameters (their
    # re-runs count instead), one failed for good, one was stopped by its study's cancel.
    counts = TrialCounts(complete=5, pruned=2, fail=1, running=2, waiting=1, retried=2, cancelled=1)
    assert counts.finished == 5 + 2 + 1 + 1
    assert counts.remaining(12) == 12 - 9 - 2 - 1
    assert counts.remaining(10) < 0  # over budget: nothing more is started
    assert counts.as_dict() == {
        "complete": 5,
        "pruned": 2,
        "fail": 1,
        "running": 2,
        "waiting": 1,
        "retried": 2,
        "cancelled": 1,
    }


def test_eta_is_remaining_trials_at_the_observed_rate() -> None:
    start = datetime(2026, 1, 1, 12, 0, 0)
    counts = TrialCounts(complete=10)
    # 10 trials in 100 s (several workers included): 30 left take 300 s.
    assert eta_seconds(counts, 40, 10, start, start + timedelta(seconds=100)) == pytest.approx(300)
    assert eta_seconds(TrialCounts(), 40, 0, None, None) is None
    assert eta_seconds(TrialCounts(complete=40), 40, 40, start, start) == 0.0
