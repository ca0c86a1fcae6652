"""Search quality on the built-in datasets: does tuning the regularization find good models?

Each case runs a whole study through :func:`trainer.tuning.study.run_study` (the same code path as
``regtune tune``) and reports the trial counts, the best trial's CV mean ± std and per-fold
scores, its diagnosis, the held-out test score where the case has a test split, and the wall
time, next to a target or a published figure. The results are printed as markdown and, with
``--append FILE``, appended to that file as one section.

    .venv/bin/python benchmarks/quality.py --append BENCHMARKS.md
    .venv/bin/python benchmarks/quality.py --cases digits,poly --trials 3 --max-epochs 5

Cases (``--cases``, default all):

* ``digits``: 5-fold stratified CV accuracy, 30 TPE trials; target best CV mean ≥ 0.98.
* ``breast_cancer``: the same protocol; target ≥ 0.975.
* ``mnist1d-mlp``, ``mnist1d-cnn`` (``mnist1d`` selects both): ``builtin:mnist1d:5000`` with
  ``test_fraction`` 0.2, i.e. the paper's 4,000 training and 1,000 test samples; 5-fold CV on
  the 4,000, the best configuration retrained on all 4,000 and scored once on the 1,000. The
  test accuracy is printed next to the published MNIST-1D figures (MLP 68 %, CNN 94 %).
* ``poly``: the D2L polynomial (20 features, 100 training and 100 held-out samples) with a
  linear model; the held-out MSE of the tuned configuration against a second study on the
  same protocol with weight decay, L1 and dropout fixed at 0 (only early stopping's patience
  searched). Target: tuned regularization has the lower held-out MSE.

Only ``benchmarks/`` imports this; it is a script, not part of the package.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: make `trainer` importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from provenance import append_section, command_line, git_commit, machine  # noqa: E402

from trainer import (  # noqa: E402
    CVProtocol,
    Dataset,
    StudyOutcome,
    StudySpec,
    load_builtin,
    refit_trial,
    run_study,
)

DEFAULT_TRIALS = 30
DEFAULT_MAX_EPOCHS = 100
DEFAULT_REFITS = 5
# The five regularization hyperparameters at "off": the unregularized baseline of `poly`.
NO_REGULARIZATION = {"weight_decay": 0.0, "l1": 0.0, "dropout": 0.0}


@dataclass(frozen=True)
class Target:
    """What a case should reach: a bound on the best CV mean, or a reference test score."""

    text: str
    check: Callable[[CaseResult], bool] | None = None


@dataclass(frozen=True)
class Case:
    """One benchmark: a study spec (and for `poly` a baseline spec) plus what it should reach."""

    key: str
    model_label: str
    spec: dict[str, Any]
    target: Target
    note: str
    baseline: dict[str, Any] | None = None


@dataclass
class StudyRun:
    """The measured outcome of one study."""

    label: str
    spec: StudySpec
    outcome: StudyOutcome
    wall_s: float
    # Test scores of the best configuration retrained with further seeds (init, batch order,
    # inner validation rows): one refit is one draw, these show its spread.
    refit_scores: list[float] = field(default_factory=list)

    @property
    def states(self) -> Counter[str]:
        trials = self.outcome.study.get_trials(deepcopy=False)
        return Counter(t.state.name.lower() for t in trials)

    @property
    def attrs(self) -> dict[str, Any]:
        best = self.outcome.best
        return dict(best.user_attrs) if best is not None else {}

    @property
    def cv_mean(self) -> float | None:
        value = self.attrs.get("cv_mean")
        return float(value) if value is not None else None

    @property
    def test_score(self) -> float | None:
        return self.outcome.test_score

    @property
    def refit_mean(self) -> float | None:
        return float(np.mean(self.refit_scores)) if self.refit_scores else None


@dataclass
class CaseResult:
    case: Case
    runs: list[StudyRun] = field(default_factory=list)

    @property
    def main(self) -> StudyRun:
        return self.runs[0]

    @property
    def baseline(self) -> StudyRun | None:
        return self.runs[1] if len(self.runs) > 1 else None

    def met(self) -> bool | None:
        check = self.case.target.check
        return check(self) if check is not None else None


def _cv_at_least(bound: float) -> Callable[[CaseResult], bool]:
    def check(result: CaseResult) -> bool:
        mean = result.main.cv_mean
        return mean is not None and mean >= bound

    return check


def _beats_baseline(result: CaseResult) -> bool:
    """Lower held-out MSE, judged on the mean over refit seeds (else the study's one refit)."""
    base = result.baseline
    if base is None:
        return False
    tuned, untuned = result.main.refit_mean, base.refit_mean
    if tuned is None or untuned is None:
        tuned, untuned = result.main.test_score, base.test_score
    return tuned is not None and untuned is not None and tuned < untuned


def make_cases(trials: int, max_epochs: int, seed: int) -> dict[str, Case]:
    """The benchmark cases; ``trials``/``max_epochs`` scale the budgets (poly: see below)."""
    classification_cv = {"folds": 5, "shuffle": True}
    mnist1d_cv = {"folds": 5, "shuffle": True, "test_fraction": 0.2}
    # MNIST-1D trains faster with the paper's larger batches; the learning rate is searched
    # with the regularization because the MLP and the CNN want different ones.
    mnist1d_training = {"batch_size": 128, "max_epochs": max_epochs}
    mnist1d_lr = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}}
    # The linear model on `poly` is fitted full-batch and needs ~2,000 Adam steps to fit the
    # high-order terms; the inner validation split holds ~8 rows, so early stopping on it is
    # noisy and patience gets a wide (log) range. Dropout and BN momentum do nothing in a
    # linear model without BatchNorm, so they are fixed to keep the search 3-dimensional.
    # No pruner: the loss of a slow, full-batch fit says little about it after a few epochs.
    poly_epochs = 20 * max_epochs
    poly_spec: dict[str, Any] = {
        "dataset": "builtin:poly",
        "seed": seed,
        "n_trials": trials,
        "model": {"kind": "mlp", "hidden": [], "batch_norm": False},
        "training": {
            "optimizer": "adam",
            "lr": 0.03,
            "batch_size": 128,
            "max_epochs": poly_epochs,
        },
        "search_space": {
            "weight_decay": {"low": 1e-6, "high": 1.0, "log": True},
            "l1": {"low": 1e-6, "high": 0.1, "log": True},
            "dropout": 0.0,
            "bn_momentum": 0.1,
            "patience": {"low": 20, "high": max(21, poly_epochs), "log": True},
        },
        "cv": {"folds": 5, "shuffle": True, "test_fraction": 0.5},
        "pruner": {"kind": "none"},
    }
    poly_baseline = copy.deepcopy(poly_spec)
    poly_baseline["name"] = "poly-unregularized"
    poly_baseline["search_space"].update(NO_REGULARIZATION)

    def spec(name: str, dataset: str, model: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "dataset": dataset,
            "seed": seed,
            "n_trials": trials,
            "model": model,
            "training": {"max_epochs": max_epochs},
            "cv": classification_cv,
            **extra,
        }

    mlp = {"kind": "mlp", "hidden": [256, 256]}
    cnn_1d = {"kind": "cnn", "channels": [32, 32, 32], "kernel_size": 5, "stride": 2, "hidden": []}
    return {
        "digits": Case(
            "digits",
            "MLP 256-256 (BN)",
            spec("digits", "builtin:digits", mlp),
            Target("best CV mean ≥ 0.98", _cv_at_least(0.98)),
            "5-fold stratified CV, no test split; Adam lr 1e-3, batch 64.",
        ),
        "breast_cancer": Case(
            "breast_cancer",
            "MLP 256-256 (BN)",
            spec("breast_cancer", "builtin:breast_cancer", mlp),
            Target("best CV mean ≥ 0.975", _cv_at_least(0.975)),
            "5-fold stratified CV, no test split; Adam lr 1e-3, batch 64.",
        ),
        "mnist1d-mlp": Case(
            "mnist1d-mlp",
            "MLP 256-256 (BN)",
            spec(
                "mnist1d-mlp",
                "builtin:mnist1d:5000",
                mlp,
                training=mnist1d_training,
                search_space=mnist1d_lr,
                cv=mnist1d_cv,
            ),
            Target("published MLP test accuracy 68 %"),
            "4,000 train (5-fold CV) / 1,000 test; Adam, batch 128, lr searched 1e-3…3e-2.",
        ),
        "mnist1d-cnn": Case(
            "mnist1d-cnn",
            "CNN 3×conv32 k5 s2 (BN)",
            spec(
                "mnist1d-cnn",
                "builtin:mnist1d:5000",
                cnn_1d,
                training=mnist1d_training,
                search_space=mnist1d_lr,
                cv=mnist1d_cv,
            ),
            Target("published CNN test accuracy 94 %"),
            "4,000 train (5-fold CV) / 1,000 test; Adam, batch 128, lr searched 1e-3…3e-2.",
        ),
        "poly": Case(
            "poly",
            "linear (20 features)",
            {**poly_spec, "name": "poly-tuned"},
            Target("tuned test MSE < unregularized test MSE", _beats_baseline),
            f"100 train (5-fold CV) / 100 test; full-batch Adam lr 0.03, {poly_epochs} epochs max, "
            "no pruner; baseline: a second study with weight_decay = l1 = dropout = 0, patience "
            "searched. The target compares the mean test MSE over the refit seeds.",
            baseline=poly_baseline,
        ),
    }


