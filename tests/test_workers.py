"""Workers as real processes: sharing a study, cancel, restart, and a SIGKILL mid-trial."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import (
    SLOW,
    fresh_postgres_database,
    postgres_admin,
    serving,
    start_worker,
    tiny_study,
    trials_of,
    wait_for,
    wait_status,
)

from service.cli.serve import usable_cores, worker_devices
from service.settings import Settings

pytestmark = pytest.mark.slow


def test_two_workers_share_one_study_without_overshooting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    log = tmp_path / "serve.log"
    with serving(url, log, workers=2) as server, server.client() as http:
        # Both workers must be up first: one alone finishes eight tiny trials in a second.
        wait_for(lambda: log.read_text().count("ready on cpu") == 2, what="both workers")
        study = http.post("/v1/studies", json=tiny_study(n_trials=16)).json()
        done = wait_status(http, study["id"], ("completed", "failed"))
    assert done["status"] == "completed", done
    trials = trials_of(url, study["id"])
    # Each worker reserves its trials on the study's row: exactly the budget.
    assert len(trials) == 16
    assert done["trials"]["complete"] + done["trials"]["pruned"] == len(trials)
    text = log.read_text()
    workers = {line.split()[4] for line in text.splitlines() if "runs study" in line}
    assert len(workers) == 2, text[-2000:]


def test_worker_devices_one_process_per_core_on_a_cpu() -> None:
    cores = usable_cores()
    assert worker_devices(Settings(device="cpu")) == ["cpu"] * cores
    assert worker_devices(Settings(device="cpu", threads=2)) == ["cpu"] * max(1, cores // 2)
    assert worker_devices(Settings(device="cpu", workers=3)) == ["cpu"] * 3
    assert worker_devices(Settings(device="cpu", workers=0)) == []


def test_a_cpu_worker_fans_out_to_one_process_per_core(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fan.db'}"
    log = tmp_path / "worker.log"
    with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
        parent = start_worker(url, log, REGTUNE_WORKERS="2")
        try:
            study = http.post("/v1/studies", json=tiny_study(n_trials=8)).json()
            done = wait_status(http, study["id"], ("completed", "failed"))
            assert done["status"] == "completed", done
        finally:
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(60) == 0  # it waits for its children, which finish cleanly
    lines = log.read_text().splitlines()
    started = [line for line in lines if "started on cpu" in line]
    assert len(started) == 2, lines[-20:]
    assert str(parent.pid) not in " ".join(started)  # the children work, the parent waits


# Trials of half a minute or more: far longer than the worker's cancellation check (every
# 2 s), so the trials seen running are still training when the cancel or delete lands (SLOW's
# trials can finish in under 2 s on an idle machine).
LONG = SLOW | {"training": {"max_epochs": 2000}, "search_space": {"patience": 4000}}


def training(http: httpx.Client) -> dict[str, Any]:
    """A study of long trials, once one of them trains."""
    study = http.post("/v1/studies", json=LONG | {"n_trials": 50}).json()
    wait_for(
        lambda: http.get(f"/v1/studies/{study['id']}").json()["trials"]["running"],
        what="a running trial",
    )
    return study


def test_cancel_stops_a_running_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cancel.db'}"
    with serving(url, tmp_path / "serve.log") as server, server.client() as http:
        study = training(http)
        assert http.post(f"/v1/studies/{study['id']}/cancel").json()["status"] == "cancelled"
        # The worker notices between epochs: nothing keeps running, and the trials it stopped
        # are counted as cancelled with their study, not as failures.
        final = wait_for(
            lambda: (
                (body := http.get(f"/v1/studies/{study['id']}").json())["trials"].get("cancelled")
                and not body["trials"]["running"]
                and body
            ),
            timeout=30,
            what="the running trials to stop as cancelled",
        )
        listed = http.get(f"/v1/studies/{study['id']}/trials").json()
    assert final["status"] == "cancelled"
    # The trial list names them as the counts do.
    states = [t["state"] for t in listed["items"]]
    assert states.count("cancelled") == final["trials"]["cancelled"] and "fail" not in states
    assert listed["total"] == len(listed["items"]) == sum(final["trials"].values())
    assert len(trials_of(url, study["id"])) < 50
    assert final["trials"]["fail"] == 0, final
    log = (tmp_path / "serve.log").read_text()
    assert "running trial(s) stopped" in log and "Traceback" not in log
    assert "Heartbeat of storage" not in log


def test_deleting_a_running_study_stops_its_trials_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'delete.db'}"
    with serving(url, tmp_path / "serve.log") as server, server.client() as http:
        study = training(http)
        assert http.delete(f"/v1/studies/{study['id']}").status_code == 204
        assert http.get(f"/v1/studies/{study['id']}").status_code == 404
        log = tmp_path / "serve.log"
        wait_for(
            lambda: (
                "its trials stopped" in log.read_text() or "trial(s) stopped" in log.read_text()
            ),
            timeout=30,
            what="the worker to stop the deleted study's trials",
        )
        # The worker goes on: a new study still runs to completion.
        after = http.post("/v1/studies", json=tiny_study(n_trials=2)).json()
        assert wait_status(http, after["id"], ("completed", "failed"))["status"] == "completed"
    text = log.read_text()
    assert "Traceback" not in text and "KeyError" not in text and "study failed" not in text, text


def test_a_worker_waits_for_the_database_instead_of_dying(tmp_path: Path) -> None:
    with fresh_postgres_database(create=False) as (url, name):
        log = tmp_path / "worker.log"
        worker = start_worker(url, log)  # the database does not exist yet
        try:
            wait_for(
                lambda: "database unavailable" in log.read_text(),
                timeout=60,
                what="the worker to report the missing database",
            )
            assert worker.poll() is None
            postgres_admin(f'CREATE DATABASE "{name}"')
            with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
                study = http.post("/v1/studies", json=tiny_study(n_trials=2)).json()
                final = wait_status(http, study["id"], ("completed", "failed"))
            assert final["status"] == "completed", final
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_starting_at_once_on_a_fresh_database(tmp_path: Path, backend: str) -> None:
    """API and workers all create the schema at start-up; they must take turns, not crash."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'race.db'}"
        else:
            url, _ = stack.enter_context(fresh_postgres_database())
        workers = [start_worker(url, tmp_path / f"worker{i}.log") for i in range(3)]
        try:
            with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
                study = http.post("/v1/studies", json=tiny_study(n_trials=3)).json()
                final = wait_status(http, study["id"], ("completed", "failed"))
            assert final["status"] == "completed", final
            assert all(w.poll() is None for w in workers)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)
    for i in range(3):
        assert "Traceback" not in (tmp_path / f"worker{i}.log").read_text()
