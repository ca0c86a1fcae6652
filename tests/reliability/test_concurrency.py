"""Many processes on one study: SQLite without 'database is locked', PostgreSQL within its
connection bound, and the trial budget is exact however many workers race for it."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import optuna
import psycopg
import pytest
from servers import (
    fresh_postgres_database,
    serving,
    start_worker,
    tiny_study,
    trials_of,
    wait_status,
)

from service.settings import Settings
from service.store.db import connections_per_process

pytestmark = pytest.mark.slow

TINY = {"model": {"hidden": [8]}, "training": {"max_epochs": 2}, "cv": {"folds": 2}}
FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def test_sqlite_with_the_api_and_three_workers_is_never_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    log = tmp_path / "serve.log"
    # No status cache: every poll reads the database, beside three writers.
    with (
        serving(url, log, workers=3, REGTUNE_STATUS_CACHE_S="0") as server,
        server.client() as http,
    ):
        study = http.post("/v1/studies", json=tiny_study(n_trials=60) | TINY).json()
        deadline = time.monotonic() + 900  # a guard against a hang, not a speed target
        while (body := http.get(f"/v1/studies/{study['id']}")).json()["status"] != "completed":
            assert body.status_code == 200, body.text
            assert http.get(f"/v1/studies/{study['id']}/trials").status_code == 200
            assert time.monotonic() < deadline, "the study did not complete"
            time.sleep(0.05)
        final = body.json()
    text = log.read_text()
    assert "database is locked" not in text and "Traceback" not in text
    assert len({line.split()[4] for line in text.splitlines() if "runs study" in line}) == 3
    trials = trials_of(url, study["id"])
    assert final["trials"]["complete"] + final["trials"]["pruned"] == len(trials)
    assert len(trials) == 60  # three workers, each reserving its trials on the study's row


def test_postgresql_with_eight_workers_stays_within_its_connection_bound(tmp_path: Path) -> None:
    env = {"REGTUNE_POOL_SIZE": "1", "REGTUNE_MAX_OVERFLOW": "1"}
    per_process = connections_per_process(Settings(pool_size=1, max_overflow=1))
    n_trials, n_workers = 40, 8
    with fresh_postgres_database() as (url, name):
        samples: list[tuple[int, int, int]] = []  # (connections, finished, running)
        stop = threading.Event()

        def sample() -> None:
            # One connection of our own into the test database, left out of the count.
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                while not stop.wait(0.2):
                    (connections,) = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,),
                    ).fetchone()  # type: ignore[misc]
                    states = dict(
                        conn.execute(
                            "SELECT state::text, count(*) FROM trials GROUP BY state"
                        ).fetchall()
                    )
                    samples.append(
                        (
                            connections,
                            sum(states.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")),
                            states.get("RUNNING", 0),
                        )
                    )

        serve_log = tmp_path / "serve.log"
        with serving(url, serve_log, workers=0, **env) as server, server.client() as http:
            study = http.post("/v1/studies", json=tiny_study(n_trials=n_trials) | TINY).json()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            workers = [
                start_worker(url, tmp_path / f"worker{i}.log", **env) for i in range(n_workers)
            ]
            try:
                final = wait_status(http, study["id"], ("completed", "failed"), timeout=300)
            finally:
                stop.set()
                for worker in workers:
                    worker.send_signal(signal.SIGTERM)
                for worker in workers:
                    worker.wait(60)
        assert final["status"] == "completed", final
        peak = max(c for c, _, _ in samples)
        bound = (n_workers + 1) * per_process  # the workers and the API
        assert 0 < peak <= bound, (peak, bound)
        # At no moment did finished and running trials together exceed the budget.
        assert max(f + r for _, f, r in samples) <= n_trials
        trials = trials_of(url, study["id"])
        finished = [t for t in trials if t.state in FINISHED]
        assert len(finished) == n_trials
        for i in range(n_workers):
            text = (tmp_path / f"worker{i}.log").read_text()
            assert "Traceback" not in text and "too many clients" not in text
