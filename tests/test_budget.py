"""The trial budget is exact: a study holds ``n_trials`` trials, however many processes race.

Each level is raced for real: processes reserving from one shared counter (``regtune tune``'s
searchers), processes reserving on one study row of SQLite and PostgreSQL (the service's
workers), ``regtune tune`` itself with several searcher processes of several slots each, and
served studies with two worker processes. Before the reservation a 3-trial study run by two
searchers of three slots each held 5 trials.
"""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from servers import (
    fresh_postgres_database,
    serving,
    start_worker,
    stop_process,
    tiny_study,
    trials_of,
    wait_status,
)

from service.settings import Settings
from service.store import lifecycle
from service.store.db import Database
from service.store.tables import StudyRecord
from service.store.trials import (
    CANCELLED,
    TrialCounts,
    count_trials,
    eta_seconds,
    listed_state,
    make_storage,
    retried_numbers,
    retried_of,
    retry_callback,
)
from trainer.data.datasets import Dataset
from trainer.specs.study_spec import StudySpec
from trainer.tuning import optuna_internals
from trainer.tuning.budget import SharedCounter, is_rerun, spent
from trainer.tuning.parallel import run_parallel_study
from trainer.tuning.study import StudyOutcome

FORK = multiprocessing.get_context("fork")
RACERS = 4


def take_all(reserve: Any, results: Any) -> None:
    """A racer: reserve until the budget says no; report how many it got."""
    got = 0
    while reserve():
        got += 1
    results.put(got)


