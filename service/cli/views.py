"""What the HTTP commands print: studies as tables and one-line summaries."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from service.cli.root import fail
from service.text import MISSING, value_text
from trainer import BestTrial, StudyResult, best_first

if TYPE_CHECKING:
    from service.http.schemas import Page, StudyOut, TrialOut


# --- the HTTP client ------------------------------------------------------------------------
# Every command below talks to the server through ``service.cli.client.Client`` and its typed
# results. Tables go to stdout, progress and messages to stderr; without a terminal (a pipe,
# a log file, a test) the live bar becomes one line per change and tables are not wrapped.

ACTIVE_STATES = ("queued", "running")
STATE_STYLES = {"completed": "green", "failed": "red", "running": "yellow", "cancelled": "dim"}


def print_table(table: Table) -> None:
    """To stdout; off a terminal as wide as the table needs (a file does not wrap)."""
    from rich.measure import Measurement

    out = Console()
    if not out.is_terminal:
        width = Measurement.get(out, out.options.update_width(10_000), table).maximum
        out = Console(width=max(out.width, width))
    out.print(table)


def write_file(path: Path, data: bytes) -> None:
    """Write what a command was asked to save (``-o``); a path it cannot write is its error."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise fail(f"cannot write {path}: {exc}") from None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def done_trials(study: StudyOut) -> int:
    """Trials that used up budget (complete, pruned, failed for good), as the API counts them."""
    return round(study.progress * study.n_trials)


MAIN_STATES = ("complete", "pruned", "fail", "running")


def state_counts(trials: Mapping[str, int], always: tuple[str, ...] = MAIN_STATES) -> str:
    """'3 complete, 1 pruned, 0 fail, 1 running': the states ``always`` shown, then the others
    as given."""
    counts = dict.fromkeys(always, 0) | dict(trials)
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def titled(title: str, **options: Any) -> Table:
    """A table whose title keeps to one line wherever the console is that wide: rich wraps a
    title to its table's width, which would fold a study's id in two."""
    return Table(title=title, min_width=len(title), **options)


def styled_status(study: StudyOut) -> str:
    style = STATE_STYLES.get(study.status)
    return f"[{style}]{study.status}[/]" if style else study.status


def best_text(study: StudyOut) -> str:
    """'0.9444 ± 0.0124 (trial 3)', or '—' before a trial completes."""
    best = study.best
    if best is None:
        return MISSING
    return f"{cv_text(best)} (trial {best.number})"


def cv_text(best: BestTrial) -> str:
    """'0.9444 ± 0.0124': the CV mean and its spread over folds (the value where none)."""
    mean = best.cv_mean if best.cv_mean is not None else best.value
    spread = f" ± {best.cv_std:.4f}" if best.cv_std is not None else ""
    return f"{mean:.4f}{spread}"


def hyperparameters(study: StudyOut) -> dict[str, str]:
    """The best trial's configuration; values the study did not search are marked fixed."""
    best = study.best
    if best is None:
        return {}
    config = best.config or best.params
    return {
        name: value_text(value)
        + ("" if name in best.params or config is best.params else " (fixed)")
        for name, value in config.items()
    }


def study_result(study: StudyOut) -> StudyResult:
    """The API's study status as the result ``regtune tune`` shows."""
    return StudyResult(
        study=study.id,
        metric=study.metric,
        direction=study.direction,
        trials={k: v for k, v in study.trials.items() if v},
        best=study.best,
        test_score=study.test_score,
        trade_off=study.trade_off,
        pareto=study.pareto,
        chosen=study.chosen,
    )


def pareto_table(result: StudyResult) -> Table | None:
    """A trade-off study's Pareto front, best metric first, the final model's trial marked;
    None for a single-objective study (or before a trial completes)."""
    if not result.pareto or result.trade_off is None:
        return None
    final = result.chosen
    if final is None and result.best is not None:
        final = result.best.number
    table = titled(f"Pareto front: {result.metric} against {result.trade_off}")
    for column in ("#", result.metric, result.trade_off, "± std", "params"):
        table.add_column(column)
    for t in result.pareto:
        table.add_row(
            f"{t.number}" + (" ◀ model" if t.number == final else ""),
            f"{t.values[0]:.4f}",
            value_text(t.values[1]),
            "" if t.cv_std is None else f"{t.cv_std:.4f}",
            ", ".join(f"{k}={value_text(v)}" for k, v in t.params.items()),
        )
    return table


def print_result(result: StudyResult) -> None:
    """A study's result table, then its Pareto front where it has one."""
    print_table(result_table(result))
    front = pareto_table(result)
    if front is not None:
        print_table(front)


