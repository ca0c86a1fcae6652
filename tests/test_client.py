"""The Python client and the client commands against a live ``regtune serve`` (one worker).

One server and one tiny study (submitted with ``regtune submit --wait``) serve the module;
the warm-started study reuses it. The tenant test has a server of its own, with tokens.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from servers import Server, regtune, serving, tiny_study

from service.cli.client import ApiError, Client
from service.http.schemas import DatasetOut, Page, StudyItem, StudyOut, TrialDetail, TrialOut
from service.store.warmstart import fitting
from trainer.specs.study_spec import SearchSpace

pytestmark = pytest.mark.slow


@dataclass
class Live:
    server: Server
    url: str  # the database
    cwd: Path

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {"REGTUNE_URL": self.server.url, "COLUMNS": "100"}
        if token:
            env["REGTUNE_TOKEN"] = token
        return regtune(*args, database_url=self.url, cwd=self.cwd, **env)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("client")
    url = f"sqlite:///{root / 'regtune.db'}"
    with serving(url, root / "serve.log", workers=1) as server:
        yield Live(server, url, root)
    assert "Traceback" not in (root / "serve.log").read_text()


@pytest.fixture(scope="module")
def submitted(live: Live) -> tuple[subprocess.CompletedProcess[str], str]:
    """``regtune submit --wait`` on a tiny study: the process and the study's id."""
    spec = tiny_study(name="tiny-a", cv={"folds": 3, "test_fraction": 0.2})
    (live.cwd / "a.json").write_text(json.dumps(spec))
    done = live.cli("submit", "a.json", "--wait")
    with Client(live.server.url) as client:
        study_id = client.studies()[0].id
    return done, study_id


@pytest.fixture(scope="module")
def finished(live: Live, submitted: tuple[subprocess.CompletedProcess[str], str]) -> StudyOut:
    """The submitted study once done, as the client reads it."""
    with Client(live.server.url) as client:
        return client.study(submitted[1])


def test_submit_wait_follows_progress_and_prints_the_result(
    submitted: tuple[subprocess.CompletedProcess[str], str],
) -> None:
    done, study_id = submitted
    assert done.returncode == 0, done.stderr
    # Off a terminal the bar is one line per change on stderr; the last one says it all.
    assert f"study {study_id} submitted" in done.stderr
    assert "completed: 3/3 trials done (" in done.stderr
    assert re.search(r"best [01]\.\d{4}", done.stderr), done.stderr
    for row in (f"study {study_id}", "CV accuracy", "per fold", "test accuracy", "diagnosis"):
        assert row in done.stdout, done.stdout


def test_status_prints_a_table_with_the_state_counts(live: Live, finished: StudyOut) -> None:
    study, study_id = finished, finished.id
    shown = live.cli("status", study_id)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    counts = ", ".join(f"{n} {state}" for state, n in study.trials.items())
    assert counts.startswith(f"{study.trials['complete']} complete, ") and counts in out, out
    assert "3/3 trials (100%)" in out and "completed" in out and "tiny-a" in out
    assert study.best is not None and f"{study.best.cv_mean:.4f} ± " in out
    assert "dropout" in out and "weight_decay" in out and "test accuracy" in out
    assert "ETA" not in out  # only while the study is active
    as_json = json.loads(live.cli("status", study_id, "--json").stdout)
    assert StudyOut.model_validate(as_json) == study

    missing = live.cli("status", "no-such-study")
    assert missing.returncode == 2 and "404" in missing.stderr and "not found" in missing.stderr


