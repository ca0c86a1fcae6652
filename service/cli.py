"""The ``regtune`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import optuna
import torch
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trainer.datasets import DatasetError, load_dataset
from trainer.device import resolve_device
from trainer.spec import StudySpec
from trainer.study import SpecError, StudyOutcome, run_study

app = typer.Typer(
    help="Tune the regularization of PyTorch networks with k-fold CV.", no_args_is_help=True
)
console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def validation_message(exc: ValidationError) -> str:
    """One line per problem, each naming its field: 'cv.folds: Input should be ≥ 2'."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "spec"
        lines.append(f"{where}: {error['msg']}")
    return "invalid spec\n  " + "\n  ".join(lines)


def load_spec(path: Path | None, overrides: dict[str, Any]) -> StudySpec:
    """The spec file (if any) with the command-line overrides applied on top."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise fail(f"cannot read spec {path}: {exc}") from None
        if not isinstance(data, dict):
            raise fail(f"spec {path} must hold a JSON object")
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    if "dataset" not in data:
        raise fail("no dataset: give --dataset or a spec with a 'dataset' key")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise fail(validation_message(exc)) from None


def result_table(summary: dict[str, Any]) -> Table:
    best = summary["best"]
    table = Table(
        title=f"study {summary['study']}: best of {sum(summary['trials'].values())} trials"
    )
    table.add_column("", style="bold")
    table.add_column("value")
    table.add_row("trials", ", ".join(f"{n} {state}" for state, n in summary["trials"].items()))
    if best is None:
        table.add_row("best", "no trial completed")
        return table
    metric = summary["metric"]
    table.add_row(f"CV {metric}", f"{best['cv_mean']:.4f} ± {best['cv_std']:.4f}")
    table.add_row("per fold", "  ".join(f"{s:.4f}" for s in best["fold_scores"]))
    if summary["test_score"] is not None:
        table.add_row(f"test {metric}", f"{summary['test_score']:.4f}")
    for name, value in best["config"].items():
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("best epochs", " ".join(str(e) for e in best["best_epochs"]))
    table.add_row("L1 sparsity", f"{best['l1_sparsity']:.1%}")
    table.add_row("diagnosis", best["diagnosis"])
    return table


@app.command()
def tune(
    spec: Annotated[Path | None, typer.Option(help="study spec (JSON)")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="builtin:NAME, or a .csv/.npz file path")
    ] = None,
    target: Annotated[str | None, typer.Option(help="target column of a CSV dataset")] = None,
    trials: Annotated[int | None, typer.Option(help="number of trials")] = None,
    folds: Annotated[int | None, typer.Option(help="CV folds")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="epochs per fold at most")] = None,
    seed: Annotated[int | None, typer.Option(help="study seed")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL, e.g. sqlite:///tune.db")
    ] = None,
    study_name: Annotated[str | None, typer.Option(help="resume or name the study")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda:N")] = "auto",
    threads: Annotated[
        int, typer.Option(help="torch CPU threads; 1 is fastest for small models")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Run one study in this process, without a server."""
    study_spec = load_spec(
        spec,
        {
            "dataset": dataset,
            "n_trials": trials,
            "cv.folds": folds,
            "training.max_epochs": max_epochs,
            "seed": seed,
        },
    )
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        data = load_dataset(study_spec.dataset, target=target, task=study_spec.task)
        where = resolve_device(device)
    except (DatasetError, ValueError) as exc:
        raise fail(str(exc)) from None

    progress = Progress(
        TextColumn("[bold]tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
        console=console,
        disable=as_json,
    )
    with progress:
        bar = progress.add_task("trials", total=study_spec.n_trials, best="")

        def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            try:
                best = f"best {study.best_value:.4f}"
            except ValueError:  # no completed trial yet
                best = ""
            progress.update(bar, advance=1, best=best)

        try:
            outcome: StudyOutcome = run_study(
                study_spec,
                data,
                storage=storage,
                study_name=study_name,
                device=where,
                callbacks=[advance],
            )
        except (DatasetError, SpecError) as exc:
            raise fail(str(exc)) from None
    summary = outcome.summary()
    if as_json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        Console().print(result_table(summary))
    if outcome.best is None:
        raise typer.Exit(1)


@app.callback()
def main() -> None:
    """regtune: regularization tuning with cross-validation."""