# --- running -------------------------------------------------------------------------------


def progress(label: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """A one-line log per finished trial (the log is what one polls during a long run)."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.5g}"
        try:
            best = f"{study.best_value:.5g}"
        except ValueError:  # no completed trial yet
            best = "-"
        seconds = trial.user_attrs.get("wall_time_s")
        took = f" {seconds:.1f}s" if isinstance(seconds, int | float) else ""
        state = trial.state.name.lower()
        print(
            f"  [{label}] trial {trial.number:3d} {state:8s} value {value:>9s}  best {best}{took}",
            flush=True,
        )

    return callback


def refit_seeds(spec: StudySpec, dataset: Dataset, outcome: StudyOutcome, n: int) -> list[float]:
    """Retrain the best configuration on all non-test rows with seeds 1…n; test scores."""
    if n < 1 or outcome.best is None or spec.cv.test_fraction == 0:
        return []
    protocol = CVProtocol.of(spec, dataset)
    scores = []
    for seed in range(1, n + 1):
        fitted = refit_trial(spec, dataset, protocol, outcome.best, seed=seed)
        if fitted.test_score is not None:
            scores.append(float(fitted.test_score))
    return scores


def run_one(
    label: str, raw: dict[str, Any], *, refits: int, quiet: bool, population: int | None = None
) -> StudyRun:
    spec = StudySpec.model_validate(raw)
    dataset = load_builtin(spec.dataset)
    callbacks = [] if quiet else [progress(label)]
    start = time.perf_counter()
    outcome = run_study(
        spec,
        dataset,
        storage=None,
        callbacks=callbacks,
        refit_best=spec.cv.test_fraction > 0,  # no test rows, nothing for a refit to score
        population=population,
    )
    scores = refit_seeds(spec, dataset, outcome, refits)
    return StudyRun(label, spec, outcome, time.perf_counter() - start, scores)


def run_case(case: Case, *, refits: int, quiet: bool, population: int | None = None) -> CaseResult:
    result = CaseResult(case)
    result.runs.append(
        run_one(case.key, case.spec, refits=refits, quiet=quiet, population=population)
    )
    if case.baseline is not None:
        label = f"{case.key}/baseline"
        result.runs.append(
            run_one(label, case.baseline, refits=refits, quiet=quiet, population=population)
        )
    return result


# --- reporting -----------------------------------------------------------------------------


def fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if metric == "accuracy" else f"{value:.4g}"


def trial_counts(run: StudyRun) -> str:
    s = run.states
    return f"{s['complete']}/{s['pruned']}/{s['fail']}"


def cv_text(run: StudyRun) -> str:
    metric = run.outcome.metric
    attrs = run.attrs
    if "cv_mean" not in attrs:
        return "no completed trial"
    return f"{fmt(attrs['cv_mean'], metric)} ± {fmt(attrs['cv_std'], metric)}"


def refit_text(run: StudyRun) -> str:
    metric = run.outcome.metric
    if not run.refit_scores:
        return "–"
    spread = float(np.std(run.refit_scores))
    return f"{fmt(run.refit_mean, metric)} ± {fmt(spread, metric)} (n={len(run.refit_scores)})"


def verdict(result: CaseResult) -> str:
    met = result.met()
    if met is None:
        return "reference"
    return "**met**" if met else "**not met**"


def best_params(run: StudyRun) -> str:
    config = run.attrs.get("config") or {}
    searched = set(run.outcome.best.params) if run.outcome.best is not None else set()
    parts = []
    for name, value in config.items():
        if name not in searched:
            continue
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(parts) or "–"


def run_details(run: StudyRun) -> list[str]:
    metric = run.outcome.metric
    attrs = run.attrs
    folds = ", ".join(fmt(s, metric) for s in attrs.get("fold_scores", []))
    lines = [
        f"- `{run.label}`: trials complete/pruned/failed {trial_counts(run)}; "
        f"best trial #{run.outcome.best.number if run.outcome.best else '–'}, "
        f"CV {metric} {cv_text(run)}",
        f"  - fold scores: {folds or '–'}; best epochs: {attrs.get('best_epochs', '–')}",
        f"  - best searched values: {best_params(run)}",
        f"  - diagnosis: {attrs.get('diagnosis', '–')}; "
        f"L1 sparsity {attrs.get('l1_sparsity', float('nan')):.2f}; "
        f"held-out test {metric}: {fmt(run.test_score, metric)}; wall {run.wall_s:.0f} s",
    ]
    if run.refit_scores:
        scores = ", ".join(fmt(s, metric) for s in run.refit_scores)
        lines.append(f"  - test {metric} of {len(run.refit_scores)} more refits: {scores}")
    return lines


def section(
    results: list[CaseResult],
    *,
    threads: int,
    total_s: float,
    started: dt.datetime,
    commit: str,
    population: int | None = None,
) -> str:
    """The markdown section; ``started`` and ``commit`` are taken when the run began."""
    lines = [
        f"## Search quality — {started:%Y-%m-%d %H:%M %Z}",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}",
        f"- torch.set_num_threads({threads}); optuna per-trial logging silenced; "
        f"population size {population or 'auto (1 on a CPU)'} (trials of an MLP study "
        "trained at once as one stacked model; CNNs train one at a time)",
        f"- commit: {commit} (at the start of the run)",
        f"- total wall time: {total_s / 60:.1f} min",
        "- test (study's refit): the best configuration retrained on all non-test rows by "
        "`run_study`; refit seeds: the same retraining with seeds 1…n (`--refits`)",
        "",
        "| case | dataset | model | trials (complete/pruned/failed) | metric | best CV mean ± std "
        "| test (study's refit) | test, refit seeds mean ± std | target / reference | result "
        "| diagnosis | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for index, run in enumerate(result.runs):
            case = result.case
            name = case.key if index == 0 else f"{case.key} (unregularized)"
            target = case.target.text if index == 0 else "baseline"
            ok = verdict(result) if index == 0 else ""
            lines.append(
                f"| {name} | `{run.spec.dataset}` | {case.model_label} | {trial_counts(run)} "
                f"| {run.outcome.metric} | {cv_text(run)} | "
                f"{fmt(run.test_score, run.outcome.metric)} | {refit_text(run)} | {target} | {ok} "
                f"| {run.attrs.get('diagnosis', '–')} | {run.wall_s / 60:.1f} min |"
            )
    lines += ["", "Details (protocol, fold scores, the best trial's searched values):", ""]
    for result in results:
        lines.append(f"**{result.case.key}** — {result.case.note}")
        lines.append("")
        for run in result.runs:
            lines += run_details(run)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure regtune's search quality on the built-in datasets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--cases",
        default="all",
        help="comma-separated: digits, breast_cancer, mnist1d-mlp, mnist1d-cnn (or mnist1d "
        "for both), poly; or all",
    )
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="trials per study")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=DEFAULT_MAX_EPOCHS,
        help="max epochs per fold (poly: 20× this, since one epoch is one full-batch step)",
    )
    parser.add_argument("--seed", type=int, default=0, help="study seed (folds, sampler)")
    parser.add_argument(
        "--refits",
        type=int,
        default=DEFAULT_REFITS,
        help="extra retrainings of the best configuration (other seeds) scored on the test split",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="trials trained at once by the population engine (MLP cases; default: auto)",
    )
    parser.add_argument("--append", type=Path, help="append the markdown section to this file")
    parser.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.max_epochs < 1 or args.threads < 1 or args.refits < 0:
        parser.error("--trials, --max-epochs and --threads must be ≥ 1, --refits ≥ 0")
    return args


def select(cases: dict[str, Case], wanted: str) -> list[Case]:
    if wanted == "all":
        return list(cases.values())
    keys: list[str] = []
    for name in (w.strip() for w in wanted.split(",") if w.strip()):
        expanded = ["mnist1d-mlp", "mnist1d-cnn"] if name == "mnist1d" else [name]
        for key in expanded:
            if key not in cases:
                raise SystemExit(f"unknown case {key!r}; choose from {[*cases, 'mnist1d']}")
            if key not in keys:
                keys.append(key)
    return [cases[k] for k in keys]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cases = select(make_cases(args.trials, args.max_epochs, args.seed), args.cases)
    results: list[CaseResult] = []
    # The code that runs is the code imported now: record its commit and the date up front.
    started, commit = dt.datetime.now(dt.UTC), git_commit()
    start = time.perf_counter()
    for case in cases:
        print(f"== {case.key}: {case.note}", flush=True)
        result = run_case(case, refits=args.refits, quiet=args.quiet, population=args.population)
        results.append(result)
        for run in result.runs:
            print("\n".join(run_details(run)), flush=True)
        print(f"   target: {case.target.text} -> {verdict(result)}", flush=True)
    total_s = time.perf_counter() - start
    text = section(
        results,
        threads=args.threads,
        total_s=total_s,
        started=started,
        commit=commit,
        population=args.population,
    )
    print()
    print(text, end="")
    if args.append is not None:
        append_section(args.append, text)
        print(f"(appended to {args.append})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
