"""The final model over real HTTP: ``regtune serve`` and a worker process train a tiny study
with a held-out test split; the model is downloaded with ``GET /v1/studies/{id}/model`` and
``regtune model``, and the README's snippet, run in a fresh Python process, predicts the
held-out rows with exactly the accuracy the study reports as its test score."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from servers import (
    hidden_from,
    regtune,
    serving,
    start_worker,
    stop_process,
    tiny_study,
    wait_status,
)

from service.settings import Settings
from service.store import lifecycle, stored_models, trials
from service.store.db import Database
from service.store.tables import ArtifactRecord
from service.store.trials import make_storage
from service.work import runner as runner_module
from service.work.worker import Worker
from trainer.data.builtin_sets import load_builtin
from trainer.model_file.loading import load_model
from trainer.model_file.model_format import ArtifactError
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol

ROOT = Path(__file__).resolve().parents[1]
# Population training in a worker warns that heartbeats belong to Study.optimize (they beat).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),
]
SPEC = tiny_study(
    name="final-model", cv={"folds": 3, "test_fraction": 0.25}, final_model={"ensemble": True}
)


def readme_snippet() -> str:
    """The Python block of the README's 'Using the tuned model' section, as written there."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using the tuned model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section has one Python snippet"
    assert len(blocks[0].strip().splitlines()) <= 10, "the snippet is ten lines at most"
    return blocks[0]


def held_out_rows(spec: dict[str, Any]) -> tuple[np.ndarray, list[str], list[Any]]:
    """The study's test rows as its protocol draws them: features, their names, true labels."""
    dataset = load_builtin(spec["dataset"])
    protocol = CVProtocol.of(StudySpec.model_validate(spec), dataset)
    labels = [dataset.classes[i] for i in dataset.y[protocol.test]]
    return dataset.X[protocol.test], list(dataset.feature_names), labels