def test_client_returns_typed_results_and_raises_the_servers_detail(
    live: Live, submitted: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    _, study_id = submitted
    with Client(live.server.url) as client:
        study = client.study(study_id)
        assert isinstance(study, StudyOut) and study.status == "completed"
        assert study.best is not None and study.best.params and study.trials["complete"] >= 1
        page = client.trials(study_id, limit=2)
        assert isinstance(page, Page) and page.total == 3
        assert [t.number for t in page.items] == [0, 1]
        assert all(isinstance(t, TrialOut) for t in page.items)
        detail = client.trial(study_id, study.best.number)
        assert isinstance(detail, TrialDetail) and len(detail.fold_scores or []) == 3
        listed = client.studies()
        assert all(isinstance(s, StudyItem) for s in listed)
        assert study_id in [s.id for s in listed]
        assert client.datasets() == [] or isinstance(client.datasets()[0], DatasetOut)

        with pytest.raises(ApiError) as missing:
            client.study("no-such-study")
        assert missing.value.status_code == 404
        assert missing.value.detail == "study 'no-such-study' not found"
        assert str(missing.value) == "404: study 'no-such-study' not found"
        with pytest.raises(ApiError) as invalid:
            client.submit(tiny_study(cv={"folds": 1}))
        assert invalid.value.status_code == 422 and "cv.folds" in str(invalid.value)
        # The server's validation list reads as the spec errors of `regtune tune` read.
        with pytest.raises(ApiError) as out_of_range:
            client.submit(tiny_study(search_space={"dropout": 1.0}))
        assert str(out_of_range.value).startswith(
            "422: search_space.dropout: must be a number in [0, 1), got 1"
        )
        with pytest.raises(ApiError) as missing_field:
            client.submit({"n_trials": 2})
        assert str(missing_field.value) == "422: dataset: Field required"
        with pytest.raises(ApiError) as conflict:
            client.cancel(study_id)
        assert conflict.value.status_code == 409 and "completed" in str(conflict.value)
    with pytest.raises(ApiError, match="cannot reach"), Client("http://127.0.0.1:9") as client:
        client.study(study_id)


def best_params(client: Client, study_id: str, top: int) -> list[dict[str, object]]:
    trials = [t for t in client.trials(study_id).items if t.state == "complete"]
    trials.sort(key=lambda t: (-(t.value or 0.0), t.number))  # accuracy: maximized
    return [t.params for t in trials[:top]]


def test_warm_start_enqueues_the_earlier_studys_best_trials_first(
    live: Live, submitted: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    _, a = submitted
    (live.cwd / "b.json").write_text(json.dumps(tiny_study(name="tiny-b", n_trials=3)))
    with Client(live.server.url) as client:
        expected = best_params(client, a, 2)
        assert len(expected) == 2  # the tiny study completed at least two trials
        done = live.cli("submit", "b.json", "--warm-start", a, "--warm-top", "2", "--wait")
        assert done.returncode == 0, done.stderr
        b = client.studies()[0].id
        assert b != a
        first = client.trials(b, limit=2).items
        assert [t.params for t in first] == expected
        assert client.study(b).trials["complete"] + client.study(b).trials["pruned"] == 3

        # What happened is on record in the new Optuna study.
        stored = optuna.load_study(study_name=f"tiny-b-{b}", storage=live.url)
        assert stored.user_attrs["warm_start"]["study"] == a
        assert len(stored.user_attrs["warm_start"]["enqueued"]) == 2
        assert stored.user_attrs["warm_start"]["dropped"] == []
        assert stored.trials[0].user_attrs["warm_start"].startswith(f"study {a} trial ")

        for bad in ("no-such-study", a + "x"):
            with pytest.raises(ApiError) as refused:
                client.submit(tiny_study(warm_start={"study": bad}))
            assert refused.value.status_code == 422
            assert refused.value.detail[0]["loc"] == ["body", "warm_start", "study"]
        for top in (0, 101):
            with pytest.raises(ApiError, match=r"warm_start\.top"):
                client.submit(tiny_study(warm_start={"study": a, "top": top}))

    # Side by side: both ids and both best scores.
    with Client(live.server.url) as client:
        studies = [client.study(a), client.study(b)]
    shown = live.cli("compare", a, b)
    assert shown.returncode == 0, shown.stderr
    assert a in shown.stdout and b in shown.stdout, shown.stdout
    for study in studies:
        assert study.best is not None and f"{study.best.cv_mean:.4f} ± " in shown.stdout
    for row in ("dataset", "builtin:wine", "status", "best CV mean ± std", "diagnosis", "l1"):
        assert row in shown.stdout
    assert "◀ best" in shown.stdout
    as_json = json.loads(live.cli("compare", a, b, "--json").stdout)
    assert [s["id"] for s in as_json] == [a, b]
    one = live.cli("compare", a)
    assert one.returncode == 2 and "at least two" in one.stderr


def test_warm_start_is_refused_across_tenants(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tenants.db'}"
    alice = regtune("token", "create", "alice", database_url=url).stdout.strip()
    bob = regtune("token", "create", "bob", database_url=url).stdout.strip()
    with serving(url, tmp_path / "serve.log", workers=0) as server:
        with Client(server.url, alice) as client:
            theirs = client.submit(tiny_study()).id
            mine = client.submit(tiny_study(warm_start={"study": theirs, "top": 1}))
            assert mine.status == "queued"  # nothing completed yet: nothing to enqueue
        with Client(server.url, bob) as client, pytest.raises(ApiError) as refused:
            client.submit(tiny_study(warm_start={"study": theirs}))
        assert refused.value.status_code == 422
        assert refused.value.detail[0]["loc"] == ["body", "warm_start", "study"]
        assert refused.value.detail[0]["msg"] == f"no study {theirs!r} to warm-start from"


def test_only_parameters_inside_the_new_search_space_are_kept() -> None:
    space = SearchSpace.model_validate(
        {"dropout": {"low": 0.0, "high": 0.3}, "patience": 5, "optimizer": ["adam", "sgd"]}
    )
    kept, dropped = fitting(
        space,
        {
            "weight_decay": 1e-3,
            "dropout": 0.5,
            "patience": 7,
            "optimizer": "adam",
            "lr": 0.01,
            "bn_momentum": 0.5,
        },
    )
    assert kept == {"weight_decay": 1e-3, "optimizer": "adam", "bn_momentum": 0.5}
    assert dropped == [
        "dropout=0.5: outside [0, 0.3]",
        "patience=7: fixed to 5 here",
        "lr=0.01: not searched in this study",
    ]
    kept, dropped = fitting(SearchSpace(hidden=[[16], [32, 32]]), {"hidden": "32-32"})
    assert kept == {"hidden": "32-32"} and dropped == []
    kept, dropped = fitting(SearchSpace(), {"hidden": "64", "patience": 30})
    assert kept == {} and dropped == [
        "hidden='64': not searched in this study",
        "patience=30: outside [2, 20]",
    ]
