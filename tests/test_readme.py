"""README.md as a user meets it: every block runs as written, in order, and does what it says.

The shell and Python blocks run as one bash session (``set -eu``: a failing command fails the
test, naming the block's line) in a fresh folder laid out as a clone's root: ``.venv`` is a
throwaway environment over the suite's own (so ``source .venv/bin/activate``, ``pip install``
and ``.venv/bin/regtune`` work as written, and installing the README's plugin leaves the
suite's environment alone), and the service runs there as ``make serve`` runs it. Blocks that
are files (their first line names one: ``# my-networks/pyproject.toml``) are written there
first; JSON blocks are specs, which a server must accept.

The blocks talk to ``localhost:8000`` as written, so the service and the session run in a
network namespace of their own (``unshare --net``), where that port is free whatever runs on
this machine, and where nothing reaches the network: pip installs from what is on disk
(``PIP_NO_INDEX``, and no build isolation, which would fetch setuptools). What a user brings
(``data.csv``, ``new_rows.csv``) the test writes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
import torch
from markdown_code import Block, blocks
from servers import children_of, free_port, trials_of, workerless_server
from sklearn.datasets import load_digits, load_wine

from trainer.model_file.loading import load_model

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SUITE_VENV = Path(sys.prefix)  # the .venv that runs the tests
SESSION_TIMEOUT_S = 540

server = workerless_server("readme-specs")


def kind(block: Block) -> str:
    """How the test treats a block: a shell or Python block runs, a file is written, a JSON
    block is a spec to submit."""
    if block.file:
        return "file"
    return {"sh": "shell", "bash": "shell", "python": "python", "json": "spec"}.get(
        block.info, f"unknown ({block.info or 'indented'})"
    )


def readme_blocks() -> list[Block]:
    return blocks(README.read_text())


# --- the session ---------------------------------------------------------------------------


def throwaway_venv(root: Path) -> None:
    """``root/.venv``: a venv that sees the suite's packages (a .pth adds its site directory,
    so its editable regtune too) and has its own ``pip`` and ``regtune`` scripts."""
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    suite_site = sysconfig.get_path("purelib")
    (site / "regtune-suite.pth").write_text(f"import site; site.addsitedir({suite_site!r})\n")
    for script in ("pip", "regtune"):
        body = (SUITE_VENV / "bin" / script).read_text().split("\n", 1)[1]
        target = venv / "bin" / script
        target.write_text(f"#!{venv / 'bin' / 'python'}\n{body}")  # the same script, our python
        target.chmod(0o755)


def user_files(root: Path) -> None:
    """What the README's reader brings: a table as people export it (text labels, a text
    column, blank cells) and new rows for the digits model."""
    wine = load_wine()
    regions = ["north", "south", "east"]
    with (root / "data.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*(n.replace("/", "_") for n in wine.feature_names), "region", "label"])
        for i, (row, label) in enumerate(zip(wine.data, wine.target, strict=True)):
            cells = [f"{v:g}" for v in row]
            if i % 10 == 3:
                cells[0] = ""  # a blank cell, imputed
            out.writerow([*cells, regions[i % 3], wine.target_names[label]])
    digits = load_digits()
    with (root / "new_rows.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([f"pixel{i}" for i in range(64)])
        out.writerows(digits.data[:5].astype(int).tolist())


def session_script(markdown: str, root: Path) -> str:
    """The markdown's shell and Python blocks as one bash script, in order; its files are
    written to ``root`` on the way."""
    lines = ["set -eu", "trap 'echo \"README block at line $LINE failed (status $?)\" >&2' ERR"]
    for block in blocks(markdown):
        if block.not_run is not None:
            continue
        if kind(block) == "file":
            assert block.file is not None
            (root / block.file).parent.mkdir(parents=True, exist_ok=True)
            (root / block.file).write_text(block.text)
        elif kind(block) == "shell":
            lines += [f"LINE={block.line}", block.text]
        elif kind(block) == "python":
            script = root / ".readme-blocks" / f"line-{block.line}.py"
            script.parent.mkdir(exist_ok=True)
            script.write_text(block.text)
            lines += [f"LINE={block.line}", f"python {script}"]
    return "\n".join(lines) + "\n"


# Inside the namespace: loopback up, the service as `make serve` runs it, the session, then
# SIGTERM to the service (its workers re-queue what runs) and the session's status.
DRIVER = """
ip link set lo up
.venv/bin/regtune serve > serve.log 2>&1 &
server=$!
for _ in $(seq 240); do curl -sf localhost:8000/healthz > /dev/null && break; sleep 0.5; done
bash session.sh
status=$?
kill -TERM $server
wait $server
exit $status
"""


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A process in a group of its own (a test can end all of it), its output read as one."""
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_readme(markdown: str, root: Path) -> subprocess.CompletedProcess[str]:
    throwaway_venv(root)
    user_files(root)
    (root / "session.sh").write_text(session_script(markdown, root))
    (root / "driver.sh").write_text(DRIVER)
    unshare = shutil.which("unshare")
    assert unshare and shutil.which("ip"), (
        "the README test needs unshare and ip (util-linux, iproute2)"
    )
    namespace = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    suite_bin = str(SUITE_VENV / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGTUNE_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != suite_bin)
    env |= {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}  # pip's "no": off
    proc = start([*namespace, "bash", "driver.sh"], root, env)
    try:
        out, _ = proc.communicate(timeout=SESSION_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the README session ran over {SESSION_TIMEOUT_S} s:\n{out[-5000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def studies(root: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(root / "regtune.db")
    try:
        return db.execute("SELECT id, name, status FROM regtune_studies").fetchall()
    finally:
        db.close()


def log_tail(root: Path) -> str:
    return (root / "serve.log").read_text()[-3000:] if (root / "serve.log").exists() else ""


# --- the tests -----------------------------------------------------------------------------


def test_every_block_is_run_or_says_why() -> None:
    found = readme_blocks()
    assert len(found) > 10
    for block in found:
        where = f"README.md line {block.line}"
        if block.not_run is not None:
            assert block.not_run, f"{where}: a 'not run' comment must say why"
        else:
            assert not kind(block).startswith("unknown"), (
                f"{where}: a {kind(block)} block; make it sh, python, json or a file "
                "(first line '# path/name.ext'), or say why it is not run"
            )
        if kind(block) == "spec":
            assert isinstance(json.loads(block.text), dict), where


def test_the_readme_specs_are_accepted(server) -> None:  # type: ignore[no-untyped-def]
    specs = [json.loads(b.text) for b in readme_blocks() if kind(b) == "spec"]
    assert specs
    with server.client() as http:
        for spec in specs:
            answer = http.post("/v1/studies", json=spec)
            assert answer.status_code == 201, answer.text


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    ran = run_readme(README.read_text(), tmp_path)
    assert ran.returncode == 0, f"{ran.stdout[-6000:]}\n--- serve.log:\n{log_tail(tmp_path)}"
    # curl prints an error answer and succeeds: no block may have met one
    assert '{"detail"' not in ran.stdout, ran.stdout[-6000:]

    found = studies(tmp_path)
    assert {status for _, _, status in found} <= {"completed", "cancelled"}, found
    assert ("digits-reg", "completed") in {(name, status) for _, name, status in found}
    (plugin_study,) = [i for i, name, _ in found if name == "digits-plugin"]
    trials = trials_of(f"sqlite:///{tmp_path / 'regtune.db'}", plugin_study)
    assert trials and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert list((tmp_path / ".venv/lib").glob("python*/site-packages/my_networks/__init__.py"))

    model = load_model(tmp_path / "model.pt")
    assert model.predict(torch.zeros(2, 64).numpy()).shape == (2,)
    assert "digits-reg" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "tune.db").exists()


@pytest.mark.slow
def test_the_old_plugin_layout_fails_the_readme_test(tmp_path: Path) -> None:
    """The README's plugin with its module beside pyproject.toml, as it once was: pip builds a
    package without the module, the submission is refused, and the session fails there."""
    plugin = [b for b in readme_blocks() if b.file and b.file.startswith("my-networks/")]
    submit = [b for b in readme_blocks() if "pip install ./my-networks" in b.text]
    assert len(plugin) == 2 and len(submit) == 1
    old = "\n".join(
        f"```{b.info}\n{b.text.replace('my-networks/my_networks/', 'my-networks/')}```"
        for b in plugin
    )
    markdown = f"```sh\nsource .venv/bin/activate\n```\n{old}\n```sh\n{submit[0].text}```\n"
    ran = run_readme(markdown, tmp_path)
    assert ran.returncode != 0
    assert "README block at line" in ran.stdout and "ModuleNotFoundError" in ran.stdout, ran.stdout


# --- `make serve` --------------------------------------------------------------------------


@pytest.mark.slow
def test_make_serve_takes_a_port_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`make serve PORT=N` serves on N; SIGTERM to make reaches the server (the recipe execs
    it), which stops its workers and exits 0, so make prints no error. make itself then ends
    by the signal it was sent (GNU make re-raises it): its status is -SIGTERM, whatever the
    recipe does."""
    port = free_port()
    env = os.environ | {"REGTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'regtune.db'}"}
    make = start(["make", "--no-print-directory", "serve", f"PORT={port}"], ROOT, env)
    try:
        healthy = wait_healthy(f"http://127.0.0.1:{port}", make)
        (server,) = children_of(make.pid)
        make.send_signal(signal.SIGTERM)
        out, _ = make.communicate(timeout=90)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    assert healthy, out[-3000:]
    assert make.returncode == -signal.SIGTERM, out[-3000:]
    assert "Error" not in out and "Terminated" not in out, out[-3000:]
    assert not Path(f"/proc/{server}").exists(), "the server outlived make"


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 300.0) -> bool:
    """Whether ``url``/healthz answered before ``proc`` ended (the first `make serve` after
    pyproject.toml changed reinstalls the runtime dependencies first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False
