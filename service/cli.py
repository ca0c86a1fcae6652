"""The ``regtune`` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import optuna
import torch
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.settings import Settings
from trainer.datasets import DatasetError, load_dataset
from trainer.device import configure, resolve_device, usable_cores
from trainer.parallel import run_parallel_study
from trainer.spec import SpecError, StudySpec
from trainer.study import StudyOutcome, run_study

if TYPE_CHECKING:
    from service.client import Client
    from service.schemas import StudyOut

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
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        data = load_dataset(study_spec.dataset, target=target, task=study_spec.task)
        where = resolve_device(device)
        configure(where)
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
    if processes is None:
        processes = max(1, usable_cores() // threads) if where.type == "cpu" else 1
    bar = progress.add_task("trials", total=study_spec.n_trials, best="")

    def show(finished: int, best: float | None) -> None:
        progress.update(bar, completed=finished, best="" if best is None else f"best {best:.4f}")

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        try:
            best: float | None = study.best_value
        except ValueError:  # no completed trial yet
            best = None
        show(len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]), best)

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
            )
        else:
            with progress:
                outcome = run_study(
                    study_spec,
                    data,
                    storage=storage,
                    study_name=study_name,
                    device=where,
                    callbacks=[advance],
                    population=population,
                    compile=compile_step,
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
    from service.serve import PARENT_ENV, start_workers, stop_workers, worker_devices
    from service.worker import Worker
    from trainer.lifetime import on_parent_death

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if PARENT_ENV in os.environ:  # started by serve or a fanned-out worker: stop with it
        on_parent_death(int(os.environ[PARENT_ENV]), signal.SIGTERM)
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
# Every command below talks to the server through ``service.client.Client`` and its typed
# results. Tables go to stdout, progress and messages to stderr; without a terminal (a pipe,
# a log file, a test) the live bar becomes one line per change and tables are not wrapped.

ACTIVE_STATES = ("queued", "running")
STATE_STYLES = {"completed": "green", "failed": "red", "running": "yellow", "cancelled": "dim"}


def api_call(call: Any, *args: Any, **kwargs: Any) -> Any:
    from service.client import ApiError

    try:
        return call(*args, **kwargs)
    except ApiError as exc:
        raise fail(str(exc)) from None


def print_table(table: Table) -> None:
    """To stdout; off a terminal as wide as the table needs (a file does not wrap)."""
    from rich.measure import Measurement

    out = Console()
    if not out.is_terminal:
        width = Measurement.get(out, out.options.update_width(10_000), table).maximum
        out = Console(width=max(out.width, width))
    out.print(table)


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def done_trials(study: StudyOut) -> int:
    """Trials that used up budget (complete, pruned, failed for good), as the API counts them."""
    return round(study.progress * study.n_trials)


def state_counts(study: StudyOut) -> str:
    return ", ".join(f"{n} {state}" for state, n in study.trials.items())


def styled_status(study: StudyOut) -> str:
    style = STATE_STYLES.get(study.status)
    return f"[{style}]{study.status}[/]" if style else study.status


def best_text(study: StudyOut) -> str:
    """'0.9444 ± 0.0124 (trial 3)', or '—' before a trial completes."""
    best = study.best
    if best is None:
        return "—"
    mean = best.cv_mean if best.cv_mean is not None else best.value
    spread = f" ± {best.cv_std:.4f}" if best.cv_std is not None else ""
    return f"{mean:.4f}{spread} (trial {best.number})"


def hyperparameters(study: StudyOut) -> dict[str, str]:
    """The best trial's configuration; values the study did not search are marked fixed."""
    best = study.best
    if best is None:
        return {}
    config = best.config or best.params
    return {
        name: fmt(value) + ("" if name in best.params or config is best.params else " (fixed)")
        for name, value in config.items()
    }


def study_summary(study: StudyOut) -> dict[str, Any]:
    """The API's study status in the shape of ``result_table``."""
    return {
        "study": study.id,
        "metric": study.metric,
        "trials": {k: v for k, v in study.trials.items() if v},
        "best": study.best.model_dump() if study.best else None,
        "test_score": study.test_score,
    }


