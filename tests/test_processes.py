"""No worker outlives ``regtune serve`` or a fanned-out ``regtune worker``, whatever signal ends
it: SIGTERM (systemd, ``kill``), SIGINT (Ctrl-C) or SIGKILL (the OOM killer, ``kill -9``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from servers import REGTUNE, SLOW, Server, children_of, env_for, wait_for

pytestmark = pytest.mark.slow

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}
GONE_WITHIN_S = 30


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def assert_all_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for pid in left:  # do not leak them into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes {left} outlived their parent by {GONE_WITHIN_S} s"


@pytest.mark.parametrize("name", list(SIGNALS))
def test_serve_leaves_no_worker_behind(tmp_path: Path, name: str) -> None:
    server = Server(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "serve.log", workers=2)
    try:
        with server.client() as http:  # the workers train while the signal comes
            study = http.post("/v1/studies", json=SLOW | {"n_trials": 20}).json()
            wait_for(
                lambda: http.get(f"/v1/studies/{study['id']}").json()["trials"]["running"],
                what="a running trial",
            )
        workers = wait_for(
            lambda: len(found := children_of(server.proc.pid)) == 2 and found,
            what="two worker processes",
        )
        server.proc.send_signal(SIGNALS[name])
        assert_all_gone([server.proc.pid, *workers])
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    if name != "SIGKILL":  # a graceful stop: the workers were stopped, not orphaned
        log = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_fanned_out_worker_leaves_no_child_behind(tmp_path: Path, name: str) -> None:
    log = tmp_path / "worker.log"
    parent = subprocess.Popen(
        [*REGTUNE, "worker", "--device", "cpu"],
        env=env_for(f"sqlite:///{tmp_path / 'worker.db'}", REGTUNE_WORKERS="2"),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        children = wait_for(
            lambda: len(found := children_of(parent.pid)) == 2 and found,
            what="two worker processes",
        )
        wait_for(lambda: log.read_text().count("started on cpu") == 2, what="workers up")
        parent.send_signal(SIGNALS[name])
        assert_all_gone([parent.pid, *children])
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
