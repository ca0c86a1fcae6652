"""The commands that talk to a regtune server over HTTP (``service.cli.client.Client``)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

if TYPE_CHECKING:
    from service.cli.client import Client
    from service.http.schemas import StudyOut
from service.cli.progress import Snapshot, StudyProgress
from service.cli.root import app, console, fail, read_spec_file
from service.cli.views import (
    ACTIVE_STATES,
    compare_table,
    done_trials,
    page_title,
    pareto_table,
    print_result,
    print_table,
    status_table,
    study_result,
    titled,
    write_file,
)
from service.text import value_text


def api_call(call: Any, *args: Any, **kwargs: Any) -> Any:
    from service.cli.client import ApiError

    try:
        return call(*args, **kwargs)
    except ApiError as exc:
        raise fail(str(exc)) from None


def served(study: StudyOut) -> Snapshot:
    """A polled study as the progress display shows it."""
    return Snapshot(
        status=study.status,
        done=done_trials(study),
        total=study.n_trials,
        trials=study.trials,
        best=None if study.best is None else study.best.value,
        eta_s=study.eta_s if study.status in ACTIVE_STATES else None,
    )


def follow(client: Client, study_id: str, quiet: bool) -> StudyOut:
    """Poll the study until it ends: a live bar on a terminal, one line per change off it."""
    with StudyProgress(console, quiet=quiet) as progress:
        try:
            return api_call(
                client.wait, study_id, poll_s=1.0, on_update=lambda s: progress.show(served(s))
            )
        except KeyboardInterrupt:
            progress.stop()
            console.print(
                f"stopped following; study {study_id} goes on "
                f"(regtune status {study_id}, regtune cancel {study_id})"
            )
            raise typer.Exit(130) from None


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="study spec (JSON)")],
    wait: Annotated[
        bool, typer.Option(help="follow progress (a live bar) until the study ends")
    ] = False,
    warm_start: Annotated[
        str | None,
        typer.Option(help="id of an earlier study whose best trials run first (warm_start.study)"),
    ] = None,
    warm_top: Annotated[
        int | None, typer.Option(min=1, max=100, help="how many of them (warm_start.top)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Submit a study to the server (REGTUNE_URL, REGTUNE_TOKEN); prints its id."""
    from service.cli.client import Client

    body = read_spec_file(spec)
    if warm_start is not None or warm_top is not None:
        warm = dict(body.get("warm_start") or {})
        warm.update({k: v for k, v in {"study": warm_start, "top": warm_top}.items() if v})
        body["warm_start"] = warm
    with Client() as client:
        created = api_call(client.submit, body)
        if not wait:
            print(created.model_dump_json() if as_json else created.id)
            return
        console.print(f"study {created.id} submitted", highlight=False)
        study = follow(client, created.id, quiet=as_json)
    if as_json:
        print(study.model_dump_json())
    else:
        print_result(study_result(study))
        if study.error:
            console.print(f"[bold red]{study.status}:[/] {study.error}")
    if study.status != "completed":
        raise typer.Exit(1)


