"""Faults with real processes: killed workers, a restarted server, a database outage, training
that raises, diverges or runs out of memory. docs/reliability.md says what each one proves."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from servers import (
    SLOW,
    fresh_postgres_database,
    postgres_admin,
    serving,
    start_worker,
    stop_process,
    trials_of,
    wait_for,
    wait_status,
)
from sqlalchemy.exc import DBAPIError

from service.settings import Settings
from service.store.db import make_engine

pytestmark = pytest.mark.slow

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
INJECT = str(Path(__file__).parent / "inject")
# The per-trial engine (Wilcoxon pruning, CNNs) and the population engine recover alike.
ENGINES = {
    "per-trial": {"pruner": {"kind": "wilcoxon"}},
    "population": {},
}


def assert_full_budget_without_duplicates(trials: list[optuna.trial.FrozenTrial], n: int) -> None:
    """n finished trials; every failure re-run at most once, with its parameters; nothing but
    the budget and the re-runs in the storage."""
    complete = [t for t in trials if t.state == COMPLETE]
    assert len(complete) == n, [(t.number, t.state) for t in trials]
    assert len(trials) == n + sum(t.state == FAIL for t in trials)
    for dead in (t for t in trials if t.state == FAIL):
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
        assert len(retries) == 1 and retries[0].params == dead.params
        assert retries[0].state == COMPLETE
        # The re-run completed: it does not carry the failed attempt's reason.
        assert "fail_reason" in dead.user_attrs and "fail_reason" not in retries[0].user_attrs


@pytest.mark.parametrize("engine", ENGINES)
def test_restarting_serve_mid_study_loses_nothing(tmp_path: Path, engine: str) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    log = tmp_path / "serve.log"
    spec = SLOW | ENGINES[engine] | {"n_trials": 4}
    with serving(url, log) as server, server.client() as http:
        study = http.post("/v1/studies", json=spec).json()
        wait_for(
            lambda: http.get(f"/v1/studies/{study['id']}").json()["trials"]["complete"] >= 1,
            what="a first completed trial",
        )
        wait_for(
            lambda: http.get(f"/v1/studies/{study['id']}").json()["trials"]["running"],
            what="a running trial",
        )
    # Ctrl-C interrupted that trial; it must come back with its parameters.
    before = trials_of(url, study["id"])
    completed_before = {t.number for t in before if t.state == COMPLETE}
    assert any(t.state == FAIL for t in before)  # the interrupted one
    with serving(url, log) as server, server.client() as http:
        final = wait_status(http, study["id"], ("completed", "failed"))
    assert final["status"] == "completed", final
    after = trials_of(url, study["id"])
    assert completed_before <= {t.number for t in after if t.state == COMPLETE}
    assert_full_budget_without_duplicates(after, 4)


@pytest.mark.parametrize(("engine", "running"), [("per-trial", 1), ("population", 3)])
def test_a_killed_worker_trial_is_failed_and_requeued(
    tmp_path: Path, engine: str, running: int
) -> None:
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {"REGTUNE_POPULATION": str(running)}
    with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
        study = http.post("/v1/studies", json=SLOW | ENGINES[engine] | {"n_trials": 3}).json()
        victim = start_worker(url, tmp_path / "victim.log", **env)
        wait_for(
            lambda: http.get(f"/v1/studies/{study['id']}").json()["trials"]["running"] == running,
            what="the victim's running trials",
        )
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed = [t.number for t in trials_of(url, study["id"]) if t.state.name == "RUNNING"]
        assert len(killed) == running
        rescuer = start_worker(url, tmp_path / "rescuer.log", **env)
        try:
            final = wait_status(http, study["id"], ("completed", "failed"))
        finally:
            stop_process(rescuer)
        listed = http.get(f"/v1/studies/{study['id']}/trials").json()
        report = http.get(f"/v1/studies/{study['id']}/report").text
    assert final["status"] == "completed", final
    trials = trials_of(url, study["id"])
    # Failed after the heartbeat grace period, each re-run once with its parameters.
    assert {t.number for t in trials if t.state == FAIL} == set(killed)
    assert_full_budget_without_duplicates(trials, 3)
    # Every count a user sees says the same: the status, the trial list and the report.
    assert final["trials"] == {"complete": 3, "pruned": 0, "fail": 0, "running": 0} | {
        "waiting": 0,
        "retried": running,
    }
    assert listed["total"] == len(listed["items"]) == len(trials) == 3 + running
    assert sorted(t["number"] for t in listed["items"] if t["state"] == "retried") == killed
    assert f"3 finished of 3 (3 complete, 0 pruned, 0 failed, {running} retried" in report


def test_a_30s_database_outage_under_a_running_worker_loses_no_trial(tmp_path: Path) -> None:
    with fresh_postgres_database() as (url, name):
        log = tmp_path / "worker.log"
        with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
            study = http.post("/v1/studies", json=SLOW | {"n_trials": 4}).json()
            worker = start_worker(url, log)
            try:
                wait_for(
                    lambda: http.get(f"/v1/studies/{study['id']}").json()["trials"]["running"],
                    what="a running trial",
                )
                # The outage: no new connections, and every open one dropped.
                postgres_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                postgres_admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}'"
                )
                time.sleep(5)
                during = http.get(f"/v1/studies/{study['id']}")
                assert during.status_code == 503, during.text  # not a 500: "come back later"
                assert during.headers["Retry-After"] and "database" in during.json()["detail"]
                time.sleep(25)
                assert worker.poll() is None, "the worker died in the outage"
                postgres_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                final = wait_status(http, study["id"], ("completed", "failed"))
            finally:
                postgres_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                assert stop_process(worker) == 0
        assert final["status"] == "completed", final
        text = log.read_text()
        assert "database unavailable" in text  # it noticed, waited and came back
        assert "Traceback" not in text
        assert_full_budget_without_duplicates(trials_of(url, study["id"]), 4)


# Plain SGD without BatchNorm: a learning rate of 1e12 diverges in the first epoch.
DIVERGING = {
    "dataset": "builtin:wine",
    "model": {"hidden": [16], "batch_norm": False},
    "training": {"optimizer": "sgd", "max_epochs": 5},
    "cv": {"folds": 2},
}


def test_diverging_trials_fail_with_their_reason_and_the_study_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    # 1e12 overflows to inf/NaN within an epoch.
    # A grid of the two learning rates, everything else fixed: one trial of each, whichever
    # worker process draws it (random draws, seeded per worker process, made five of six
    # 1e12 in some runs, and five failures before a completion fail a study by design).
    fixed = {"weight_decay": 0.0, "l1": 0.0, "dropout": 0.0, "bn_momentum": 0.1, "patience": 5}
    spec = DIVERGING | {
        "n_trials": 2,
        "search_space": {"lr": [1e12, 0.01], **fixed},
        "sampler": {"kind": "grid"},
        "seed": 3,
    }
    with serving(url, tmp_path / "serve.log") as server, server.client() as http:
        study = http.post("/v1/studies", json=spec).json()
        assert "id" in study, study
        final = wait_status(http, study["id"], ("completed", "failed"))
        trials = http.get(f"/v1/studies/{study['id']}/trials").json()["items"]
    assert final["status"] == "completed", final
    by_lr = {lr: [t for t in trials if t["params"]["lr"] == lr] for lr in (1e12, 0.01)}
    assert by_lr[1e12] and by_lr[0.01], "the seed must draw both learning rates"
    assert all(t["state"] == "fail" for t in by_lr[1e12])
    assert all("diverged" in t["fail_reason"] for t in by_lr[1e12])
    assert all(t["state"] == "complete" for t in by_lr[0.01])


def test_a_study_whose_every_trial_fails_is_failed_early_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'doomed.db'}"
    spec = DIVERGING | {"n_trials": 40, "search_space": {"lr": [1e12]}}
    with serving(url, tmp_path / "serve.log") as server, server.client() as http:
        study = http.post("/v1/studies", json=spec).json()
        final = wait_status(http, study["id"], ("completed", "failed"))
    assert final["status"] == "failed"
    assert "trials failed" in final["error"] and "diverged" in final["error"]
    assert sum(final["trials"].values()) < 40  # it did not burn the whole budget


def test_training_that_raises_fails_its_trial_and_the_study_completes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'raise.db'}"
    with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
        spec = SLOW | {"n_trials": 6, "training": {"max_epochs": 3}}
        study = http.post("/v1/studies", json=spec).json()
        # One trial per stack, so that each injected failure fails exactly one trial (an error
        # in a stack of several fails all of its trials).
        worker = start_worker(
            url,
            tmp_path / "worker.log",
            PYTHONPATH=INJECT,
            REGTUNE_INJECT="raise",
            REGTUNE_POPULATION="1",
        )
        try:
            final = wait_status(http, study["id"], ("completed", "failed"))
            trials = http.get(f"/v1/studies/{study['id']}/trials").json()["items"]
        finally:
            stop_process(worker)
    assert final["status"] == "completed", final
    failed = [t for t in trials if t["state"] == "fail"]
    assert len(failed) == 2 and len(trials) == 6  # trials 3 and 6 of 6; failures use budget
    reasons = {t["fail_reason"] for t in failed}
    assert reasons == {"RuntimeError: injected training failure"}


def test_out_of_memory_in_the_population_engine_shrinks_the_population(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    log = tmp_path / "worker.log"
    spec = SLOW | {"n_trials": 6, "training": {"max_epochs": 3}}
    with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
        study = http.post("/v1/studies", json=spec).json()
        worker = start_worker(
            url, log, PYTHONPATH=INJECT, REGTUNE_INJECT="oom", REGTUNE_POPULATION="4"
        )
        try:
            final = wait_status(http, study["id"], ("completed", "failed"))
        finally:
            stop_process(worker)
    assert final["status"] == "completed", final
    assert final["trials"]["complete"] == 6 and final["trials"]["fail"] == 0
    # Every stack of more than one slot runs out of memory: 4 → 2 → 1 slots.
    text = log.read_text()
    assert "retrying them with P ≤ 2" in text and "retrying them with P ≤ 1" in text


def test_a_session_cut_off_inside_a_transaction_gives_its_locks_back() -> None:
    """What a worker cut off from PostgreSQL mid-transaction leaves: a session idle inside its
    transaction, holding the row it locked. The server ends it after
    ``pg_idle_in_transaction_s``, and whoever waited for the row gets it."""
    with fresh_postgres_database() as (url, _name):
        engine = make_engine(Settings(database_url=url, pg_idle_in_transaction_s=1))
        try:
            with engine.connect() as silent, engine.connect() as waiting:
                silent.exec_driver_sql("CREATE TABLE trial (id int PRIMARY KEY, state text)")
                silent.exec_driver_sql("INSERT INTO trial VALUES (1, 'RUNNING')")
                silent.commit()
                # As Optuna locks a trial before writing to it; then nothing more is heard.
                silent.exec_driver_sql("SELECT * FROM trial WHERE id = 1 FOR UPDATE")
                waiting.exec_driver_sql("SET lock_timeout = '20s'")  # a failure, not a hang
                waiting.exec_driver_sql("UPDATE trial SET state = 'FAIL' WHERE id = 1")
                waiting.commit()
                with pytest.raises(DBAPIError, match="idle-in-transaction timeout"):
                    silent.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()
