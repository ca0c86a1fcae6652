"""A study's progress while it runs, as ``regtune tune`` (a study in this process) and
``regtune submit --wait`` (a served study, polled) both show it: trials done out of the budget,
counts by state, the best value and the ETA. On a terminal a live bar; off one (a pipe, a log
file, a test) one line per change, so that a log reads as the bar did; nothing with ``--json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.cli.views import duration, state_counts


@dataclass(frozen=True)
class Snapshot:
    """A study at one moment, as the display shows it."""

    status: str  # the study's status ("tuning" for a study of ``regtune tune``)
    done: int  # trials that used up budget (complete, pruned, failed for good)
    total: int  # the budget, n_trials
    trials: Mapping[str, int]  # by state, as the API counts them
    best: float | None
    eta_s: float | None  # None: not known yet, or not shown (the search is over)

    def fields(self) -> dict[str, str]:
        return {
            "status": self.status,
            "counts": state_counts(self.trials),
            "best": "no best yet" if self.best is None else f"best {self.best:.4f}",
            "eta": "" if self.eta_s is None else f"ETA {duration(self.eta_s)}",
        }

    def line(self) -> str:
        """'running: 2/5 trials done (1 complete, 1 pruned, 0 fail, 2 running), best 0.9444,
        ETA 12s'."""
        fields = self.fields()
        eta = f", {fields['eta']}" if fields["eta"] else ""
        return (
            f"{self.status}: {self.done}/{self.total} trials done ({fields['counts']}), "
            f"{fields['best']}{eta}"
        )


class StudyProgress:
    """The display, entered while the study runs; ``show`` each new snapshot.

    The live bar draws from a thread of its own, started on entering: a process that forks
    (``regtune tune``'s searchers) enters it only after the fork."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.live = not quiet and console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]{task.fields[status]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[best]}"),
            TextColumn("{task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.live,
        )
        self.task = self.bar.add_task(
            "study", total=None, status="starting", counts="", best="", eta=""
        )
        self.last = ""

    def __enter__(self) -> StudyProgress:
        self.bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self.bar.stop()

    def show(self, snapshot: Snapshot) -> None:
        fields: dict[str, Any] = snapshot.fields()  # rich's own keywords are not str
        self.bar.update(self.task, total=snapshot.total, completed=snapshot.done, **fields)
        line = snapshot.line()
        if not self.quiet and not self.live and line != self.last:
            # soft_wrap: one change is one line in a log, however narrow the console thinks it is
            self.console.print(line, highlight=False, soft_wrap=True)
        self.last = line
