"""What a pruned trial costs: its seconds per reported epoch against a completed trial's.

With slots refilled as trials end, a pruned trial is told to Optuna at the epoch it is pruned
and its slot trains the next trial, so it pays for its own epochs only. (Before, a pruned
trial was told when its whole population ended: it paid for the slowest member's epochs.)
The figures come from the storage's own timestamps: (datetime_complete − datetime_start) /
(number of reported epochs), per trial, over one study in one process.

    .venv/bin/python benchmarks/pruning.py --population 8 --append BENCHMARKS.md
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import optuna
import torch
from provenance import benchmark_parser, command_line, git_commit, machine, markdown_table, publish

from trainer import StudySpec, load_builtin, run_study

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def per_epoch(trial: optuna.trial.FrozenTrial) -> float:
    assert trial.datetime_start is not None and trial.datetime_complete is not None
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return seconds / max(1, len(trial.intermediate_values))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started, commit = datetime.now(UTC), git_commit()
    spec = StudySpec.model_validate(
        {
            "name": "pruning",
            "dataset": "builtin:digits",
            "n_trials": args.trials,
            "seed": 0,
            "model": {"hidden": [256, 256]},
            "training": {"max_epochs": args.epochs},
            "search_space": {"patience": args.epochs + 1},  # epochs end by pruning only
            "cv": {"folds": 5},
            "pruner": {"kind": "median", "n_startup_trials": 5, "n_warmup_steps": 3},
        }
    )
    data = load_builtin(spec.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'pruning.db'}"
        start = time.perf_counter()
        outcome = run_study(
            spec, data, storage=storage, population=args.population, refit_best=False
        )
        wall = time.perf_counter() - start
        trials = outcome.study.get_trials(deepcopy=False)
    completed = [per_epoch(t) for t in trials if t.state == COMPLETE]
    pruned = [per_epoch(t) for t in trials if t.state == PRUNED]
    # The first trials train while fewer run at once (the pruner's warm-up): shown apart.
    steady = [per_epoch(t) for t in trials[args.population :] if t.state == COMPLETE]
    lines = [
        f"\n## Pruned vs completed trials' epoch cost, P = {args.population} "
        f"({started:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command_line()}`",
        f"- device: CPU: {machine()}; commit `{commit}`",
        f"- workload: digits, MLP 64-256-256-10 (BN, dropout), Adam, batch 64, 5 folds, up to "
        f"{args.epochs} epochs (no early stopping), median pruner (5 startup trials, 3 warm-up "
        f"epochs), {args.trials} trials in one process; wall {wall:.0f} s; seconds per reported "
        "epoch from the storage's timestamps",
        "",
    ]
    groups = (
        ("completed", completed),
        (f"completed, after the first {args.population}", steady),
        ("pruned", pruned),
    )
    lines += markdown_table(
        ["trials", "n", "median s/epoch", "mean s/epoch"],
        "lrrr",
        (
            [name, len(v), f"{statistics.median(v):.3f}", f"{statistics.fmean(v):.3f}"]
            for name, v in groups
            if v
        ),
    )
    if completed and pruned:
        ratio = statistics.median(pruned) / statistics.median(completed)
        lines += ["", f"Pruned / completed, medians: **{ratio:.2f}×** (target ≤ 1.5×)."]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
