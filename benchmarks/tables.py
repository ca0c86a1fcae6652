"""A real mixed-type table: regtune's CV and test scores next to a scikit-learn baseline.

The table is the Titanic passenger list as seaborn's example data ships it
(``benchmarks/data/titanic.csv``: github.com/mwaskom/seaborn-data, ``titanic.csv``, with its
``alive`` column removed because it is the label again as yes/no): 891 rows, numeric columns
with blank cells (``age``: 177), string columns with blanks (``deck``: 688, ``embarked``).
It goes in as a user's upload would, through ``load_csv`` (strings one-hot, blanks imputed
with an indicator, each fitted per fold).

The baseline is logistic regression (``C`` = 1) in a scikit-learn pipeline doing the same
preprocessing (``SimpleImputer(median, add_indicator)``, ``OneHotEncoder(handle_unknown=
"ignore")``, ``StandardScaler``), fitted in the very same folds, read from the study's splits
record as a user reads it (``regtune tune --splits``, ``GET /v1/studies/{id}/splits``): on each
fold's training part (every non-test row the fold does not score: regtune's fit and
inner-validation rows, which a model without early stopping would train on), scored on the
fold's rows; its test score after a fit on all non-test rows.

    .venv/bin/python benchmarks/tables.py --append BENCHMARKS.md
"""

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import torch
from provenance import benchmark_parser, command_line, git_commit, machine, markdown_table, publish
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from trainer import SplitRows, StudySpec, load_csv, run_study

TABLE = Path(__file__).parent / "data" / "titanic.csv"
TARGET = "survived"


def raw_columns() -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """The table as scikit-learn reads it: an object array, numeric and text column names."""
    with TABLE.open() as handle:
        rows = list(csv.DictReader(handle))
    names = [n for n in rows[0] if n != TARGET]

    def number(cell: str) -> float:
        return float(cell) if cell.strip() else np.nan

    numeric = [n for n in names if all(_is_number(r[n]) for r in rows)]
    text = [n for n in names if n not in numeric]
    X = np.array(
        [[number(r[n]) for n in numeric] + [r[n] or "(blank)" for n in text] for r in rows],
        dtype=object,
    )
    return X, numeric, text, np.array([int(r[TARGET]) for r in rows])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return not cell.strip()  # a blank cell does not make a column text
    return True


def baseline(rows: SplitRows) -> tuple[list[float], float]:
    """Logistic regression's accuracy per fold and on the test rows of ``rows``."""
    X, numeric, _, y = raw_columns()
    n_num = len(numeric)

    def model() -> object:
        encode = ColumnTransformer(
            [
                (
                    "numeric",
                    SimpleImputer(strategy="median", add_indicator=True),
                    list(range(n_num)),
                ),
                ("text", OneHotEncoder(handle_unknown="ignore"), list(range(n_num, X.shape[1]))),
            ]
        )
        return make_pipeline(
            encode, StandardScaler(with_mean=False), LogisticRegression(max_iter=2000)
        )

    pool = np.setdiff1d(np.arange(len(y)), rows.test)
    scores = []
    for fold in rows.folds:
        train = np.setdiff1d(pool, fold)
        fitted = model().fit(X[train], y[train])
        scores.append(float(fitted.score(X[fold], y[fold])))
    test = model().fit(X[pool], y[pool]).score(X[rows.test], y[rows.test])
    return scores, float(test)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one process per core searches: see trainer.tuning.parallel
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = datetime.now(UTC)
    data = load_csv(TABLE, TARGET, name="titanic.csv")
    spec = StudySpec.model_validate(
        {
            "name": "titanic",
            "dataset": "titanic.csv",
            "n_trials": args.trials,
            "seed": 0,
            "model": {"kind": "mlp", "hidden": [64, 64], "batch_norm": True},
            "training": {"max_epochs": 60},
            "cv": {"folds": 5, "test_fraction": 0.2},
        }
    )
    start = time.perf_counter()
    outcome = run_study(spec, data)
    wall = time.perf_counter() - start
    best = outcome.best
    assert best is not None and outcome.fitted is not None
    folds = [float(v) for v in best.user_attrs["fold_scores"]]
    rows = outcome.splits
    base_folds, base_test = baseline(rows)
    columns = ", ".join(
        f"{c.name} ({c.kind}{f', {c.blanks} blank' if c.blanks else ''})"
        for c in data.table.layout.columns  # type: ignore[union-attr]
    )
    lines = [
        "\n## A mixed-type table: regtune vs a scikit-learn baseline "
        f"({started:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command_line()}`",
        f"- device: {machine()}; commit `{git_commit()}`",
        f"- data: Titanic passengers (`benchmarks/data/titanic.csv`), {data.n_samples} rows, "
        f"target `{TARGET}`; columns: {columns}; {data.n_features} network inputs after encoding",
        f"- protocol: 5 stratified folds of the {data.n_samples - len(rows.test)} non-test "
        f"rows, {len(rows.test)} held-out test rows (seed 0); regtune: MLP 64-64 (BN), "
        f"{args.trials} trials (TPE, median pruner), ≤ 60 epochs, the five regularization "
        f"hyperparameters searched, best trial refitted on all non-test rows ({wall:.0f} s); "
        "baseline: logistic regression (C = 1), same preprocessing, fitted per fold",
        "",
    ]

    def scores(name: str, values: list[float], test: float) -> list[str]:
        per_fold = ", ".join(f"{v:.3f}" for v in values)
        return [name, f"{np.mean(values):.4f} ± {np.std(values):.4f}", per_fold, f"{test:.4f}"]

    lines += markdown_table(
        ["model", "CV accuracy (mean ± std over 5 folds)", "per fold", "test accuracy"],
        "lrlr",
        [
            scores(f"regtune, best of {args.trials} trials", folds, outcome.fitted.test_score),
            scores("logistic regression", base_folds, base_test),
        ],
    )
    publish(lines, args.append)


if __name__ == "__main__":
    main()
