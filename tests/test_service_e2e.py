"""End to end over real HTTP: ``regtune serve`` as a subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from servers import regtune, serving, tiny_study, wait_status

pytestmark = pytest.mark.slow


def test_submit_poll_and_read_back(database_url: str, tmp_path: Path) -> None:
    with serving(database_url, tmp_path / "serve.log") as server, server.client() as http:
        spec = tiny_study(name="e2e", cv={"folds": 3, "test_fraction": 0.2})
        created = http.post("/v1/studies", json=spec)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["status"] == "queued" and body["name"] == "e2e"
        study = wait_status(http, body["id"], ("completed", "failed"))
        assert study["status"] == "completed", study
        assert study["trials"]["complete"] + study["trials"]["pruned"] == 3
        assert study["progress"] == 1.0
        best = study["best"]
        assert 0 < best["value"] <= 1 and len(best["fold_scores"]) == 3
        assert best["cv_mean"] == pytest.approx(best["value"])
        assert 0 <= study["test_score"] <= 1

        page = http.get(f"/v1/studies/{body['id']}/trials", params={"limit": 2}).json()
        assert page["total"] == 3 and [t["number"] for t in page["items"]] == [0, 1]
        # Trial times are UTC and say so, as the study's own times do.
        assert study["created_at"].endswith("Z")
        assert all(t["datetime_start"].endswith("Z") for t in page["items"]), page["items"]
        detail = http.get(f"/v1/studies/{body['id']}/trials/{best['number']}").json()
        assert len(detail["val_loss"]) == 3 and detail["diagnosis"]
        assert sorted(int(k) for k in detail["intermediate_values"]) == list(range(4))

        # The same study through Optuna itself, from the same database URL.
        loaded = optuna.load_study(study_name=f"e2e-{body['id']}", storage=database_url)
        assert len(loaded.trials) == 3
        assert loaded.best_value == pytest.approx(best["value"])
        assert loaded.metric_names == ["accuracy"]  # the dashboard's name for the objective

        page = http.get("/dashboard")
        assert page.status_code == 200 and "<html" in page.text.lower()
        listed = http.get("/api/studies").json()["study_summaries"]
        assert [s["study_name"] for s in listed] == [f"e2e-{body['id']}"]  # the spec's name
        assert http.get("/docs").status_code == 200
        assert "/v1/studies" in http.get("/openapi.json").json()["paths"]
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_command_line_client(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'client.db'}"
    (tmp_path / "spec.json").write_text(json.dumps(tiny_study(name="via-cli", n_trials=2)))
    (tmp_path / "data.csv").write_text(
        "a,b,label\n" + "".join(f"{i},{i % 5},{i % 2}\n" for i in range(40))
    )
    with serving(url, tmp_path / "serve.log") as server:
        env = {"REGTUNE_URL": server.url}
        done = regtune("submit", "spec.json", "--wait", database_url=url, cwd=tmp_path, **env)
        assert done.returncode == 0, done.stderr
        assert "CV accuracy" in done.stdout and "per fold" in done.stdout
        study_id = server.client().get("/v1/studies").json()[0]["id"]
        status = regtune("status", study_id, "--json", database_url=url, **env)
        assert json.loads(status.stdout)["status"] == "completed"
        listed = regtune("trials", study_id, database_url=url, **env)
        assert listed.returncode == 0 and "trials 0–1 of 2" in listed.stdout  # rows 0 and 1
        again = regtune("cancel", study_id, database_url=url, **env)
        assert again.returncode == 2 and "409" in again.stderr and "completed" in again.stderr
        upload = regtune(
            "datasets",
            "upload",
            "data.csv",
            "--target",
            "label",
            database_url=url,
            cwd=tmp_path,
            **env,
        )
        assert upload.returncode == 0, upload.stderr
        dataset_id = upload.stdout.strip()
        assert server.client().get(f"/v1/datasets/{dataset_id}").json()["n_samples"] == 40
        bad = regtune("status", "nope", database_url=url, **env)
        assert bad.returncode == 2 and "404" in bad.stderr
