"""``regtune serve``, ``regtune worker`` and ``regtune token``: the service's processes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.settings import Settings

if TYPE_CHECKING:
    pass
from service.cli.root import app, console, fail

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
    from service.cli.serve import PublicBindRefused
    from service.cli.serve import serve as run_server

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
    from service.cli.serve import PARENT_ENV, start_workers, stop_workers, worker_devices
    from service.work.worker import Worker
    from trainer import on_parent_death

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
    from service.store.auth import any_tokens, create_token
    from service.store.db import Database

    db = Database(service_settings(database_url=database_url))
    db.migrate()
    with db.write() as session:
        if only_if_none and any_tokens(session):
            console.print("a token exists already; none created")
            return
        token = create_token(session, name, tenant)
    print(token)
    console.print(f"token for tenant {tenant or name!r}; it is not shown again")
