"""A page of trials read in a fixed number of queries says what Optuna's own reading says."""

from __future__ import annotations

import math

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.orm import Session

from service.store.trials import trial_ids_page, trial_summaries
from trainer.tuning.records import LISTED


def fill(storage: RDBStorage) -> optuna.Study:
    """Trials in every state, with params, intermediate values and attributes."""
    study = optuna.create_study(storage=storage, study_name="page", direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        lam = trial.suggest_float("lambda", 1e-6, 1e-1, log=True)
        p = trial.suggest_float("dropout", 0.0, 0.5)
        trial.suggest_categorical("optimizer", ["adam", "sgd"])
        trial.set_user_attr("folds", [0.9, 0.8, math.nan])  # not listed: not read
        trial.set_user_attr("cv_std", math.nan if trial.number == 3 else 0.01 * trial.number)
        trial.set_user_attr("diagnosis", "over-fitting")
        for epoch in range(3):
            trial.report(p + epoch * lam, epoch)
        if trial.number % 4 == 1:
            raise optuna.TrialPruned()
        if trial.number % 4 == 2:
            raise ValueError("boom")
        if trial.number == 4:
            return -math.inf
        return p - lam

    study.optimize(objective, n_trials=9, catch=(ValueError,))
    study.enqueue_trial({"lambda": 1e-3})  # one WAITING trial with a fixed param
    study.ask()  # and one RUNNING
    return study


def test_a_page_matches_get_trial_in_order_and_in_few_queries(database_url: str) -> None:
    storage = RDBStorage(database_url)
    study = fill(storage)
    study_id = study._study_id
    queries: list[str] = []
    event.listen(storage.engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    with Session(storage.engine) as session:
        ids = trial_ids_page(session, study_id, 2, 7)
        before = len(queries)
        page = trial_summaries(session, ids)
        used = len(queries) - before
    expected = [storage.get_trial(i) for i in ids]
    assert [t.number for t in page] == [t.number for t in expected] == list(range(2, 9))
    for got, want in zip(page, expected, strict=True):
        assert got.state == want.state
        assert got.params == want.params and got.distributions == want.distributions
        assert got.values == want.values
        listed = {k: v for k, v in want.user_attrs.items() if k in LISTED}
        assert repr(got.user_attrs) == repr(listed)  # NaN != NaN, so compare text
        assert "folds" not in got.user_attrs and got.intermediate_values == {}
        assert (got.datetime_start, got.datetime_complete) == (
            want.datetime_start,
            want.datetime_complete,
        )
    assert {t.state for t in page} >= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    assert [t.values for t in page if t.number == 4] == [[-math.inf]]
    assert used <= 4, f"{used} queries for a page of {len(ids)}"
    storage.engine.dispose()


def test_an_empty_page_and_unknown_ids_read_nothing(database_url: str) -> None:
    storage = RDBStorage(database_url)
    fill(storage)
    with Session(storage.engine) as session:
        assert trial_summaries(session, []) == []
        assert trial_summaries(session, [10_000]) == []
    storage.engine.dispose()
