"""``regtune tune``: a study on this machine, without a server."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from trainer import SpecError, StudySpec, field_problem

if TYPE_CHECKING:
    import optuna

    from trainer import StudyOutcome
from service.cli.progress import Snapshot, StudyProgress
from service.cli.root import app, console, fail, read_spec_file
from service.cli.views import print_result, write_file


def validation_message(exc: ValidationError) -> str:
    """One line per problem, each naming its field: 'cv.folds: Input should be ≥ 2'."""
    lines = [field_problem(error, "spec") for error in exc.errors()]
    return "invalid spec\n  " + "\n  ".join(lines)


def load_spec(path: Path | None, overrides: dict[str, Any]) -> StudySpec:
    """The spec file (if any) with the command-line overrides applied on top."""
    data = read_spec_file(path) if path is not None else {}
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


def searched(study: optuna.Study, n_trials: int, elapsed_s: float) -> Snapshot:
    """The study this process searches, as the progress display shows it; its ETA is the
    trials left at the rate seen so far (which reflects every searcher process)."""
    from trainer import best_trial, metric_of

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state.is_finished() for t in trials)
    try:
        best: float | None = metric_of(best_trial(study))  # a trade-off's too: by its metric
    except ValueError:  # no completed trial yet
        best = None
    left = max(n_trials - done, 0)
    return Snapshot(
        status="tuning",
        done=done,
        total=n_trials,
        trials=Counter(t.state.name.lower() for t in trials),
        best=best,
        eta_s=left * elapsed_s / done if done and left else None,
    )


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
    population: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="trials trained at once as one stacked model (not with Wilcoxon pruning); "
            "default: 2 on a CPU, what fits in memory on a GPU",
        ),
    ] = None,
    compile_step: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="the population's step under torch.compile; default: on a GPU only",
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="searcher processes over one storage; default: one per CPU core (each with "
            "--threads threads), one on a GPU",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="write the best trial refitted on all non-test rows as a model file "
            "(trainer.load_model reads it)",
        ),
    ] = None,
    splits: Annotated[
        Path | None,
        typer.Option(
            help="write the protocol's rows as JSON (test, folds, inner_validation), to score "
            "a baseline in the very same folds"
        ),
    ] = None,
) -> None:
    """Run one study on this machine, without a server."""
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
    if study_spec.warm_start is not None:
        raise fail("warm_start names a study on a server: submit this spec with 'regtune submit'")
    for path in (output, splits):  # found out now, not after the search
        if path is not None and not path.parent.is_dir():
            raise fail(f"cannot write {path}: no directory {path.parent}")
    # The data and its rows are made on another core while the search's libraries load here,
    # not with the command line (--help answers at once).
    from trainer import Prefetch

    prefetch = Prefetch(study_spec, target=target, task=study_spec.task)
    import optuna
    import torch

    from trainer import (
        CVProtocol,
        DatasetError,
        configure_device,
        load_dataset,
        resolve_device,
        run_parallel_study,
        run_study,
        usable_cores,
    )

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        data = prefetch.dataset() or load_dataset(
            study_spec.dataset, target=target, task=study_spec.task
        )
        where = resolve_device(device)
        configure_device(where)
        protocol = CVProtocol.of(study_spec, data, rows=prefetch.rows)
    except (DatasetError, SpecError, ValueError) as exc:
        raise fail(str(exc)) from None

    if processes is None:
        processes = max(1, usable_cores() // threads) if where.type == "cpu" else 1
    progress = StudyProgress(console, quiet=as_json)
    started = time.monotonic()

    def show(study: optuna.Study) -> None:
        progress.show(searched(study, study_spec.n_trials, time.monotonic() - started))

    try:
        if processes > 1:
            outcome: StudyOutcome = run_parallel_study(
                study_spec,
                data,
                processes=processes,
                storage=storage,
                study_name=study_name,
                device=str(where),
                population=population,
                compile=compile_step,
                progress=show,
                display=progress,
                protocol=protocol,
            )
        else:
            with progress:
                outcome = run_study(
                    study_spec,
                    data,
                    storage=storage,
                    study_name=study_name,
                    device=where,
                    callbacks=[lambda study, trial: show(study)],
                    population=population,
                    compile=compile_step,
                    protocol=protocol,
                )
    except (DatasetError, SpecError) as exc:
        raise fail(str(exc)) from None
    result = outcome.summary()
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        print_result(result)
    if splits is not None:
        write_file(splits, outcome.splits.model_dump_json().encode())
    if output is not None and outcome.model is not None:
        from trainer import to_bytes

        write_file(output, to_bytes(outcome.model))
        console.print(f"model written to {output}", highlight=False)
    if outcome.best is None:
        if output is not None:
            console.print(f"no trial completed: no model written to {output}", highlight=False)
        raise typer.Exit(1)
