"""How a trial stops short: interrupted by its owner, or failed by an error of its training.

The reason a failed trial records (``fail_reason``) is :func:`failure_reason` of the error; an
interruption carries its owner's reason and the trials it interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence


class TrialInterrupted(Exception):
    """Raised inside a trial when its owner asked it to stop (cancel, shutdown).

    Its message is the owner's reason; ``trial_ids`` are the storage ids of the trials it
    interrupted: each is recorded as failed with that reason, and the owner may queue their
    parameters again.
    """

    def __init__(self, message: str, *, trial_ids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.trial_ids = list(trial_ids)


class TrialFailed(Exception):
    """A trial's training raised: the trial fails with the reason and the study goes on."""


def failure_reason(exc: BaseException) -> str:
    """What a failed trial's ``fail_reason`` says about an exception (bounded in length)."""
    return f"{exc.__class__.__name__}: {exc}"[:500]
