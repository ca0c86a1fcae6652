"""The ``regtune`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import optuna
import torch
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.settings import Settings
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
    if best.get("best_epochs"):
        table.add_row("best epochs", " ".join(str(e) for e in best["best_epochs"]))
    if best.get("l1_sparsity") is not None:
        table.add_row("L1 sparsity", f"{best['l1_sparsity']:.1%}")
    table.add_row("diagnosis", str(best.get("diagnosis")))
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
    population: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="trials trained at once as one stacked model (MLP only); "
            "default: 1 on a CPU, what fits in memory on a GPU",
        ),
    ] = None,
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
                population=population,
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


# --- the service ---------------------------------------------------------------------------

DatabaseUrl = Annotated[
    str | None, typer.Option(help="SQLAlchemy URL (default: REGTUNE_DATABASE_URL or ./regtune.db)")
]


def service_settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: per GPU)")] = None,
) -> None:
    """The HTTP API, the dashboard and embedded workers (Ctrl-C stops all)."""
    from service.serve import PublicBindRefused
    from service.serve import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = service_settings(database_url=database_url, host=host, port=port, workers=workers)
    try:
        run_server(settings)
    except PublicBindRefused as exc:
        raise fail(str(exc)) from None


@app.command()
def worker(
    database_url: DatabaseUrl = None,
    device: Annotated[
        str,
        typer.Option(help="auto (one process per GPU; with none, per CPU core), cpu or cuda:N"),
    ] = "auto",
    once: Annotated[bool, typer.Option(help="exit when no study is runnable")] = False,
) -> None:
    """A worker process: claims studies from the database and runs their trials."""
    from service.serve import start_workers, stop_workers, worker_devices
    from service.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = service_settings(database_url=database_url).model_copy(update={"device": device})
    if len(worker_devices(settings)) > 1:  # REGTUNE_WORKERS=1 keeps it to this process
        children = start_workers(settings)
        # SIGTERM (e.g. as a container's PID 1) must reach the children, which re-queue trials.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        try:
            for child in children:
                child.wait()
        finally:
            stop_workers(children)
        return
    runner = Worker(settings, device)
    runner.install_signal_handlers()
    runner.run(once=once)


token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="what the token is for")],
    tenant: Annotated[str | None, typer.Option(help="tenant (default: NAME)")] = None,
    database_url: DatabaseUrl = None,
    only_if_none: Annotated[
        bool, typer.Option(help="create it only if no token exists (for init jobs)")
    ] = False,
) -> None:
    """Create an API token; it is printed once and stored only as a hash."""
    from service.auth import any_tokens, create_token
    from service.db import Database

    db = Database(service_settings(database_url=database_url))
    db.migrate()
    with db.write() as session:
        if only_if_none and any_tokens(session):
            console.print("a token exists already; none created")
            return
        token = create_token(session, name, tenant)
    print(token)
    console.print(f"token for tenant {tenant or name!r}; it is not shown again")


# --- the HTTP client ------------------------------------------------------------------------


def api_call(call: Any, *args: Any, **kwargs: Any) -> Any:
    from service.client import ApiError

    try:
        return call(*args, **kwargs)
    except ApiError as exc:
        raise fail(str(exc)) from None


def study_summary(study: dict[str, Any]) -> dict[str, Any]:
    """The API's study status in the shape of ``result_table``."""
    return {
        "study": study["id"],
        "metric": study["metric"],
        "trials": {k: v for k, v in study["trials"].items() if v},
        "best": study["best"],
        "test_score": study["test_score"],
    }


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="study spec (JSON)")],
    wait: Annotated[bool, typer.Option(help="follow progress until the study ends")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Submit a study to the server (REGTUNE_URL, REGTUNE_TOKEN)."""
    from service.client import Client

    client = Client()
    created = api_call(client.submit, json.loads(spec.read_text()))
    study_id = created["id"]
    if not wait:
        print(json.dumps(created) if as_json else study_id)
        return
    with Progress(
        TextColumn("[bold]{task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
        console=console,
        disable=as_json,
    ) as progress:
        bar = progress.add_task("study", total=None, status="queued", best="")
        while True:
            study = api_call(client.study, study_id)
            best = study["best"]
            progress.update(
                bar,
                total=study["n_trials"],
                completed=round(study["progress"] * study["n_trials"]),
                status=study["status"],
                best=f"best {best['value']:.4f}" if best else "",
            )
            if study["status"] not in ("queued", "running"):
                break
            time.sleep(1.0)
    if as_json:
        print(json.dumps(study))
    else:
        Console().print(result_table(study_summary(study)))
    if study["status"] != "completed":
        raise typer.Exit(1)


@app.command()
def status(study_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A study's status, progress and best trial."""
    from service.client import Client

    study = api_call(Client().study, study_id)
    if as_json:
        print(json.dumps(study))
        return
    eta = f", ETA {study['eta_s']:.0f}s" if study.get("eta_s") else ""
    console.print(
        f"{study['name']}: {study['status']}, {study['progress']:.0%} of "
        f"{study['n_trials']} trials{eta}"
    )
    Console().print(result_table(study_summary(study)))


@app.command()
def trials(
    study_id: str,
    offset: int = 0,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A page of a study's trials."""
    from service.client import Client

    page = api_call(Client().trials, study_id, offset, limit)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(title=f"trials {offset}–{offset + len(page['items'])} of {page['total']}")
    for column in ("#", "state", "value", "± std", "diagnosis", "params"):
        table.add_column(column)
    for t in page["items"]:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()
        )
        table.add_row(
            str(t["number"]),
            t["state"],
            "" if t["value"] is None else f"{t['value']:.4f}",
            "" if t["cv_std"] is None else f"{t['cv_std']:.4f}",
            t["diagnosis"] or t["fail_reason"] or "",
            params,
        )
    Console().print(table)


@app.command()
def cancel(study_id: str) -> None:
    """Cancel a queued or running study."""
    from service.client import Client

    study = api_call(Client().cancel, study_id)
    console.print(f"study {study['id']} {study['status']}")


datasets_app = typer.Typer(help="Datasets on the server.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[Path, typer.Argument(help=".csv or .npz")],
    target: Annotated[str | None, typer.Option(help="the CSV's label column")] = None,
    name: Annotated[str | None, typer.Option(help="a name for the dataset")] = None,
) -> None:
    """Upload a dataset; prints its id (use it as the spec's 'dataset')."""
    from service.client import Client

    record = api_call(Client().upload, file, target, name)
    print(record["id"])
    console.print(
        f"{record['n_samples']} samples × {record['n_features']} features, {record['task']}"
    )


@app.callback()
def main() -> None:
    """regtune: regularization tuning with cross-validation."""
