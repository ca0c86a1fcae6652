"""Trade-offs on real data: the accuracy-size front that ``width`` and ``l1`` reach, and what
training trials of different widths in one stack costs.

Fronts: each case runs one study through :func:`trainer.run_study` (the code path of
``regtune tune``) with ``search_space.width`` and ``search_space.l1`` searched among the core
regularizers and ``objective.trade_off: "nonzero_parameters"``, and ``final_model.pick``
``{"within": 0.005}``: the smallest trial of the Pareto front whose CV accuracy is within
0.005 (absolute) of the best trial's. Reported: the front's size, the best trial's accuracy
and nonzero count, the picked trial's, and how many times fewer nonzero weights it needs.

Stacking: one population of P trials of widths 1, 0.75, 0.5, 0.25 (``--widths``; narrow
trials masked inside the full-width stack) against each width's narrow network alone in a
population of one, the P of them one after another, and a stack of P full-width trials, with
dropout p 0.2 and 0 (``--dropouts``: a narrow trial's dropout masks are strided, its own);
seconds per epoch (``train_epoch`` + ``end_epoch``) over ``--epochs`` epochs after one warm-up,
all interleaved in each of ``--rounds`` rounds (the median is reported).

    .venv/bin/python benchmarks/trade_offs.py --threads 1 --append BENCHMARKS.md
    .venv/bin/python benchmarks/trade_offs.py --cases digits --trials 8 --max-epochs 5
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import optuna
import provenance
import torch

from trainer import (
    CVProtocol,
    Dataset,
    Population,
    StudySpec,
    TrialConfig,
    TrialRecord,
    load_builtin,
    run_study,
)

MLP = {"kind": "mlp", "hidden": [256, 256]}
CNN = {"kind": "cnn", "channels": [16, 32], "kernel_size": 5, "hidden": [64]}
WITHIN = 0.005  # the accuracy the picked trial may give up, absolute


class Case(NamedTuple):
    key: str
    dataset: str
    model: dict[str, Any]
    what: str


CASES = {
    case.key: case
    for case in (
        Case("digits", "builtin:digits", MLP, "digits, MLP 256-256"),
        Case("mnist1d-mlp", "builtin:mnist1d:2000", MLP, "MNIST-1D (2,000), MLP 256-256"),
        Case("mnist1d-cnn", "builtin:mnist1d:2000", CNN, "MNIST-1D (2,000), CNN 16-32 + 64"),
    )
}


def front_spec(case: Case, *, trials: int, epochs: int, folds: int, seed: int) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": f"trade-off-{case.key}",
            "dataset": case.dataset,
            "n_trials": trials,
            "seed": seed,
            "model": case.model,
            "training": {"max_epochs": epochs},
            "cv": {"folds": folds},
            "search_space": {
                "width": {"low": 0.1, "high": 1.0},
                "l1": {"low": 1e-7, "high": 1e-2, "log": True},
            },
            "objective": {"trade_off": "nonzero_parameters"},
            "final_model": {"pick": {"within": WITHIN}},
        }
    )


def described(trial: optuna.trial.FrozenTrial) -> str:
    """A trial's accuracy, nonzero and total parameters, width and L1."""
    record = TrialRecord.of(trial)
    accuracy, nonzero = trial.values
    return (
        f"#{trial.number}: {accuracy:.4f}, {nonzero:,.0f} nonzero of {record.n_params:,} "
        f"(width {trial.params['width']:.2f}, L1 {trial.params['l1']:.1e})"
    )


def front_row(case: Case, args: Any) -> tuple[list[str], str]:
    """The case's row of the table, and its front as a line of its own."""
    spec = front_spec(
        case, trials=args.trials, epochs=args.max_epochs, folds=args.folds, seed=args.seed
    )
    start = time.perf_counter()
    outcome = run_study(spec, load_builtin(case.dataset), refit_best=False)
    wall = time.perf_counter() - start
    best, small, front = outcome.best, outcome.chosen, outcome.pareto
    if best is None or small is None or front is None:
        raise RuntimeError(f"{spec.name}: no completed trial")
    listed = f"- {case.what}: " + "; ".join(described(t) for t in front)
    print(listed, file=sys.stderr)
    row = [
        case.what,
        str(len(front)),
        described(best),
        described(small),
        f"**{best.values[1] / small.values[1]:.1f}×**",
        f"{best.values[0] - small.values[0]:.4f}",
        f"{wall / 60:.1f} min",
    ]
    return row, listed


# --- the cost of width stacking ----------------------------------------------------------------

FIXED = {"weight_decay": 1e-4, "l1": 1e-5, "dropout": 0.2, "bn_momentum": 0.1, "patience": 1000}


def alone(trial: TrialConfig, data: Dataset) -> TrialConfig:
    """The trial's narrow network as a configuration of its own, without a width."""
    model, hidden = trial.architecture(data.input_shape, data.n_outputs)
    return replace(trial, model=model, hidden=hidden, width=None)