def run_snippet(workdir: Path, model_file: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The README snippet in a fresh interpreter, in a directory holding model.pt and the
    held-out rows as new_rows.csv; returns what it predicted."""
    X, names, _ = held_out_rows(spec)
    workdir.mkdir()
    (workdir / "model.pt").write_bytes(model_file.read_bytes())
    np.savetxt(workdir / "new_rows.csv", X, delimiter=",", header=",".join(names), comments="")
    report = (
        "\nimport json\n"
        "print(json.dumps({'labels': labels.tolist(), 'proba': proba.tolist(),"
        " 'scores': model.scores, 'classes': model.classes, 'task': model.task}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", readme_snippet() + report],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_final_model_downloads_and_predicts_its_test_score(
    database_url: str, tmp_path: Path
) -> None:
    alice = regtune("token", "create", "alice", database_url=database_url).stdout.strip()
    bob = regtune("token", "create", "bob", database_url=database_url).stdout.strip()
    log = tmp_path / "serve.log"
    with (
        serving(database_url, log, workers=0) as server,
        server.client(alice) as http,
        server.client(bob) as other,
    ):
        created = http.post("/v1/studies", json=SPEC)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]

        def cli(*args: str, token: str = alice) -> subprocess.CompletedProcess[str]:
            return regtune(
                *args,
                database_url=database_url,
                cwd=tmp_path,
                REGTUNE_URL=server.url,
                REGTUNE_TOKEN=token,
            )

        # No worker yet: the study is queued, and has no model.
        early = http.get(f"/v1/studies/{study_id}/model")
        assert early.status_code == 409, early.text
        assert early.json()["detail"] == (
            f"study {study_id!r} is queued: its model is retrained on all non-test rows once "
            "the study completes; try again then"
        )
        refused = cli("model", study_id, "-o", "early.pt")
        assert refused.returncode == 2 and "409" in refused.stderr, refused.stderr
        assert not (tmp_path / "early.pt").exists()

        worker = start_worker(database_url, tmp_path / "worker.log")
        try:
            study = wait_status(http, study_id, ("completed", "failed"))
        finally:
            stop_process(worker)
        assert study["status"] == "completed" and study["error"] is None, study
        assert study["test_score"] is not None

        response = http.get(f"/v1/studies/{study_id}/model")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"] == (
            f'attachment; filename="regtune-{study_id}.pt"'
        )
        via_http = tmp_path / "http.pt"
        via_http.write_bytes(response.content)

        downloaded = cli("model", study_id, "-o", "cli.pt")
        assert downloaded.returncode == 0, downloaded.stderr
        assert downloaded.stdout.strip() == "cli.pt"
        assert f"test {study['test_score']:.4g}" in downloaded.stderr, downloaded.stderr
        folds = load_model(response.content, ensemble=True)
        assert f"with an ensemble of its 3 fold models (test {folds.test_score:.4g})" in (
            " ".join(downloaded.stderr.split())  # rich wraps long lines
        )
        assert (tmp_path / "cli.pt").read_bytes() == response.content
        default = cli("model", study_id)  # named after the study by default
        assert default.returncode == 0 and (tmp_path / f"regtune-{study_id}.pt").exists()

        hidden_from(other, "/v1/studies/{id}/model", study_id)
        stolen = cli("model", study_id, "-o", "stolen.pt", token=bob)
        assert stolen.returncode == 2 and "404" in stolen.stderr
        assert "/v1/studies/{study_id}/model" in http.get("/openapi.json").json()["paths"]

        # The README's snippet, in a fresh process: the held-out rows as the protocol draws
        # them get exactly the accuracy the study reports as its test score.
        predicted = run_snippet(tmp_path / "fresh", via_http, SPEC)
        _, _, truth = held_out_rows(SPEC)
        assert len(predicted["labels"]) == len(truth) > 0
        # Wine's labels are the integers 0, 1, 2: they come back as integers, not strings.
        assert all(type(label) is int for label in predicted["labels"]), predicted["labels"][:5]
        accuracy = float(np.mean(np.array(predicted["labels"]) == np.array(truth)))
        assert accuracy == pytest.approx(study["test_score"], abs=1e-6)  # stored as float32
        proba = np.array(predicted["proba"])
        assert proba.shape == (len(truth), 3) and np.allclose(proba.sum(1), 1.0)
        labels_from_proba = [predicted["classes"][i] for i in proba.argmax(1)]
        assert labels_from_proba == predicted["labels"]
        scores = predicted["scores"]
        assert scores["test_score"] == pytest.approx(study["test_score"])
        assert scores["cv_mean"] == pytest.approx(study["best"]["cv_mean"])
        assert scores["fold_scores"] == pytest.approx(study["best"]["fold_scores"])
        assert scores["n_test"] == len(truth)
        # The fold ensemble in the same file scores its own test figure on the same rows.
        X, _, _ = held_out_rows(SPEC)
        assert len(folds.members) == 3
        ensemble_accuracy = float(np.mean(folds.predict(X) == np.array(truth)))
        assert folds.test_score == pytest.approx(ensemble_accuracy, abs=1e-6)

        # Deleting the study deletes its model.
        assert http.delete(f"/v1/studies/{study_id}").status_code == 204
        assert http.get(f"/v1/studies/{study_id}/model").status_code == 404
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            left = connection.scalar(sa.text("SELECT count(*) FROM regtune_artifacts"))
    finally:
        engine.dispose()
    assert left == 0
    assert "Traceback" not in log.read_text()
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


# --- the worker's step, in process ------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Settings, Database, Any]]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'worker.db'}", worker_nice=0)
    db = Database(settings)
    db.migrate()
    yield settings, db, make_storage(settings)
    db.dispose()


def submitted(service: tuple[Settings, Database, Any], **overrides: Any) -> str:
    _, db, storage = service
    spec = StudySpec.model_validate(tiny_study(**overrides))
    return lifecycle.submit(db, storage, "t", spec).id


def test_without_a_test_split_the_model_is_stored_and_no_test_score_reported(service) -> None:
    settings, db, _ = service
    study_id = submitted(service)
    Worker(settings).run(once=True)
    with db.read() as session:
        record = lifecycle.get(session, "t", study_id)
    assert record.status == "completed" and record.error is None and record.test_score is None
    model = load_model(stored_models.model_file(db, "t", study_id))
    assert model.test_score is None and model.scores["n_test"] == 0
    assert model.scores["n_train"] == load_builtin("builtin:wine").n_samples
    assert model.metadata["study"]["id"] == study_id
    with pytest.raises(ArtifactError, match="holds no fold ensemble"):  # not asked for one
        load_model(stored_models.model_file(db, "t", study_id), ensemble=True)


def test_a_failing_refit_completes_the_study_without_a_model(service, monkeypatch) -> None:
    settings, db, _ = service
    study_id = submitted(service, cv={"folds": 3, "test_fraction": 0.2})

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("refit exploded")

    monkeypatch.setattr(runner_module, "final_model", broken)
    Worker(settings).run(once=True)
    with db.read() as session:
        record = lifecycle.get(session, "t", study_id)
    assert record.status == "completed", record.error
    assert record.error == "the final model could not be built: RuntimeError: refit exploded"
    with pytest.raises(lifecycle.Conflict, match="completed without a model: the final model"):
        stored_models.model_file(db, "t", study_id)


def test_a_study_cancelled_meanwhile_stores_no_model(service) -> None:
    _, db, _ = service
    study_id = submitted(service)
    lifecycle.cancel(db, "t", study_id)
    assert not stored_models.complete(db, study_id, test_score=0.5, model=b"file")
    with db.read() as session:
        assert lifecycle.get(session, "t", study_id).status == "cancelled"
        assert session.scalar(sa.select(sa.func.count()).select_from(ArtifactRecord)) == 0
    with pytest.raises(lifecycle.Conflict, match="is cancelled; only a completed study"):
        stored_models.model_file(db, "t", study_id)
    with pytest.raises(lifecycle.NotFound):
        stored_models.model_file(db, "someone else", study_id)


def test_a_trial_reserved_by_another_worker_holds_the_study_open_until_it_ends(service) -> None:
    """Reserving a trial and creating it are two steps: a worker done with its own trials waits
    for another worker's reserved one instead of completing the study without it (a 3-trial
    study once completed with 2, its third stopped as it started)."""
    settings, db, storage = service
    study_id = submitted(service, n_trials=2)
    with db.write() as session:
        assert lifecycle.move(session, study_id, "running")
        assert lifecycle.reserve_trial(session, study_id)  # the other worker's, not created yet
        name = lifecycle.get(session, "t", study_id).optuna_name
    first = threading.Thread(target=Worker(settings).run, kwargs={"once": True})
    first.start()
    study = optuna.load_study(study_name=name, storage=storage)
    deadline = time.monotonic() + 120
    while not study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert time.monotonic() < deadline and first.is_alive()
        time.sleep(0.05)
    time.sleep(1.0)  # the first worker has finished its trial and waits in finish()

    def status() -> str:
        with db.read() as session:
            return lifecycle.get(session, "t", study_id).status

    assert status() == "running"
    other = study.ask()  # the other worker's trial appears, and ends
    study.tell(other, 0.0)
    first.join(timeout=60)
    assert not first.is_alive()
    Worker(settings).run(once=True)  # as the other worker does after its trial: it finishes
    assert status() == "completed"
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2 and len(study.trials) == 2


def test_a_reservation_that_never_becomes_a_trial_delays_completion_only_briefly(
    service, monkeypatch
) -> None:
    """A worker that died between reserving and creating its trial leaves a reservation that
    no trial fills: the study completes after the grace, with the trials it has."""
    settings, db, _ = service
    monkeypatch.setattr(runner_module, "RESERVATION_GRACE_S", 0.5)
    study_id = submitted(service, n_trials=2)
    with db.write() as session:
        assert lifecycle.move(session, study_id, "running")
        assert lifecycle.reserve_trial(session, study_id)  # its worker is gone
    Worker(settings).run(once=True)
    with db.read() as session:
        record = lifecycle.get(session, "t", study_id)
        counts = trials.count_trials(session, record.optuna_id)
    assert record.status == "completed" and counts.complete == 1
