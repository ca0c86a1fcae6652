"""A trade-off study end to end: ``regtune serve`` over real HTTP, and ``regtune tune``.

The study's widths (``tests/test_trade_off.py``'s hidden choices, and ``width`` searched, so a
worker trains narrow and full-width trials in one stack) pull size and accuracy apart, so its
front has more than one trial; ``final_model.pick`` within 1.0 accuracy refits the smallest.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from servers import (
    REGTUNE,
    problem,
    regtune,
    serving,
    tiny_study,
    trials_of,
    wait_status,
    workerless_server,
)
from test_trade_off import FIXED, WIDTHS

from trainer.model_file.loading import load_model

SPEC = tiny_study(
    name="trade-off",
    n_trials=4,
    training={"max_epochs": 3, "lr": 0.03},
    cv={"folds": 2, "test_fraction": 0.2},
    # A grid of two hidden widths by two width factors: every run trains narrow and full
    # trials (random draws, seeded per worker process, made all four full-width in ~1/8 of
    # runs; CI failed on one).
    search_space=FIXED | {"hidden": WIDTHS[1:], "width": [0.5, 1.0]},
    sampler={"kind": "grid"},
    pruner={"kind": "none"},
    objective={"trade_off": "parameters"},
    final_model={"pick": {"within": 1.0}},
)


def beaten(values: list[float], by: list[float]) -> bool:
    """Whether ``by`` dominates ``values`` ([accuracy, size]: the first maximized)."""
    return by[0] >= values[0] and by[1] <= values[1] and by != values


def check_front(pareto: list[dict[str, Any]], done: list[optuna.trial.FrozenTrial]) -> None:
    """``pareto`` holds exactly the completed trials that no other beats on both objectives."""
    on_front = {t.number for t in done if not any(beaten(t.values, o.values) for o in done)}
    assert {p["number"] for p in pareto} == on_front
    for p in pareto:
        trial = next(t for t in done if t.number == p["number"])
        assert p["values"] == trial.values and p["params"] == trial.params
        assert len(p["fold_scores"]) == 2


server = workerless_server("trade-off")


def test_the_api_refuses_a_bad_trade_off_and_opens_a_two_objective_study(server) -> None:  # type: ignore[no-untyped-def]
    """Nothing trains here: the 422s name their fields, and a good spec's Optuna study has two
    directions named for the dashboard, and an empty front until a trial completes."""
    with server.client() as http:
        for change, field in [
            ({"objective": {"trade_off": "size"}}, "body.objective.trade_off"),
            ({"final_model": {"pick": {"within": -1}}}, "body.final_model.pick"),
            (
                {"objective": {"trade_off": "parameters"}, "sampler": {"kind": "cmaes"}},
                "sampler.kind",
            ),
        ]:
            refused = http.post("/v1/studies", json=tiny_study(**change))
            assert refused.status_code == 422 and field in problem(refused), problem(refused)
        created = http.post("/v1/studies", json=SPEC)
        assert created.status_code == 201, created.text
        study = http.get(f"/v1/studies/{created.json()['id']}").json()
        assert study["trade_off"] == "parameters" and study["pareto"] == []
        assert study["best"] is None and study["chosen"] is None
        plain = http.post("/v1/studies", json=tiny_study()).json()
        assert http.get(f"/v1/studies/{plain['id']}").json()["pareto"] is None
    loaded = optuna.load_study(
        study_name=f"trade-off-{created.json()['id']}", storage=server.database_url
    )
    assert [d.name for d in loaded.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert loaded.metric_names == ["accuracy", "parameters"]


@pytest.mark.slow
def test_a_trade_off_study_over_http_returns_its_front_and_serves_the_pick(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    with serving(url, tmp_path / "serve.log") as server, server.client() as http:
        created = http.post("/v1/studies", json=SPEC)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        study = wait_status(http, study_id, ("completed", "failed"))
        assert study["status"] == "completed", study
        trials = trials_of(url, study_id)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) == 4 and all(t.values[1] == t.user_attrs["n_params"] for t in done)
        assert {t.params["width"] for t in done} == {0.5, 1.0}  # narrow and full, one worker

        assert study["trade_off"] == "parameters"
        check_front(study["pareto"], done)
        best = max(done, key=lambda t: (t.values[0], -t.number))
        assert study["best"]["number"] == best.number  # the best stays the best by the metric
        assert study["best"]["value"] == pytest.approx(best.values[0])
        smallest = min(study["pareto"], key=lambda p: p["values"][1])
        assert study["chosen"] == (
            None if smallest["number"] == best.number else smallest["number"]
        )
        model = http.get(f"/v1/studies/{study_id}/model")
        assert model.status_code == 200
        assert load_model(model.content).metadata["trial"]["number"] == smallest["number"]

        listed = http.get(f"/v1/studies/{study_id}/trials").json()["items"]
        assert {t["number"]: t["value"] for t in listed if t["state"] == "complete"} == {
            t.number: pytest.approx(t.values[0]) for t in done
        }
        page = http.get(f"/v1/studies/{study_id}/report").text
        assert 'id="trade-off"' in page and 'id="importance-size"' in page
        assert "could not be rendered" not in page

        status = regtune("status", study_id, database_url=url, REGTUNE_URL=server.url)
        assert status.returncode == 0, status.stderr
        assert "Pareto front: accuracy against parameters" in status.stdout
        assert f"{smallest['number']} ◀ model" in status.stdout

        # A later single-objective study warm-starts from the trade-off's best trials.
        warm = tiny_study(n_trials=1, warm_start={"study": study_id, "top": 2})
        warm["search_space"] = SPEC["search_space"]
        second = http.post("/v1/studies", json=warm)
        assert second.status_code == 201, second.text
        again = wait_status(http, second.json()["id"], ("completed", "failed"))
        assert again["status"] == "completed" and again["pareto"] is None, again
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


@pytest.mark.slow
def test_tune_prints_the_front(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    done = subprocess.run(
        [*REGTUNE, "tune", "--spec", "spec.json", "--processes", "2"],
        cwd=tmp_path,
        env=os.environ | {"COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Pareto front: accuracy against parameters" in done.stdout
    assert "◀ model" in done.stdout and "CV accuracy" in done.stdout

    as_json = subprocess.run(
        [*REGTUNE, "tune", "--spec", "spec.json", "--processes", "1", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["trade_off"] == "parameters" and len(result["pareto"]) >= 2
    values = [p["values"] for p in result["pareto"]]
    assert not any(beaten(v, o) for v in values for o in values)
