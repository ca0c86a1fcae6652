"""Writes model_v1.pt and model_v1.json beside this script: a model file of format version 1,
as regtune wrote it before ``format_version`` (commit 4cb3553, ``trainer/artifact.py``), and
what that regtune predicted from it, for tests/test_artifact.py to check that today's reader
still loads it and predicts the same.

The file is a table model (an encoder with a string column, blanks and a level never seen)
with a fold ensemble, so that every part of the format is in it. This script imports that
commit's modules, so it runs in a copy of that tree::

    git archive 4cb3553 | tar -x -C /tmp/regtune-v1
    PYTHONPATH=/tmp/regtune-v1 .venv/bin/python tests/data/write_model_v1.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from trainer.config import TrialConfig
from trainer.datasets import load_csv
from trainer.engine import fold_ensemble, predict
from trainer.refit import refit
from trainer.spec import StudySpec
from trainer.study import Protocol

from trainer import artifact

HERE = Path(__file__).parent
ROWS = [
    {"colour": "red", "size": 0.5},
    {"colour": "blue", "size": -0.2},
    {"colour": "", "size": ""},  # blanks, imputed as in training
    {"colour": "mauve", "size": -1.0},  # a level never seen
    {"colour": "green", "size": 2.0},
]


def main() -> None:
    rng = np.random.default_rng(0)
    lines = ["colour,size,label"] + [
        f"{rng.choice(['red', 'blue', 'green', ''])},{rng.normal():.3f},{'yes' if i % 3 else 'no'}"
        for i in range(60)
    ]
    data = load_csv("\n".join(lines).encode(), "label")
    spec = StudySpec(
        dataset="t.csv",
        model={"hidden": [4]},
        cv={"folds": 2, "test_fraction": 0.2},
        final_model={"ensemble": True},
    )
    protocol = Protocol.of(spec, data)
    config = TrialConfig.from_values(
        spec, {"weight_decay": 1e-4, "l1": 1e-6, "dropout": 0.1, "bn_momentum": 0.2, "patience": 3}
    )
    fitted = refit(data, config, protocol.pool, protocol.test, metric=protocol.metric, epochs=3)
    ensemble = fold_ensemble(data, config, protocol.splits, protocol.test, metric=protocol.metric)
    about = {  # what a worker writes beside the weights, made up but of the right types
        "metric": protocol.metric,
        "n_train": len(protocol.pool),
        "n_test": len(protocol.test),
        "cv": {"cv_mean": 0.7, "cv_std": 0.05, "fold_scores": [0.65, 0.75]},
        "trial": {"number": 0, "params": {}},
        "study": {"id": "v1"},
    }
    packed = artifact.pack(fitted, data, ensemble=ensemble, **about)
    (HERE / "model_v1.pt").write_bytes(artifact.to_bytes(packed))

    # What the model in memory predicts, and that the reader of its day agreed.
    features = fitted.encoder.transform(fitted.encoder.layout.read(ROWS)).astype(np.float32)
    outputs = predict(fitted.model, torch.as_tensor(fitted.x_scaler.transform(features)))
    model = artifact.load_model(HERE / "model_v1.pt")
    assert torch.equal(model.outputs(ROWS), outputs)
    folds = artifact.load_model(HERE / "model_v1.pt", ensemble=True)
    expected = {
        "rows": ROWS,
        "outputs": outputs.tolist(),
        "labels": model.predict(ROWS).tolist(),
        "ensemble_probabilities": folds.predict_proba(ROWS).tolist(),
        "ensemble_labels": folds.predict(ROWS).tolist(),
    }
    (HERE / "model_v1.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