def share_text(study: StudyOut) -> str:
    """'2 serving it', or 'none yet: number 3 in its tenant's queue (priority 5)'."""
    text = f"{study.workers} serving it" if study.workers else "none yet"
    if study.queue_position is not None:
        text += f": number {study.queue_position} in its tenant's queue"
    if study.priority:
        text += f" (priority {study.priority})"
    return text


def status_table(study: StudyOut) -> Table:
    table = titled(f"study {study.id}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("name", study.name)
    table.add_row("dataset", study.dataset)
    table.add_row("status", styled_status(study))
    table.add_row("trials", state_counts(study.trials))
    table.add_row(
        "progress", f"{done_trials(study)}/{study.n_trials} trials ({study.progress:.0%})"
    )
    if study.status in ACTIVE_STATES:
        table.add_row("ETA", duration(study.eta_s))
        table.add_row("workers", share_text(study))
    table.add_row(f"best CV {study.metric}", best_text(study))
    if study.best is not None and study.best.fold_scores:
        table.add_row("per fold", "  ".join(f"{s:.4f}" for s in study.best.fold_scores))
    table.add_row(f"test {study.metric}", value_text(study.test_score))
    for name, value in hyperparameters(study).items():
        table.add_row(name, value)
    if study.best is not None:
        table.add_row("diagnosis", value_text(study.best.diagnosis))
    if study.chosen is not None:
        table.add_row("final model", f"trial {study.chosen} (final_model.pick)")
    if study.error:
        table.add_row("error", f"[red]{study.error}[/]")
    return table


def compare_table(studies: list[StudyOut]) -> Table:
    """Studies side by side, one column each; the best CV score is marked if metrics agree."""
    table = Table(title=f"{len(studies)} studies side by side")
    table.add_column("", style="bold")
    for study in studies:
        table.add_column(study.name, overflow="fold")  # an id is folded, never cut short
    marked: StudyOut | None = None
    scored = [s for s in studies if s.best is not None]
    if len(scored) > 1 and len({(s.metric, s.direction) for s in scored}) == 1:
        sign = best_first(scored[0].direction)
        marked = min(scored, key=lambda s: sign * s.best.value)  # type: ignore[union-attr]

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("id", [s.id for s in studies])
    row("dataset", [s.dataset for s in studies])
    row("metric", [f"{s.metric} ({s.direction})" for s in studies])
    row("status", [styled_status(s) for s in studies])
    row("trials", [f"{done_trials(s)}/{s.n_trials}: {state_counts(s.trials)}" for s in studies])
    row(
        "best CV mean ± std",
        [best_text(s) + (" ◀ best" if s is marked else "") for s in studies],
    )
    row("test score", [value_text(s.test_score) for s in studies])
    params = [hyperparameters(s) for s in studies]
    names = list(dict.fromkeys(name for p in params for name in p))
    for name in names:
        row(name, [p.get(name, MISSING) for p in params])
    row("diagnosis", [value_text(s.best.diagnosis) if s.best else MISSING for s in studies])
    return table


def result_table(result: StudyResult) -> Table:
    best = result.best
    table = titled(f"study {result.study}: best of {sum(result.trials.values())} trials")
    table.add_column("", style="bold")
    table.add_column("value")
    table.add_row("trials", state_counts(result.trials, always=()))
    if best is None:
        table.add_row("best", "no trial completed")
        return table
    metric = result.metric
    table.add_row(f"CV {metric}", cv_text(best))
    table.add_row("per fold", "  ".join(f"{s:.4f}" for s in best.fold_scores or []))
    if result.test_score is not None:
        refitted = "" if result.chosen is None else f" (final model: trial {result.chosen})"
        table.add_row(f"test {metric}{refitted}", f"{result.test_score:.4f}")
    for name, value in (best.config or best.params).items():
        table.add_row(name, value_text(value))
    if best.best_epochs:
        table.add_row("best epochs", " ".join(str(e) for e in best.best_epochs))
    if best.l1_sparsity is not None:
        table.add_row("L1 sparsity", f"{best.l1_sparsity:.1%}")
    table.add_row("diagnosis", value_text(best.diagnosis))
    return table


def page_title(page: Page[TrialOut]) -> str:
    """'trials 0–8 of 9': the numbers of the first and last row shown, of all the study's."""
    if not page.items:
        return f"no trials from {page.offset} (the study has {page.total})"
    return f"trials {page.offset}–{page.offset + len(page.items) - 1} of {page.total}"