@app.command()
def status(study_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A study's status, trials by state, progress, ETA and best trial, as a table."""
    from service.cli.client import Client

    with Client() as client:
        study = api_call(client.study, study_id)
    if as_json:
        print(study.model_dump_json())
        return
    print_table(status_table(study))
    front = pareto_table(study_result(study))
    if front is not None:
        print_table(front)


@app.command()
def compare(
    study_ids: Annotated[list[str], typer.Argument(help="two or more study ids")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Studies side by side: status, trials, best CV score, test score, hyperparameters."""
    from service.cli.client import Client

    if len(study_ids) < 2:
        raise fail("give at least two study ids to compare")
    with Client() as client:
        studies = [api_call(client.study, study_id) for study_id in study_ids]
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in studies]))
        return
    print_table(compare_table(studies))


@app.command()
def trials(
    study_id: str,
    offset: int = 0,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A page of a study's trials."""
    from service.cli.client import Client

    with Client() as client:
        page = api_call(client.trials, study_id, offset, limit)
    if as_json:
        print(page.model_dump_json())
        return
    table = Table(title=page_title(page))
    for column in ("#", "state", "value", "± std", "diagnosis", "params"):
        table.add_column(column)
    for t in page.items:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
        )
        table.add_row(
            str(t.number),
            t.state,
            "" if t.value is None else f"{t.value:.4f}",
            "" if t.cv_std is None else f"{t.cv_std:.4f}",
            t.diagnosis or t.fail_reason or "",
            params,
        )
    print_table(table)


@app.command()
def cancel(study_id: str) -> None:
    """Cancel a queued or running study."""
    from service.cli.client import Client

    with Client() as client:
        study = api_call(client.cancel, study_id)
    console.print(f"study {study.id} {study.status}")


def saved_to(what: str) -> Any:
    """The ``--output``/``-o`` option of a command that downloads ``what``."""
    return typer.Option("--output", "-o", help=f"write {what}")


@app.command("model")
def model_download(
    study_id: str,
    output: Annotated[Path | None, saved_to("the file (default: regtune-ID.pt)")] = None,
) -> None:
    """Download a completed study's final model: a torch.save file, ready for
    trainer.load_model (see the README, 'Using the tuned model')."""
    from service.cli.client import Client
    from trainer import ArtifactError, load_model

    with Client() as client:
        data = api_call(client.model, study_id)
    try:
        tuned = load_model(data)  # check it before writing: a broken file is no download
    except ArtifactError as exc:
        raise fail(f"the server sent no model file: {exc}") from None
    target = output or Path(f"regtune-{study_id}.pt")
    write_file(target, data)
    print(target)
    scores = tuned.scores
    what = f"{len(tuned.classes)} classes" if tuned.task == "classification" else "regression"
    cv_mean, cv_std = value_text(scores.get("cv_mean")), value_text(scores.get("cv_std"))
    cv = f"CV {tuned.metric} {cv_mean} ± {cv_std}"
    test = "" if tuned.test_score is None else f", test {value_text(tuned.test_score)}"
    folds = tuned.metadata.get("ensemble")
    ensemble = (
        f"; with an ensemble of its {folds['members']} fold models"
        + ("" if folds["test_score"] is None else f" (test {value_text(folds['test_score'])})")
        if folds
        else ""
    )
    if missing := tuned.metadata.get("ensemble_error"):
        ensemble = f"; {missing}"
    console.print(
        f"{len(data):,} bytes: {what}, {cv}{test}; retrained for {tuned.epochs} epochs on "
        f"{scores.get('n_train')} rows{ensemble}",
        highlight=False,
    )


@app.command("splits")
def splits_download(
    study_id: str,
    output: Annotated[Path | None, saved_to("the JSON file (default: stdout)")] = None,
) -> None:
    """A study's protocol as rows (0-based, into its dataset as stored): {"test": [...],
    "folds": [[rows fold 1 scores], ...], "inner_validation": [[rows fold 1's early stopping
    watches], ...]}, to score a baseline in the very same folds."""
    from service.cli.client import Client
    from trainer import SplitRows

    with Client() as client:
        rows = api_call(client.typed, SplitRows, "GET", f"/v1/studies/{study_id}/splits")
    if output is None:
        print(rows.model_dump_json())
        return
    write_file(output, rows.model_dump_json().encode())
    print(output)
    sizes = ", ".join(str(len(fold)) for fold in rows.folds)
    console.print(
        f"{len(rows.folds)} folds of {sizes} rows, {len(rows.test)} test rows",
        highlight=False,
    )


datasets_app = typer.Typer(help="Datasets on the server.", no_args_is_help=True)


class MissingTargetChoice(StrEnum):
    refuse = "refuse"
    drop = "drop"


app.add_typer(datasets_app, name="datasets")


@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[Path, typer.Argument(help=".csv or .npz")],
    target: Annotated[str | None, typer.Option(help="the CSV's label column")] = None,
    name: Annotated[str | None, typer.Option(help="a name for the dataset")] = None,
    missing_target: Annotated[
        MissingTargetChoice | None,
        typer.Option(help="rows with a blank target: refused (the default), or dropped"),
    ] = None,
) -> None:
    """Upload a dataset; prints its id (use it as the spec's 'dataset')."""
    from service.cli.client import Client

    choice = None if missing_target is None else missing_target.value
    with Client() as client:
        record = api_call(client.upload, file, target, name, choice)
    print(record.id)
    console.print(f"{record.n_samples} samples × {record.n_features} features, {record.task}")
    for column in record.columns:
        if column.treatment == "dropped":
            console.print(f"[yellow]dropped[/] column {column.name!r}: {column.reason}")
    if record.dropped_rows:
        console.print(f"[yellow]dropped[/] {record.dropped_rows} rows with a blank target")


@datasets_app.command("list")
def datasets_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The tenant's uploads, newest first."""
    from service.cli.client import Client

    with Client() as client:
        records = api_call(client.datasets)
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in records]))
        return
    table = Table("id", "name", "task", "samples", "features", "uploaded")
    for r in records:
        table.add_row(
            r.id,
            r.name,
            r.task,
            str(r.n_samples),
            str(r.n_features),
            f"{r.created_at:%Y-%m-%d %H:%M}",
        )
    print_table(table)


@datasets_app.command("show")
def datasets_show(
    dataset_id: str, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """One upload: its size, classes and how each column is used."""
    from service.cli.client import Client

    with Client() as client:
        record = api_call(client.dataset, dataset_id)
    if as_json:
        print(record.model_dump_json())
        return
    table = titled(f"dataset {record.id}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("name", record.name)
    table.add_row("target", record.target or "-")
    table.add_row("task", record.task)
    table.add_row("samples", f"{record.n_samples} ({record.dropped_rows} dropped: blank target)")
    table.add_row("features", f"{record.n_features} network inputs")
    if record.classes:
        table.add_row("classes", ", ".join(str(c) for c in record.classes[:20]))
    for column in record.columns:
        if column.treatment == "numeric":
            how = f"numeric, {column.imputed} blank cells imputed" if column.imputed else "numeric"
        elif column.treatment == "categorical":
            levels = [level or "(blank)" for level in column.levels or []]
            how = f"categorical: {', '.join(levels[:10])}{', …' if len(levels) > 10 else ''}"
        else:
            how = f"dropped: {column.reason}"
        table.add_row(f"column {column.name}", how)
    print_table(table)


@datasets_app.command("delete")
def datasets_delete(dataset_id: str) -> None:
    """Delete an upload (refused while a queued or running study uses it)."""
    from service.cli.client import Client

    with Client() as client:
        api_call(client.delete_dataset, dataset_id)
    console.print(f"deleted dataset {dataset_id}")
