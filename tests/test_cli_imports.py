"""``regtune --help`` and the HTTP client commands answer at once: they never import torch or
scikit-learn (seconds of start-up), nor Optuna (the search and its storage) where they do not
train. Each command runs in a real process of its own; what it imported is read at its exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from servers import serving, tiny_study
from typer.core import TyperGroup

from service.cli import app

HEAVY = ("torch", "sklearn", "optuna")
# The typer app run as ``regtune`` runs it; at exit (help and errors exit through SystemExit
# too) the heavy top-level packages it imported go to the file named by the first argument.
PROBE = """
import atexit, json, sys
from pathlib import Path
heavy = {heavy!r}
def dump():
    found = sorted({{k.split('.')[0] for k in sys.modules}} & set(heavy))
    Path(sys.argv[1]).write_text(json.dumps(found))
atexit.register(dump)
from service.cli import app
app(sys.argv[2:], prog_name="regtune")
"""


def probed(out: Path, args: list[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The command line of ``regtune ARGS`` that writes which of ``heavy`` it imported to
    ``out``."""
    return [sys.executable, "-c", PROBE.format(heavy=heavy), str(out), *args]


def heavy_imports(
    args: list[str],
    tmp_path: Path,
    env: dict[str, str] | None = None,
    heavy: tuple[str, ...] = HEAVY,
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """The heavy packages ``regtune ARGS`` imported, and the finished process."""
    out = tmp_path / "imported.json"
    out.unlink(missing_ok=True)
    done = subprocess.run(
        probed(out, args, heavy),
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | (env or {}),
    )
    return json.loads(out.read_text()), done


def command_paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand group of the CLI, as the words that name it."""
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name)
        if isinstance(command, TyperGroup):
            yield from command_paths(command, (*prefix, name))


def test_help_of_every_command_imports_no_torch(tmp_path: Path) -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    paths = [(), *command_paths(root)]
    assert ("tune",) in paths and ("datasets", "upload") in paths and ("token", "create") in paths
    for path in paths:
        imported, done = heavy_imports([*path, "--help"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert "Usage: regtune" in done.stdout
        assert imported == [], f"regtune {' '.join(path)} --help imported {imported}"


def test_tune_imports_neither_scikit_learn_nor_a_database_layer(tmp_path: Path) -> None:
    """``regtune tune`` leaves the data and its rows (scikit-learn, a second of its start) to
    a helper process, and without ``--storage`` searches over a journal file: scikit-learn,
    SQLAlchemy and Optuna's RDB models (0.3 s) stay unimported in the process that trains."""
    args = ["tune", "--dataset", "builtin:wine", "--trials", "1", "--folds", "2"]
    imported, done = heavy_imports(
        [*args, "--max-epochs", "1", "--processes", "1", "--json"],
        tmp_path,
        heavy=("sklearn", "sqlalchemy", "torch"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trials"] == {"complete": 1}
    assert imported == ["torch"]  # it did train: the probe saw its imports


def test_an_unreachable_server_is_reported_without_torch(tmp_path: Path) -> None:
    env = {"REGTUNE_URL": "http://127.0.0.1:9"}
    commands = (
        ["status", "some-id"],
        ["trials", "some-id"],
        ["compare", "some-id", "other-id"],
        ["cancel", "some-id"],
        ["splits", "some-id"],
        ["datasets", "list"],
        ["datasets", "show", "some-id"],
    )
    for args in commands:
        imported, done = heavy_imports(args, tmp_path, env)
        assert done.returncode == 2 and "cannot reach http://127.0.0.1:9" in done.stderr
        assert imported == [], f"regtune {' '.join(args)} imported {imported}"


@pytest.mark.slow
def test_client_commands_against_a_server_import_no_torch(tmp_path: Path) -> None:
    """Submit, follow, status, trials, compare, cancel: tables drawn, nothing heavy imported.

    The server has no worker, so the study stays queued until ``cancel`` ends it, and the
    ``submit --wait`` that follows it then prints its result table."""
    url = f"sqlite:///{tmp_path / 'regtune.db'}"
    (tmp_path / "spec.json").write_text(json.dumps(tiny_study(name="light")))
    with serving(url, tmp_path / "serve.log", workers=0) as server:
        env = {"REGTUNE_URL": server.url, "COLUMNS": "100"}

        def light(*args: str) -> subprocess.CompletedProcess[str]:
            imported, done = heavy_imports(list(args), tmp_path, env)
            assert imported == [], f"regtune {' '.join(args)} imported {imported}"
            return done

        submitted = light("submit", str(tmp_path / "spec.json"))
        assert submitted.returncode == 0, submitted.stderr
        study_id = submitted.stdout.strip()
        assert study_id in light("status", study_id).stdout
        assert json.loads(light("trials", study_id, "--json").stdout)["total"] == 0
        assert light("trials", study_id).returncode == 0
        assert "2 studies side by side" in light("compare", study_id, study_id).stdout
        assert light("datasets", "list").returncode == 0

        # submit --wait follows a second study until it is cancelled.
        out = tmp_path / "wait.json"
        follower = subprocess.Popen(
            probed(out, ["submit", "--wait", str(tmp_path / "spec.json")]),
            env=os.environ | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with httpx.Client(base_url=server.url) as http:
                deadline = time.monotonic() + 60
                while len(http.get("/v1/studies").json()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                (waited, *_) = http.get("/v1/studies").json()  # newest first
            assert "cancelled" in light("cancel", waited["id"]).stderr
            stdout, stderr = follower.communicate(timeout=60)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        assert follower.returncode == 1, stderr  # the study did not complete
        assert f"study {waited['id']}" in stdout and "no trial completed" in stdout, stdout
        assert json.loads(out.read_text()) == []
