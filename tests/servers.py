"""Real processes for the service tests: ``regtune serve`` / ``regtune worker`` and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest

REGTUNE = [sys.executable, "-m", "service"]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Tight clocks so that crash recovery shows within a test's time.
FAST = {
    "REGTUNE_POLL_S": "0.2",
    "REGTUNE_HEARTBEAT_S": "1",
    "REGTUNE_GRACE_S": "4",
    "REGTUNE_THREADS": "1",
    # Workers are niced in production (the API answers first); here a CI machine busy with
    # other work at nice 0 would leave them a tenth of a core and every deadline too short.
    "REGTUNE_WORKER_NICE": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    return os.environ | FAST | {"REGTUNE_DATABASE_URL": database_url} | extra


def regtune(
    *args: str, database_url: str, cwd: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REGTUNE, *args],
        env=env_for(database_url, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tune_json(cwd: Path, spec: dict[str, Any], *args: str) -> dict[str, Any]:
    """``regtune tune --spec spec.json --processes 1 --json ARGS`` in ``cwd`` on an in-memory
    database, after writing ``spec`` there: the result it prints (it must succeed)."""
    (cwd / "spec.json").write_text(json.dumps(spec))
    done = regtune(
        "tune", "--spec", "spec.json", "--processes", "1", "--json", *args,
        database_url="sqlite://", cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class Server:
    """``regtune serve`` on a free loopback port, stopped with SIGINT like Ctrl-C."""

    def __init__(self, database_url: str, log: Path, *, workers: int = 1, **extra: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [*REGTUNE, "serve", "--port", str(self.port), "--workers", str(workers)],
            env=env_for(database_url, **extra),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"regtune serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"regtune serve not healthy:\n{self.log.read_text()[-3000:]}")

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def serving(database_url: str, log: Path, **kwargs: Any) -> Iterator[Server]:
    server = Server(database_url, log, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def workerless_server(name: str, **extra: str) -> Any:
    """A module-scoped fixture: one ``regtune serve`` with no workers (nothing trains) on a
    fresh SQLite database, shared by a module's tests of what the API refuses or answers."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        root = tmp_path_factory.mktemp(name)
        url = f"sqlite:///{root / 'regtune.db'}"
        with serving(url, root / "serve.log", workers=0, **extra) as running:
            yield running

    return server


def sqlite_rows(database_url: str, table: str) -> int:
    """Rows of ``table`` in a ``sqlite:///`` database, read beside the server, not through it."""
    db = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    try:
        (rows,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    finally:
        db.close()
    return int(rows)


def start_worker(database_url: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """One worker process (not one per core), so that a test can kill exactly it."""
    return subprocess.Popen(
        [*REGTUNE, "worker", "--device", "cpu"],
        env=env_for(database_url, **({"REGTUNE_WORKERS": "1"} | extra)),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM, as systemd or ``kill`` stops a process; one still there after ``timeout`` is
    killed (it must not outlive the test) and the test fails saying so."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"pid {proc.pid} was still running {timeout:.0f} s after SIGTERM"
        ) from None


def problem(response: httpx.Response) -> str:
    """A 4xx's ``detail`` as text: FastAPI's list as ``dotted.loc: message`` lines, or the
    string."""
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return detail
    return "\n".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in detail)


def hidden_from(other: httpx.Client, path: str, study_id: str) -> None:
    """Another tenant's study at ``path`` (``{id}`` in it) is a 404 worded as for an id that
    does not exist: nothing tells ``other`` that it exists."""
    nobody_id = uuid.uuid4().hex
    theirs = other.get(path.format(id=study_id))
    nobody = other.get(path.format(id=nobody_id))
    assert theirs.status_code == nobody.status_code == 404, theirs.text
    assert theirs.json()["detail"].replace(study_id, "ID") == nobody.json()["detail"].replace(
        nobody_id, "ID"
    )


def wait_for(
    predicate: Any, timeout: float = 120.0, interval: float = 0.3, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_status(
    client: httpx.Client, study_id: str, statuses: tuple[str, ...], timeout: float = 180.0
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/v1/studies/{study_id}").json()
        return body if body["status"] in statuses else None

    return wait_for(done, timeout, what=f"study {study_id} to reach {statuses}")


# Trials of a few seconds each, so that a test can act while one is running.
SLOW = {
    "dataset": "builtin:digits",
    "model": {"hidden": [32]},
    "training": {"max_epochs": 100},
    "cv": {"folds": 3},
    "search_space": {"patience": 200},
    "pruner": {"kind": "none"},
}


def trials_of(database_url: str, study_id: str) -> list[optuna.trial.FrozenTrial]:
    """The trials of a served study, found by the id it carries (its name is the spec's)."""
    for summary in optuna.get_all_study_summaries(database_url, include_best_trial=False):
        if summary.user_attrs.get("regtune_id") == study_id:
            return optuna.load_study(study_name=summary.study_name, storage=database_url).trials
    raise AssertionError(f"no Optuna study carries regtune_id {study_id!r}")


def tiny_study(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": "builtin:wine",
        "n_trials": 3,
        "model": {"hidden": [16]},
        "training": {"max_epochs": 4},
        "cv": {"folds": 3},
    }
    return spec | overrides


# --- PostgreSQL ---------------------------------------------------------------------------


def postgres_available() -> bool:
    # psycopg is imported where it is used: the device image has no psycopg, and the device
    # tests (which never touch PostgreSQL) collect through conftest, which imports this module.
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


def require_postgres() -> None:
    """Skip outside CI when no server runs; in CI (CI=true) its absence is a failure."""
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI but not reachable")
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432 (these tests run in CI)")


def postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextmanager
def fresh_postgres_database(create: bool = True) -> Iterator[tuple[str, str]]:
    """``(url, name)`` of a new database on the local server, dropped afterwards."""
    require_postgres()
    name = f"regtune_test_{uuid.uuid4().hex[:12]}"
    if create:
        postgres_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name
    finally:
        postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def children_of(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc: no psutil needed)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found
