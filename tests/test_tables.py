"""Real tables: string and blank cells, encoded per fold with no leakage, blank targets, and
labels that keep their type, from the CSV reader through both engines to the model file."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from servers import regtune, serving, tiny_study, wait_status

from trainer.data.builtin_sets import load_builtin
from trainer.data.datasets import Dataset, DatasetError
from trainer.data.readers import load_csv
from trainer.engines.per_trial import cross_validate
from trainer.engines.population import train_population
from trainer.engines.results import FittedModel
from trainer.engines.trial_config import TrialConfig
from trainer.model_file import loading, packing
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.refit import refit

BASE = {"weight_decay": 1e-4, "l1": 0.0, "dropout": 0.1, "bn_momentum": 0.2, "patience": 3}


def mixed_csv(n: int = 240, seed: int = 0, planted: dict[int, str] | None = None) -> bytes:
    """A table as people export them: an id column, a colour with blanks, a number, an age
    with blank cells, and a yes/no label that depends on all three. ``planted`` puts a colour
    level on the given rows only."""
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "colour", "size", "age", "label"])
    for i in range(n):
        colour = str(rng.choice(["red", "green", "blue", ""]))
        size = rng.normal()
        age = "" if rng.random() < 0.2 else f"{rng.normal(40, 10):.1f}"
        signal = size + 1.5 * (colour == "red") + (0 if not age else (float(age) - 40) / 10)
        label = "yes" if signal > 0.4 else "no"
        # A planted level replaces the colour after the label is drawn: same labels, same folds.
        writer.writerow(
            [f"user-{i:05d}", (planted or {}).get(i, colour), f"{size:.3f}", age, label]
        )
    return out.getvalue().encode()


def study_spec(data: Dataset, **cv: Any) -> StudySpec:
    return StudySpec(
        dataset=data.name,
        model={"hidden": [16], "batch_norm": True},
        training={"max_epochs": 3},
        cv={"folds": 3} | cv,
    )


def refitted_model(
    data: Dataset, *, epochs: int
) -> tuple[FittedModel, loading.TunedModel, CVProtocol]:
    """The refit of ``BASE`` on ``data`` (a quarter held out), and its model file loaded back."""
    spec = study_spec(data, test_fraction=0.25)
    protocol = CVProtocol.of(spec, data)
    config = TrialConfig.from_values(spec, BASE)
    fitted = refit(data, config, protocol.pool, protocol.test, metric="accuracy", epochs=epochs)
    packed = packing.pack(fitted, data, metric="accuracy", n_train=1, n_test=1)
    return fitted, loading.load_model(packing.to_bytes(packed)), protocol


def test_each_column_gets_a_treatment_and_the_summary_says_which() -> None:
    data = load_csv(mixed_csv(), "label")
    assert data.table is not None
    treatments = {c.name: c.summary() for c in data.table.layout.columns}
    assert treatments["id"]["treatment"] == "dropped"
    assert "identifier or free text" in treatments["id"]["reason"]
    assert treatments["colour"] == {
        "name": "colour",
        "treatment": "categorical",
        "levels": ["", "blue", "green", "red"],
    }
    assert treatments["size"] == {"name": "size", "treatment": "numeric", "imputed": 0}
    age_blanks = sum(1 for row in csv.reader(io.StringIO(mixed_csv().decode())) if row[3] == "")
    assert treatments["age"] == {"name": "age", "treatment": "numeric", "imputed": age_blanks}
    assert data.feature_names == (
        "colour=(blank)",
        "colour=blue",
        "colour=green",
        "colour=red",
        "size",
        "age",
        "age (missing)",
    )
    assert data.n_features == 7 and np.isfinite(data.X).all()
    assert data.classes == ("no", "yes")


def test_a_fold_never_fits_its_encoding_on_its_scored_rows() -> None:
    """A colour level that only some scored rows of fold 0 have is unseen in fold 0's encoder
    (all zeros there), and every fold's medians are its own fit rows' medians: in the
    per-trial engine, in the population engine and in the refit (fitted on the pool only)."""
    probe = load_csv(mixed_csv(), "label")
    spec = study_spec(probe, test_fraction=0.2)
    protocol = CVProtocol.of(spec, probe)
    scored_0 = protocol.splits[0].score[:3]
    test_rows = protocol.test[:3]
    planted = {int(i): "violet" for i in scored_0} | {int(i): "teal" for i in test_rows}
    data = load_csv(mixed_csv(planted=planted), "label")
    protocol = CVProtocol.of(spec, data)  # the same rows: the split depends on labels and seed
    assert (protocol.splits[0].score[:3] == scored_0).all()
    assert data.table is not None
    levels = data.table.layout.kept[0].levels
    config = TrialConfig.from_values(spec, BASE)
    age = data.table.raw[:, 2]

    def check(encoder: Any, fit: np.ndarray, unseen: set[str]) -> None:
        seen = dict(zip(levels, encoder.seen[0].tolist(), strict=True))
        for level in unseen:
            assert not seen[level], f"{level} was fitted on rows the fold scores"
        assert encoder.medians[1] == pytest.approx(np.nanmedian(age[fit]))

    per_trial = cross_validate(data, config, protocol.splits, metric="accuracy", seed=1)
    (stacked,) = train_population(data, [config], protocol.splits, seeds=[1], metric="accuracy")
    assert stacked is not None and not isinstance(stacked, Exception)
    for result in (per_trial, stacked):
        for fold, split in zip(result.folds, protocol.splits, strict=True):
            unseen = {"teal"} | ({"violet"} if fold.index == 0 else set())
            check(fold.encoder, split.fit, unseen)
        # Fold 0's scored rows coloured violet have an all-zero colour: nothing to look up.
        assert result.folds[1].encoder.seen[0][levels.index("violet")]
    fitted = refit(data, config, protocol.pool, protocol.test, metric="accuracy", epochs=2)
    check(fitted.encoder, protocol.pool, {"teal"})
    assert fitted.encoder.seen[0][levels.index("violet")]  # the pool has the violet rows


def test_blank_targets_are_refused_naming_the_lines_or_dropped_as_asked() -> None:
    text = b"x,colour,y\n1,red,a\n2,blue,\n3,red,b\n4,,NA\n5,blue,a\n6,red,b\n"
    with pytest.raises(DatasetError) as refused:
        load_csv(text, "y")
    assert str(refused.value) == (
        "target column 'y' is blank in 2 of 6 rows (CSV lines 3, 5); fill them in, or upload "
        "with missing_target=drop to leave those rows out"
    )
    dropped = load_csv(text, "y", missing_target="drop")
    assert dropped.n_samples == 4 and dropped.dropped_rows == 2
    assert dropped.classes == ("a", "b") and dropped.y.tolist() == [0, 1, 0, 1]
    # A numeric target with a blank is not taken for classes named ''.
    with pytest.raises(DatasetError, match="blank in 1 of 3 rows"):
        load_csv(b"x,y\n1,0.5\n2,\n3,1.5\n", "y", task="regression")


def test_integer_labels_stay_integers_in_the_model_file() -> None:
    digits = load_builtin("builtin:digits")
    assert digits.classes == tuple(range(10)) and all(type(c) is int for c in digits.classes)
    numeric_csv = load_csv(b"x,y\n1,3\n2,5\n3,3\n4,5\n", "y")
    assert numeric_csv.classes == (3, 5)
    wine = load_builtin("builtin:wine")
    fitted, model, protocol = refitted_model(wine, epochs=3)
    labels = model.predict(wine.X[protocol.test])
    assert labels.dtype.kind == "i"
    accuracy = float(np.mean(labels == wine.y[protocol.test]))  # ids are the labels 0, 1, 2
    assert accuracy == pytest.approx(fitted.test_score, abs=1e-6)


def test_a_model_of_a_table_predicts_its_raw_rows() -> None:
    """The file holds the refit's encoding: rows as uploaded (dicts, or lists in column order)
    predict what the training pipeline scored; a missing column is named."""
    data = load_csv(mixed_csv(), "label")
    fitted, model, protocol = refitted_model(data, epochs=5)
    assert model.feature_names == ["colour", "size", "age"]  # the id column was dropped
    rows = list(csv.DictReader(io.StringIO(mixed_csv().decode())))
    test_rows = [rows[i] for i in protocol.test]
    labels = model.predict(test_rows)  # dicts: extra keys (id, label) are ignored
    assert labels.dtype.kind == "U" and set(labels) <= {"no", "yes"}
    truth = np.array([r["label"] for r in test_rows])
    assert float(np.mean(labels == truth)) == pytest.approx(fitted.test_score, abs=1e-6)
    as_lists = model.predict([[r["colour"], r["size"], r["age"]] for r in test_rows])
    assert (as_lists == labels).all()
    # pandas reads blank cells as NaN and numbers as floats: the same rows, the same labels.
    frame = pd.read_csv(io.BytesIO(mixed_csv())).iloc[protocol.test]
    assert (model.predict(frame) == labels).all()
    # A level never seen in training and a blank age are encoded, not refused.
    assert model.predict([{"colour": "mauve", "size": "0.1", "age": ""}]).shape == (1,)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['age'\]"):
        model.predict([{"colour": "red", "size": 1.0}])


def test_a_mixed_table_uploads_tunes_and_predicts_over_http(tmp_path: Path) -> None:
    """Real ``regtune serve`` with its embedded worker: the upload's summary names each
    column's treatment, a blank target is a 422 that stores nothing (or dropped as asked), and
    the study's model file predicts raw rows with the test score the study reports."""
    text = mixed_csv()
    url = f"sqlite:///{tmp_path / 'tables.db'}"
    with (
        serving(url, tmp_path / "serve.log") as server,
        server.client() as http,
    ):
        created = http.post(
            "/v1/datasets",
            files={"file": ("people.csv", text)},
            data={"target": "label"},
        )
        assert created.status_code == 201, created.text
        record = created.json()
        assert record["n_features"] == 7 and record["classes"] == ["no", "yes"]
        assert record["dropped_rows"] == 0
        treatments = {c["name"]: c["treatment"] for c in record["columns"]}
        assert treatments == {
            "id": "dropped",
            "colour": "categorical",
            "size": "numeric",
            "age": "numeric",
        }
        assert http.get(f"/v1/datasets/{record['id']}").json()["columns"] == record["columns"]

        blank = text.replace(b",yes\r\n", b",\r\n", 3)  # csv.writer ends lines with CRLF
        before = len(http.get("/v1/datasets").json())
        refused = http.post(
            "/v1/datasets", files={"file": ("blank.csv", blank)}, data={"target": "label"}
        )
        assert refused.status_code == 422, refused.text
        assert "target column 'label' is blank in 3 of 240 rows" in refused.text
        assert len(http.get("/v1/datasets").json()) == before
        dropped = http.post(
            "/v1/datasets",
            files={"file": ("blank.csv", blank)},
            data={"target": "label", "missing_target": "drop"},
        )
        assert dropped.status_code == 201, dropped.text
        assert (dropped.json()["n_samples"], dropped.json()["dropped_rows"]) == (237, 3)

        spec = tiny_study(dataset=record["id"], cv={"folds": 3, "test_fraction": 0.25})
        study = http.post("/v1/studies", json=spec).json()
        in_use = http.delete(f"/v1/datasets/{record['id']}")
        assert in_use.status_code == 409, in_use.text
        assert in_use.json()["detail"].startswith(
            f"dataset {record['id']!r} is used by 1 queued or running study ({study['id']})"
        )
        study = wait_status(http, study["id"], ("completed", "failed"))
        assert study["status"] == "completed" and study["error"] is None, study
        model = loading.load_model(http.get(f"/v1/studies/{study['id']}/model").content)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return regtune(*args, database_url=url, REGTUNE_URL=server.url)

        listed = cli("datasets", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert record["id"] in [d["id"] for d in json.loads(listed.stdout)]
        shown = cli("datasets", "show", record["id"])
        assert shown.returncode == 0, shown.stderr
        assert "categorical: (blank), blue, green, red" in shown.stdout
        assert "dropped: more than 50 distinct values" in " ".join(shown.stdout.split())
        deleted = cli("datasets", "delete", record["id"])  # its study has ended
        assert deleted.returncode == 0, deleted.stderr
        assert http.get(f"/v1/datasets/{record['id']}").status_code == 404
        again = cli("datasets", "delete", record["id"])
        assert again.returncode == 2 and "404" in again.stderr

    data = load_csv(text, "label")
    protocol = CVProtocol.of(StudySpec.model_validate(spec), data)
    rows = list(csv.DictReader(io.StringIO(text.decode())))
    test_rows = [rows[i] for i in protocol.test]
    labels = model.predict(test_rows)
    truth = np.array([r["label"] for r in test_rows])
    assert float(np.mean(labels == truth)) == pytest.approx(study["test_score"], abs=1e-6)
