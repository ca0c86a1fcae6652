"""Do the rest of the regularization toolbox help? Augmentation and max-norm against the same
budget without them.

Each case runs two studies per seed on the same protocol (same folds, same held-out test
rows, same trial budget, same sampler seed): ``without`` searches the five core
regularizers only, ``with`` searches them plus the case's new regularizer(s). Each study goes
through :func:`trainer.run_study` (the code path of ``regtune tune``): the best trial's CV
mean and the test score of its refit on all non-test rows are reported per arm as the mean ±
std over the seeds, next to the difference (with − without) and how many seeds it won.

Cases (``--cases``, default all):

* ``shift-cnn``: a CNN on MNIST-1D, whose signals are templates shifted in time:
  ``augment.shift`` in [0, 12] positions.
* ``digits-few``: a CNN on ``builtin:digits`` with few training rows (half of the rows held out
  as test): ``augment.shift`` in [0, 2], ``augment.rotate`` in [0, 20] degrees and
  ``augment.scale`` in [0, 0.2].
* ``maxnorm-mlp``: an MLP on MNIST-1D with high dropout (p in [0.4, 0.7]): ``max_norm``
  c in [0.5, 10] (log).

    .venv/bin/python benchmarks/toolbox.py --append BENCHMARKS.md
    .venv/bin/python benchmarks/toolbox.py --cases shift-cnn --seeds 1 --trials 4 --max-epochs 5
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import provenance
import torch

from trainer import StudySpec, load_builtin, run_study

CNN = {"kind": "cnn", "channels": [16, 32], "kernel_size": 5, "hidden": [64]}
CNN_SMALL = {"kind": "cnn", "channels": [16, 32], "kernel_size": 3, "hidden": [64]}
MLP = {"kind": "mlp", "hidden": [256, 256]}


@dataclass(frozen=True)
class Case:
    """One comparison: a dataset, a study spec, and what the ``with`` arm adds to its space."""

    key: str
    dataset: str
    spec: dict[str, Any]
    added: dict[str, Any]  # search_space entries of the ``with`` arm
    what: str


CASES = {
    case.key: case
    for case in (
        Case(
            "shift-cnn",
            "builtin:mnist1d:2000",
            {"model": CNN, "cv": {"folds": 3, "test_fraction": 0.25}},
            {"augment.shift": {"low": 0, "high": 12}},
            "CNN on MNIST-1D (2,000 signals, 25 % test), augment.shift",
        ),
        Case(
            "digits-few",
            "builtin:digits",
            {"model": CNN_SMALL, "cv": {"folds": 3, "test_fraction": 0.5}},
            {
                "augment.shift": {"low": 0, "high": 2},
                "augment.rotate": {"low": 0, "high": 20},
                "augment.scale": {"low": 0.0, "high": 0.2},
            },
            "CNN on digits with half the rows held out, shift + rotate + scale",
        ),
        Case(
            "maxnorm-mlp",
            "builtin:mnist1d:2000",
            {
                "model": MLP,
                "cv": {"folds": 3, "test_fraction": 0.25},
                "search_space": {"dropout": {"low": 0.4, "high": 0.7}},
            },
            {"max_norm": {"low": 0.5, "high": 10.0, "log": True}},
            "MLP 256-256 on MNIST-1D with dropout in [0.4, 0.7], max_norm",
        ),
    )
}


@dataclass(frozen=True)
class Arm:
    """One study's outcome: the best trial's CV mean and its refit's test score."""

    cv: float
    test: float
    seconds: float


def study_spec(case: Case, *, added: bool, seed: int, trials: int, epochs: int) -> StudySpec:
    raw = copy.deepcopy(case.spec)
    raw |= {"name": f"{case.key}-{'with' if added else 'without'}-{seed}", "dataset": case.dataset}
    raw |= {"n_trials": trials, "seed": seed, "training": {"max_epochs": epochs}}
    raw["search_space"] = raw.get("search_space", {}) | (case.added if added else {})
    return StudySpec.model_validate(raw)


def run_arm(case: Case, *, added: bool, seed: int, trials: int, epochs: int) -> Arm:
    spec = study_spec(case, added=added, seed=seed, trials=trials, epochs=epochs)
    dataset = load_builtin(case.dataset)
    start = time.perf_counter()
    outcome = run_study(spec, dataset)
    if outcome.best is None or outcome.test_score is None:
        raise RuntimeError(f"{spec.name}: no completed trial or no test score")
    return Arm(float(outcome.best.value or 0.0), outcome.test_score, time.perf_counter() - start)


def spread(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = provenance.benchmark_parser(__doc__)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case keys")
    parser.add_argument("--seeds", type=int, default=3, help="study seeds per arm")
    parser.add_argument("--trials", type=int, default=16, help="trials per study")
    parser.add_argument("--max-epochs", type=int, default=50, help="max epochs per fold")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    rows = []
    for key in keys:
        case = CASES[key]
        arms: dict[bool, list[Arm]] = {False: [], True: []}
        for seed in range(args.seeds):
            for added in (False, True):
                arm = run_arm(
                    case, added=added, seed=seed, trials=args.trials, epochs=args.max_epochs
                )
                arms[added].append(arm)
                print(f"{key} seed {seed} {'with' if added else 'without'}: {arm}", file=sys.stderr)
        won = sum(w.test > wo.test for w, wo in zip(arms[True], arms[False], strict=True))
        diff = [w.test - wo.test for w, wo in zip(arms[True], arms[False], strict=True)]
        rows.append(
            [
                case.what,
                spread([a.cv for a in arms[False]]),
                spread([a.cv for a in arms[True]]),
                spread([a.test for a in arms[False]]),
                spread([a.test for a in arms[True]]),
                f"{statistics.mean(diff):+.4f} ({won}/{len(diff)} seeds)",
                f"{sum(a.seconds for a in arms[False] + arms[True]) / 60:.1f} min",
            ]
        )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## Does the rest of the toolbox help? ({when})",
        "",
        f"`{provenance.command_line()}` on {provenance.machine()}, "
        f"commit {provenance.git_commit()}: {args.seeds} seeds × {args.trials} trials × "
        f"≤ {args.max_epochs} epochs per arm; accuracy, best trial's CV mean and its refit's "
        "held-out test score, mean ± std over seeds.",
        "",
        *provenance.markdown_table(
            [
                "case",
                "CV without",
                "CV with",
                "test without",
                "test with",
                "test Δ (won)",
                "wall",
            ],
            "lrrrrrr",
            rows,
        ),
    ]
    provenance.publish(lines, args.append)


if __name__ == "__main__":
    main()