def status_table(study: StudyOut) -> Table:
    table = Table(title=f"study {study.id}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("name", study.name)
    table.add_row("dataset", study.dataset)
    table.add_row("status", styled_status(study))
    table.add_row("trials", state_counts(study))
    table.add_row(
        "progress", f"{done_trials(study)}/{study.n_trials} trials ({study.progress:.0%})"
    )
    if study.status in ACTIVE_STATES:
        table.add_row("ETA", duration(study.eta_s))
    table.add_row(f"best CV {study.metric}", best_text(study))
    if study.best is not None and study.best.fold_scores:
        table.add_row("per fold", "  ".join(f"{s:.4f}" for s in study.best.fold_scores))
    table.add_row(f"test {study.metric}", fmt(study.test_score))
    for name, value in hyperparameters(study).items():
        table.add_row(name, value)
    if study.best is not None:
        table.add_row("diagnosis", fmt(study.best.diagnosis))
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
        sign = 1 if scored[0].direction == "maximize" else -1
        marked = max(scored, key=lambda s: sign * s.best.value)  # type: ignore[union-attr]

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("id", [s.id for s in studies])
    row("dataset", [s.dataset for s in studies])
    row("metric", [f"{s.metric} ({s.direction})" for s in studies])
    row("status", [styled_status(s) for s in studies])
    row("trials", [f"{done_trials(s)}/{s.n_trials}: {state_counts(s)}" for s in studies])
    row(
        "best CV mean ± std",
        [best_text(s) + (" ◀ best" if s is marked else "") for s in studies],
    )
    row("test score", [fmt(s.test_score) for s in studies])
    params = [hyperparameters(s) for s in studies]
    names = list(dict.fromkeys(name for p in params for name in p))
    for name in names:
        row(name, [p.get(name, "—") for p in params])
    row("diagnosis", [fmt(s.best.diagnosis) if s.best else "—" for s in studies])
    return table


def follow(client: Client, study_id: str, quiet: bool) -> StudyOut:
    """Poll the study until it ends: a live bar on a terminal, one line per change off it."""
    live = not quiet and console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.fields[status]:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[best]}"),
        TextColumn("{task.fields[eta]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
    )
    last = ""

    def update(study: StudyOut) -> None:
        nonlocal last
        pruned, failed = study.trials.get("pruned", 0), study.trials.get("fail", 0)
        fields: dict[str, Any] = {
            "status": study.status,
            "counts": f"{pruned} pruned, {failed} failed",
            "best": f"best {study.best.value:.4f}" if study.best else "no best yet",
            "eta": f"ETA {duration(study.eta_s)}" if study.status in ACTIVE_STATES else "",
        }
        progress.update(bar, total=study.n_trials, completed=done_trials(study), **fields)
        line = (
            f"{study.status}: {done_trials(study)}/{study.n_trials} trials done "
            f"({fields['counts']}), {fields['best']}"
            + (f", {fields['eta']}" if fields["eta"] else "")
        )
        if not quiet and not live and line != last:
            console.print(line, highlight=False)
        last = line

    with progress:
        bar = progress.add_task("study", total=None, status="queued", counts="", best="", eta="")
        try:
            return api_call(client.wait, study_id, poll_s=1.0, on_update=update)
        except KeyboardInterrupt:
            progress.stop()
            console.print(
                f"stopped following; study {study_id} goes on "
                f"(regtune status {study_id}, regtune cancel {study_id})"
            )
            raise typer.Exit(130) from None


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(f"cannot read spec {path}: {exc}") from None
    if not isinstance(data, dict):
        raise fail(f"spec {path} must hold a JSON object")
    return data


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
    from service.client import Client

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
        print_table(result_table(study_summary(study)))
        if study.error:
            console.print(f"[bold red]{study.status}:[/] {study.error}")
    if study.status != "completed":
        raise typer.Exit(1)


@app.command()
def status(study_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A study's status, trials by state, progress, ETA and best trial, as a table."""
    from service.client import Client

    with Client() as client:
        study = api_call(client.study, study_id)
    if as_json:
        print(study.model_dump_json())
        return
    print_table(status_table(study))


@app.command()
def compare(
    study_ids: Annotated[list[str], typer.Argument(help="two or more study ids")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Studies side by side: status, trials, best CV score, test score, hyperparameters."""
    from service.client import Client

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
    from service.client import Client

    with Client() as client:
        page = api_call(client.trials, study_id, offset, limit)
    if as_json:
        print(page.model_dump_json())
        return
    table = Table(title=f"trials {offset}–{offset + len(page.items)} of {page.total}")
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
    from service.client import Client

    with Client() as client:
        study = api_call(client.cancel, study_id)
    console.print(f"study {study.id} {study.status}")


@app.command("model")
def model_download(
    study_id: str,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="the file to write (default: regtune-ID.pt)"),
    ] = None,
) -> None:
    """Download a completed study's final model: a torch.save file, ready for
    trainer.artifact.load_model (see the README, 'Using the tuned model')."""
    from service.client import Client
    from trainer.artifact import ArtifactError, load_model

    with Client() as client:
        data = api_call(client.model, study_id)
    try:
        tuned = load_model(data)  # check it before writing: a broken file is no download
    except ArtifactError as exc:
        raise fail(f"the server sent no model file: {exc}") from None
    target = output or Path(f"regtune-{study_id}.pt")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc}") from None
    print(target)
    scores = tuned.scores
    what = f"{len(tuned.classes)} classes" if tuned.task == "classification" else "regression"
    cv = f"CV {tuned.metric} {fmt(scores.get('cv_mean'))} ± {fmt(scores.get('cv_std'))}"
    test = "" if tuned.test_score is None else f", test {fmt(tuned.test_score)}"
    folds = tuned.metadata.get("ensemble")
    ensemble = (
        f"; with an ensemble of its {folds['members']} fold models"
        + ("" if folds["test_score"] is None else f" (test {fmt(folds['test_score'])})")
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
    from service.client import Client

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
    from service.client import Client

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
    from service.client import Client

    with Client() as client:
        record = api_call(client.dataset, dataset_id)
    if as_json:
        print(record.model_dump_json())
        return
    table = Table(title=f"dataset {record.id}", show_header=False)
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
    from service.client import Client

    with Client() as client:
        api_call(client.delete_dataset, dataset_id)
    console.print(f"deleted dataset {dataset_id}")


@app.callback()
def main() -> None:
    """regtune: regularization tuning with cross-validation."""