def epoch_seconds(
    data: Dataset, protocol: CVProtocol, configs: list[TrialConfig], epochs: int
) -> float:
    """Seconds per epoch of one stack of ``configs`` (the first is the template), after a
    warm-up epoch."""
    population = Population(
        data, protocol.splits, configs[0], slots=len(configs), metric="accuracy", device="cpu"
    )
    for slot, config in enumerate(configs):
        population.assign(slot, config, slot + 1)
    population.train_epoch()
    population.end_epoch()
    start = time.perf_counter()
    for _ in range(epochs):
        population.train_epoch()
        population.end_epoch()
    return (time.perf_counter() - start) / epochs


def stacking_arms(
    spec: StudySpec, data: Dataset, widths: list[float], dropout: float, epochs: int
) -> dict[str, Callable[[], float]]:
    """The three ways to train trials of ``widths`` (dropout p ``dropout``), each timed."""
    protocol = CVProtocol.of(spec, data)
    fixed = FIXED | {"dropout": dropout}
    full = TrialConfig.from_values(spec, fixed)
    mixed = [TrialConfig.from_values(spec, fixed | {"width": w}) for w in widths]
    n = len(widths)
    return {
        f"p = {dropout:g}: one stack of {n}, mixed widths": lambda: epoch_seconds(
            data, protocol, mixed, epochs
        ),
        f"p = {dropout:g}: {n} stacks of one, each narrow network alone, in turn": lambda: sum(
            epoch_seconds(data, protocol, [alone(t, data)], epochs) for t in mixed
        ),
        f"p = {dropout:g}: one stack of {n}, all full width": lambda: epoch_seconds(
            data, protocol, [full] * n, epochs
        ),
    }


def stacking_lines(args: Any) -> list[str]:
    widths = [float(w) for w in args.widths.split(",")]
    dropouts = [float(p) for p in args.dropouts.split(",")]
    spec = StudySpec.model_validate({"dataset": "builtin:digits", "model": MLP, "cv": {"folds": 5}})
    data = load_builtin(spec.dataset)
    arms = {p: stacking_arms(spec, data, widths, p, args.epochs) for p in dropouts}
    seconds: dict[str, list[float]] = {name: [] for by_p in arms.values() for name in by_p}
    for _ in range(args.rounds):
        for by_p in arms.values():
            for name, arm in by_p.items():
                seconds[name].append(arm())
    median = {name: statistics.median(v) for name, v in seconds.items()}
    rows, ratios = [], []
    for p, by_p in arms.items():
        mixed, separate, _ = (median[name] for name in by_p)
        ratios.append(f"**{mixed / separate:.2f}×** with dropout p = {p:g}")
        rows += [
            [
                name,
                f"{median[name]:.3f}",
                ", ".join(f"{s:.3f}" for s in seconds[name]),
                f"{median[name] / mixed:.2f}×",
            ]
            for name in by_p
        ]
    return [
        "",
        f"Width stacking: digits, MLP 256-256, {len(widths)} trials of widths "
        f"{', '.join(f'{w:g}' for w in widths)} × 5 folds, batch 64, dropout p as shown; "
        f"seconds per epoch (train + end) over {args.epochs} epochs after a warm-up, median of "
        f"{args.rounds} interleaved rounds.",
        "",
        *provenance.markdown_table(
            ["how the trials train", "s/epoch (median)", "rounds", "vs the mixed stack"],
            "lrlr",
            rows,
        ),
        "",
        "One mixed-width stack against the narrow networks' stacks in turn, time per epoch: "
        + "; ".join(ratios)
        + ".",
    ]


def main() -> None:
    parser = provenance.benchmark_parser(__doc__)
    parser.add_argument("--cases", default="digits,mnist1d-cnn", help=f"of {', '.join(CASES)}")
    parser.add_argument("--trials", type=int, default=32, help="trials per study")
    parser.add_argument("--max-epochs", type=int, default=20, help="max epochs per fold")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--widths", default="1,0.75,0.5,0.25", help="the stacked trials' widths")
    parser.add_argument("--dropouts", default="0.2,0", help="the stacked trials' dropout p")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per stack")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    cases = [CASES[key.strip()] for key in args.cases.split(",") if key.strip()]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    rows, fronts = zip(*(front_row(case, args) for case in cases), strict=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## Trade-offs: accuracy against nonzero parameters, and width stacking ({when})",
        "",
        f"`{provenance.command_line()}` on {provenance.machine()}, "
        f"commit {provenance.git_commit()}.",
        "",
        f"Fronts: one study per case, {args.trials} trials × {args.folds} folds × "
        f"≤ {args.max_epochs} epochs, `width` in [0.1, 1] and `l1` in [1e-7, 1e-2] (log) "
        'searched with the core regularizers, `objective.trade_off: "nonzero_parameters"`; '
        "accuracy is the CV mean; the picked trial is `final_model.pick: "
        f'{{"within": {WITHIN}}}`\'s, the smallest front trial within {WITHIN} of the best; '
        "the ratio is the best trial's nonzero parameters over the picked trial's.",
        "",
        *provenance.markdown_table(
            ["case", "front", "best", "picked", "fewer nonzero", "accuracy given up", "wall"],
            "lrllrrr",
            rows,
        ),
        "",
        "The fronts, best accuracy first:",
        "",
        *fronts,
        *stacking_lines(args),
    ]
    provenance.publish(lines, args.append)


if __name__ == "__main__":
    main()