def race(reserve: Any) -> list[int]:
    """``RACERS`` forked processes reserving at once; what each one got."""
    results = FORK.Queue()
    procs = [FORK.Process(target=take_all, args=(reserve, results)) for _ in range(RACERS)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    return got


@pytest.mark.parametrize("n_trials", [0, 1, 3, 50])
def test_racing_processes_share_exactly_n_trials_of_one_counter(n_trials: int) -> None:
    for _ in range(10):
        counter = SharedCounter.starting_at(n_trials, 0, FORK)
        assert sum(race(counter.reserve)) == n_trials
        assert not counter.reserve()


def test_a_resumed_counter_grants_only_what_the_storage_lacks() -> None:
    counter = SharedCounter.starting_at(5, 3, FORK)
    assert sum(race(counter.reserve)) == 2


class RowReserver:
    """Reserves on one study's row through a database connection of its own process (the
    parent's engine must not cross a fork)."""

    def __init__(self, url: str, study_id: str) -> None:
        self.url, self.study_id, self.db = url, study_id, None

    def __call__(self) -> bool:
        if self.db is None:
            self.db = Database(Settings(database_url=self.url))
        with self.db.write() as session:
            return lifecycle.reserve_trial(session, self.study_id)


def add_study(db: Database, n_trials: int, status: str = "running") -> str:
    study_id = uuid.uuid4().hex
    with db.write() as session:
        session.add(
            StudyRecord(
                id=study_id,
                tenant="t",
                name="race",
                spec={},
                status=status,
                optuna_name=f"race-{study_id}",
                n_trials=n_trials,
                metric="accuracy",
                direction="maximize",
            )
        )
    return study_id


def test_racing_workers_reserve_exactly_n_trials_on_the_study_row(database_url: str) -> None:
    db = Database(Settings(database_url=database_url))
    db.migrate()
    rounds = [(n, add_study(db, n)) for n in (1, 2, 3, 7, 1, 2, 3, 7)]
    queued = add_study(db, 5, status="queued")  # nothing is reserved before a study runs
    db.dispose()  # no connection of the parent's may cross the fork
    for n_trials, study_id in rounds:
        assert sum(race(RowReserver(database_url, study_id))) == n_trials
    assert sum(race(RowReserver(database_url, queued))) == 0
    with db.read() as session:
        assert [lifecycle.reserved(session, study_id) for _, study_id in rounds] == [
            n for n, _ in rounds
        ]
    db.dispose()


def tiny_spec(n_trials: int, **overrides: Any) -> StudySpec:
    return StudySpec.model_validate(
        tiny_study(
            n_trials=n_trials,
            model={"hidden": [8]},
            training={"max_epochs": 2},
            cv={"folds": 2},
            pruner={"kind": "none"},
            **overrides,
        )
    )


def two_searchers(n_trials: int, data: Dataset, url: str | None, name: str) -> StudyOutcome:
    """``regtune tune``'s search with two searcher processes of three slots each."""
    return run_parallel_study(
        tiny_spec(n_trials),
        data,
        processes=2,
        population=3,
        storage=url,
        study_name=name,
        refit_best=False,
    )


@pytest.mark.parametrize("storage", ["journal", "sqlite", "postgresql"])
def test_tune_searchers_with_several_slots_create_exactly_n_trials(
    storage: str, wine: Dataset, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two searcher processes of three slots each (six free slots) for budgets smaller,
    equal and larger than that: the storage holds exactly ``n_trials``, every run."""
    for n_trials in (1, 2, 3, 5, 7):
        url = None
        if storage == "sqlite":
            url = f"sqlite:///{tmp_path / f'tune-{n_trials}.db'}"
        elif storage == "postgresql":
            url = request.getfixturevalue("postgres_url")
        outcome = two_searchers(n_trials, wine, url, f"race-{n_trials}-{uuid.uuid4().hex[:6]}")
        states = [t.state for t in outcome.study.get_trials(deepcopy=False)]
        assert len(states) == n_trials, (n_trials, states)
        assert states.count(optuna.trial.TrialState.COMPLETE) == n_trials


def test_a_resumed_tune_runs_only_the_trials_it_lacks(wine: Dataset, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    for n_trials in (2, 5):  # the same study, its budget raised from 2 to 5
        outcome = two_searchers(n_trials, wine, url, "resumed")
    assert len(outcome.study.trials) == 5
    assert spent(optuna.load_study(study_name="resumed", storage=url)) == 5


@pytest.fixture
def postgres_url() -> Any:
    with fresh_postgres_database() as (url, _):
        yield url


@pytest.mark.slow
def test_served_studies_hold_exactly_n_trials_with_two_workers_of_three_slots(
    database_url: str, tmp_path: Path
) -> None:
    """Two worker processes, each stacking up to three trials, on studies of 1–5 trials."""
    budgets = (1, 2, 3, 5)
    with (
        serving(database_url, tmp_path / "serve.log", workers=0) as server,
        server.client() as client,
    ):
        ids = []
        for n_trials in budgets:
            spec = tiny_spec(n_trials).model_dump(mode="json", exclude_unset=True)
            response = client.post("/v1/studies", json=spec)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        workers = [
            start_worker(database_url, tmp_path / f"worker{i}.log", REGTUNE_POPULATION="3")
            for i in range(2)
        ]
        try:
            for study_id, n_trials in zip(ids, budgets, strict=True):
                body = wait_status(client, study_id, ("completed", "failed"))
                assert body["status"] == "completed", body
                assert body["trials"]["complete"] == n_trials, body
                trials = trials_of(database_url, study_id)
                assert len(trials) == n_trials
                assert not any(is_rerun(t) for t in trials)
                listed = client.get(f"/v1/studies/{study_id}/trials").json()
                assert listed["total"] == n_trials == len(listed["items"])
        finally:
            for worker in workers:
                stop_process(worker)


def test_sql_counts_listing_states_and_loaded_counts_agree(database_url: str) -> None:
    """The status counts (SQL), the trial list's states and the report's counts (loaded
    trials) follow one rule: a re-queued failure is ``retried`` (twice for a re-run that failed
    again), one stopped with its study ``cancelled``, and the list holds every trial."""
    db = Database(Settings(database_url=database_url))
    db.migrate()
    storage = make_storage(Settings(database_url=database_url))
    study = optuna.create_study(storage=storage, study_name="counted")
    x = optuna.distributions.FloatDistribution(0, 1)

    def add(state: TrialState, **attrs: Any) -> FrozenTrial:
        value = 0.5 if state == TrialState.COMPLETE else None
        study.add_trial(
            optuna.trial.create_trial(
                state=state, value=value, params={"x": 0.5}, distributions={"x": x}, **attrs
            )
        )
        return study.trials[-1]

    add(TrialState.COMPLETE)
    add(TrialState.PRUNED, intermediate_values={0: 0.1})
    add(TrialState.FAIL, user_attrs={"fail_reason": "boom"})
    add(TrialState.FAIL, user_attrs={"fail_reason": CANCELLED})
    add(TrialState.RUNNING)
    dead = add(TrialState.FAIL, user_attrs={"fail_reason": "its worker stopped"})
    retry_callback()(study, dead)  # re-run 1 (waiting) ...
    rerun = study.trials[-1]
    storage.set_trial_state_values(rerun._trial_id, TrialState.RUNNING)
    storage.set_trial_state_values(rerun._trial_id, TrialState.FAIL)
    retry_callback()(study, study.trials[-1])  # ... failed too: re-run 2 waits

    trials = study.get_trials()
    with db.read() as session:
        counted = count_trials(session, optuna_internals.study_id(study))
        retried = retried_numbers(session, optuna_internals.study_id(study))
    assert retried == retried_of(trials) == {dead.number, rerun.number}
    assert counted == TrialCounts.of(trials)
    assert counted.as_dict() == {
        "complete": 1,
        "pruned": 1,
        "fail": 1,
        "running": 1,
        "waiting": 1,
        "retried": 2,
        "cancelled": 1,
    }
    assert counted.finished == 4 and counted.total == len(trials) == 8
    states = [listed_state(t, retried) for t in trials]
    assert states == [
        "complete",
        "pruned",
        "fail",
        "cancelled",
        "running",
        "retried",
        "retried",
        "waiting",
    ]
    db.dispose()


def test_eta_is_remaining_trials_at_the_observed_rate() -> None:
    start = datetime(2026, 1, 1, 12, 0, 0)
    counts = TrialCounts(complete=10)
    # 10 trials in 100 s (several workers included): 30 left take 300 s.
    assert eta_seconds(counts, 40, 10, start, start + timedelta(seconds=100)) == pytest.approx(300)
    assert eta_seconds(TrialCounts(), 40, 0, None, None) is None
    assert eta_seconds(TrialCounts(complete=40), 40, 40, start, start) == 0.0
