"""``regtune serve``: the API, the dashboard and N worker subprocesses in one command."""

from __future__ import annotations

import copy
import logging
import os
import queue
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import QueueHandler, QueueListener
from typing import Any

import torch
import uvicorn

from service.http.app import create_app
from service.settings import Settings
from service.store.auth import any_tokens, is_loopback
from service.store.db import Database
from trainer import usable_cores

log = logging.getLogger("regtune")
WORKER_STOP_TIMEOUT_S = 60


class PublicBindRefused(RuntimeError):
    pass


class RedactTokens(logging.Filter):
    """Blank ``token=…`` in access-log lines: a browser logs in with ``/dashboard?token=…``,
    and the log must not keep the secret that the database keeps only as a hash."""

    # The query parameter, and anything shaped like a token wherever it appears.
    TOKEN = re.compile(r"(token=)[^&\s]*|()\brt_[\w-]{16,}", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.TOKEN.sub(r"\1<redacted>", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with tokens redacted from the access log."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    config["handlers"]["access"].setdefault("filters", []).append("redact_tokens")
    return config


class RecordQueue(QueueHandler):
    """A QueueHandler that passes records as they are: the listener's handlers (uvicorn's
    access formatter, the token filter) need the record's ``args``, which ``prepare`` would
    merge into the message; in one process nothing needs pickling."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


@contextmanager
def logging_off_the_event_loop(*names: str) -> Iterator[None]:
    """Hand the records of loggers ``names`` to a thread that writes them.

    A handler writes in the caller's thread, and uvicorn logs each request from its event
    loop: when the disk is busy (training workers committing to SQLite, say), a blocked write
    of one access-log line stalls every request in flight (the server's own p99, by its
    Server-Timing header, was 184 ms with the log written in the loop and 0.9 ms without:
    BENCHMARKS.md, "Load"). The records queue instead; the listener does the I/O.
    """
    originals: dict[str, list[logging.Handler]] = {}
    listeners = []
    for name in names:
        logger = logging.getLogger(name)
        if not logger.handlers:
            continue
        # A queue per logger: a listener gives each record to all of its handlers.
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listeners.append(QueueListener(records, *logger.handlers, respect_handler_level=True))
        originals[name], logger.handlers = logger.handlers, [RecordQueue(records)]
    for listener in listeners:
        listener.start()
    try:
        yield
    finally:
        for listener in listeners:
            listener.stop()  # writes what is still queued
        for name, handlers in originals.items():
            logging.getLogger(name).handlers = handlers


def worker_devices(settings: Settings) -> list[str]:
    """The devices of the worker processes to start, one entry per process.

    By default one per GPU; with no GPU, one per ``threads`` CPU cores, because small models
    train fastest in several 1-thread processes (BENCHMARKS.md, "Engines"). ``workers``
    overrides the count.
    """
    gpus = torch.cuda.device_count() if settings.device in ("auto", "cuda") else 0
    if settings.device not in ("auto", "cuda"):
        devices = [settings.device]
    else:
        devices = [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    if settings.workers is not None:
        count = settings.workers
    elif devices == ["cpu"]:
        count = max(1, usable_cores() // settings.threads)
    else:
        count = len(devices)
    return [devices[i % len(devices)] for i in range(count)]


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as REGTUNE_* variables, so that worker subprocesses see the same ones."""
    env = dict(os.environ)

    def put(prefix: str, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if isinstance(value, dict):
                put(f"{prefix}{name.upper()}__", value)
            elif value is not None:
                env[f"{prefix}{name.upper()}"] = str(value)

    put("REGTUNE_", settings.model_dump())
    return env


PARENT_ENV = "REGTUNE_PARENT_PID"  # a worker started by this process stops when it dies


def start_workers(settings: Settings) -> list[subprocess.Popen[bytes]]:
    # Each child is one worker process: it must not fan out again.
    env = settings_env(settings.model_copy(update={"workers": 1}))
    env[PARENT_ENV] = str(os.getpid())
    return [
        subprocess.Popen([sys.executable, "-m", "service", "worker", "--device", device], env=env)
        for device in worker_devices(settings)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM lets each worker interrupt its trial at the next epoch and re-queue it."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve(settings: Settings) -> None:
    db = Database(settings)
    db.migrate()
    with db.read() as session:
        open_api = not any_tokens(session)
    db.dispose()
    if open_api and not is_loopback(settings.host):
        raise PublicBindRefused(
            f"refusing to serve on {settings.host} with no API token: anyone on the network could "
            "use it. Create a token first ('regtune token create NAME') or bind to 127.0.0.1."
        )
    app = create_app(settings)
    # uvicorn stops on SIGTERM, then raises the signal again once it has shut down; with the
    # default action that would end this process before it stops its workers. As SystemExit
    # it unwinds through the finally below, with status 0: a stop that was asked for is no
    # failure (make would print "Error 143", Kubernetes would mark the pod failed).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    workers = start_workers(settings)
    log.info(
        "regtune on http://%s:%d (dashboard at /dashboard), %d worker(s)",
        settings.host,
        settings.port,
        len(workers),
    )
    try:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="info",
            log_config=log_config(),
        )  # configures logging: the handlers exist from here on
        with logging_off_the_event_loop("uvicorn", "uvicorn.access", "uvicorn.error"):
            uvicorn.Server(config).run()
    finally:
        stop_workers(workers)
