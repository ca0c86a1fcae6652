"""The protocol's rows as users get them: ``GET /v1/studies/{id}/splits``, ``regtune splits``
and ``regtune tune --splits`` (with ``--output``, the refit model), all from one record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servers import hidden_from, regtune, serving, tiny_study, tune_json
from test_cli_imports import heavy_imports

from trainer.data.builtin_sets import load_builtin
from trainer.data.readers import load_csv
from trainer.model_file.loading import load_model
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.records import SplitRows


def blank_target_csv(n: int = 90) -> bytes:
    """Two numeric features and a 3-class label, blank on every 10th row (dropped on upload)."""
    rng = np.random.default_rng(1)
    lines = ["a,b,label"]
    for i in range(n):
        label = "" if i % 10 == 4 else str(i % 3)
        lines.append(f"{rng.normal():.3f},{rng.normal():.3f},{label}")
    return ("\n".join(lines) + "\n").encode()


def check_partition(rows: dict[str, Any], n: int) -> None:
    """The folds partition the non-test rows; each fold's inner validation lies in its
    training part (the non-test rows it does not score)."""
    test = set(rows["test"])
    pool = set(range(n)) - test
    folds = [set(fold) for fold in rows["folds"]]
    assert sum(len(fold) for fold in folds) == len(pool) and set().union(*folds) == pool
    assert len(rows["inner_validation"]) == len(folds)
    for fold, inner in zip(folds, rows["inner_validation"], strict=True):
        assert inner and set(inner) <= pool - fold


def check_same_as(rows: dict[str, Any], protocol: CVProtocol) -> None:
    """Exactly the rows of the protocol objects the trainer searches with."""
    assert rows["test"] == protocol.test.tolist()
    assert rows["folds"] == [split.score.tolist() for split in protocol.splits]
    assert rows["inner_validation"] == [split.val.tolist() for split in protocol.splits]


def test_the_splits_of_a_study_over_http_and_the_cli(tmp_path: Path) -> None:
    """No worker: the protocol exists from submission. An upload's rows are counted after its
    blank-target rows were dropped; another tenant's study is not found; a study whose upload
    was deleted since says so."""
    url = f"sqlite:///{tmp_path / 'regtune.db'}"
    alice = regtune("token", "create", "alice", database_url=url).stdout.strip()
    bob = regtune("token", "create", "bob", database_url=url).stdout.strip()
    content = blank_target_csv()
    with (
        serving(url, tmp_path / "serve.log", workers=0) as server,
        server.client(alice) as http,
        server.client(bob) as other,
    ):
        upload = http.post(
            "/v1/datasets",
            files={"file": ("t.csv", content)},
            data={"target": "label", "missing_target": "drop"},
        )
        assert upload.status_code == 201, upload.text
        stored = upload.json()
        assert stored["dropped_rows"] == 9 and stored["n_samples"] == 81
        spec = tiny_study(
            dataset=stored["id"], cv={"folds": 3, "test_fraction": 0.2, "inner_validation": 0.2}
        )
        created = http.post("/v1/studies", json=spec)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]

        answer = http.get(f"/v1/studies/{study_id}/splits")
        assert answer.status_code == 200, answer.text
        rows = answer.json()
        assert set(rows) == {"test", "folds", "inner_validation"}
        check_partition(rows, stored["n_samples"])
        data = load_csv(content, "label", missing_target="drop")
        check_same_as(rows, CVProtocol.of(StudySpec.model_validate(spec), data))

        def cli(*args: str, token: str = alice) -> Any:
            return regtune(
                *args,
                database_url=url,
                cwd=tmp_path,
                REGTUNE_URL=server.url,
                REGTUNE_TOKEN=token,
            )

        saved = cli("splits", study_id, "-o", "splits.json")
        assert saved.returncode == 0, saved.stderr
        assert json.loads((tmp_path / "splits.json").read_text()) == rows
        assert "3 folds of" in saved.stderr and f"{len(rows['test'])} test rows" in saved.stderr
        # Without -o it prints them, and like every client command loads no torch or sklearn.
        env = {"REGTUNE_URL": server.url, "REGTUNE_TOKEN": alice}
        imported, printed = heavy_imports(["splits", study_id], tmp_path, env)
        assert printed.returncode == 0 and json.loads(printed.stdout) == rows, printed.stderr
        assert imported == [], imported

        hidden_from(other, "/v1/studies/{id}/splits", study_id)
        stolen = cli("splits", study_id, "-o", "stolen.json", token=bob)
        assert stolen.returncode == 2 and "404" in stolen.stderr
        assert not (tmp_path / "stolen.json").exists()

        # Once the study has ended its upload may go; its splits then cannot be rebuilt.
        assert http.post(f"/v1/studies/{study_id}/cancel").status_code == 200
        assert http.delete(f"/v1/datasets/{stored['id']}").status_code == 204
        gone = http.get(f"/v1/studies/{study_id}/splits")
        assert gone.status_code == 409, gone.text
        assert gone.json()["detail"] == (
            f"study {study_id!r} trained on dataset {stored['id']!r}, which has been deleted since"
        )
        assert "/v1/studies/{study_id}/splits" in http.get("/openapi.json").json()["paths"]


@pytest.mark.slow
def test_tune_writes_its_refit_model_and_its_splits(tmp_path: Path) -> None:
    """``regtune tune --output --splits``: the model file predicts the held-out rows with the
    test score tune reports, and the splits are the protocol's rows."""
    spec = tiny_study(
        name="wine-out",
        n_trials=2,
        training={"max_epochs": 4},
        cv={"folds": 3, "test_fraction": 0.25},
    )
    result = tune_json(tmp_path, spec, "--output", "model.pt", "--splits", "splits.json")
    rows = json.loads((tmp_path / "splits.json").read_text())
    wine = load_builtin("builtin:wine")
    protocol = CVProtocol.of(StudySpec.model_validate(spec), wine)
    check_same_as(rows, protocol)
    check_partition(rows, wine.n_samples)
    assert SplitRows.model_validate(rows) == SplitRows.of(protocol.test, protocol.splits)

    model = load_model(tmp_path / "model.pt")
    test = np.array(rows["test"])
    accuracy = float(np.mean(model.predict(wine.X[test]) == wine.y[test]))
    assert result["test_score"] is not None
    assert accuracy == pytest.approx(result["test_score"], abs=1e-6)
    assert model.scores["cv_mean"] == pytest.approx(result["best"]["cv_mean"])
    assert model.metadata["trial"]["number"] == result["best"]["number"]
    assert model.metadata["study"] == {"name": "wine-out", "dataset": "builtin:wine"}


def test_tune_refuses_an_output_it_could_not_write_before_searching(tmp_path: Path) -> None:
    done = regtune(
        "tune",
        "--dataset",
        "builtin:wine",
        "--output",
        "missing/model.pt",
        database_url="sqlite://",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "cannot write missing/model.pt: no directory missing" in done.stderr
