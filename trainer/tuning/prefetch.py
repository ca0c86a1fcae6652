"""A study's data and rows, made in a helper process while the caller imports torch.

``regtune tune`` needs torch, Optuna, scikit-learn and the data before its first trial. On a
small machine the imports are most of its start: torch ~1.2 s, scikit-learn ~1.1 s (SciPy's
statistics come with it), one after the other on one core. scikit-learn serves only the
protocol's rows (:func:`trainer.data.splits.protocol_rows`) and the built-in datasets, neither
of which needs torch, so a process forked before torch is imported loads the data and draws the
rows on another core while the caller imports torch, and sends back the rows, with the data
itself for a built-in set (small by construction). A file's data the caller reads itself rather
than through a pipe: it is read twice, once in each process, at the same time on two cores, and
the helper's copy is gone once it has answered. The searcher processes are forked from the
caller, which never imported scikit-learn: they take the rows as they are.

The helper exits once it has sent its answer; it is asked to die with its parent
(:func:`trainer.lifetime.on_parent_death`), and the parent reaps it when the answer comes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from trainer.data.datasets import Dataset
from trainer.data.readers import load_dataset
from trainer.data.splits import ProtocolRows, protocol_rows
from trainer.lifetime import on_parent_death
from trainer.specs.study_spec import StudySpec, Task

Answer = tuple[Dataset | None, ProtocolRows | None, BaseException | None]


def _prefetch(
    send: Connection, spec: StudySpec, target: str | None, task: Task | None, parent: int
) -> None:
    """The helper: load the data, draw its rows, send them (or the error) and exit."""
    on_parent_death(parent, signal.SIGKILL)
    try:
        data = load_dataset(spec.dataset, target=target, task=task)
        rows = protocol_rows(data, spec.cv, spec.seed)
        answer: Answer = (data if builtin(spec) else None, rows, None)
    except Exception as exc:  # a bad dataset or protocol: raised in the caller, in its turn
        answer = (None, None, exc)
    try:
        send.send(answer)
    except Exception as exc:  # an answer that does not pickle: its error's text does
        send.send((None, None, RuntimeError(f"the data-loading helper failed: {exc!r}")))
    send.close()


def builtin(spec: StudySpec) -> bool:
    return spec.dataset.startswith("builtin:")


class Prefetch:
    """The helper of one study, started on construction (call before importing torch)."""

    def __init__(
        self, spec: StudySpec, *, target: str | None = None, task: Task | None = None
    ) -> None:
        self.spec = spec
        context: Any = multiprocessing.get_context("fork")  # typeshed: BaseContext
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_prefetch,
            args=(send, spec, target, task, os.getpid()),
            name="regtune-prefetch",
            daemon=True,
        )
        self.process.start()
        send.close()  # the helper holds the only sending end: its death ends the wait
        self._receive = receive
        self._answer: Answer | None = None

    def _wait(self) -> Answer:
        if self._answer is None:
            try:
                self._answer = self._receive.recv()
            except EOFError:  # the helper died without answering (killed, out of memory)
                self._answer = (None, None, RuntimeError("the data-loading helper died"))
            self._receive.close()
            self.process.join()
        return self._answer

    def dataset(self) -> Dataset | None:
        """A built-in dataset as the helper loaded it (None for a file: read it yourself)."""
        data, _, error = self._wait()
        if error is not None and builtin(self.spec):
            raise error
        return data

    def rows(self) -> ProtocolRows:
        """The study's rows (what :func:`~trainer.data.splits.protocol_rows` raises, raised)."""
        _, rows, error = self._wait()
        if error is not None:
            raise error
        assert rows is not None
        return rows
