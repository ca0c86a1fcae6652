"""Which hyperparameters mattered: fANOVA and PED-ANOVA, as the dashboard computes them.

A trade-off study has two objectives: the metric's importance, then the size's, each said.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from service.http.report.figures import plot
from service.http.report.html import esc, para, section, table
from service.http.report.reading import StudyLike
from trainer import stored_trade_off

log = logging.getLogger("regtune.report")

# fANOVA importance is estimated on at most this many completed trials (a seeded sample).
IMPORTANCE_TRIALS = 200
IMPORTANCE_STUDY = "regtune-report-importance"


class _QuietImportanceStudy(logging.Filter):
    """Drop Optuna's INFO line for the throwaway in-memory study that importance needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return IMPORTANCE_STUDY not in record.getMessage()


logging.getLogger("optuna.storages._in_memory").addFilter(_QuietImportanceStudy())


def varying_params(done: Sequence[FrozenTrial]) -> list[str]:
    """Parameters every completed trial has, with more than one value among them."""
    if not done:
        return []
    common = set(done[0].params)
    for trial in done[1:]:
        common &= set(trial.params)
    return sorted(name for name in common if len({repr(t.params[name]) for t in done}) > 1)


def importance_sample(done: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """At most ``IMPORTANCE_TRIALS`` of the completed trials, drawn with a fixed seed.

    fANOVA's cost grows with the trials (pure Python over every tree node: about a second for
    200 trials, minutes for thousands), and a random sample estimates the same shares.
    """
    if len(done) <= IMPORTANCE_TRIALS:
        return list(done)
    picked = np.random.default_rng(0).choice(len(done), IMPORTANCE_TRIALS, replace=False)
    return [done[i] for i in sorted(picked)]


EVALUATORS = ("fANOVA", "PED-ANOVA")
# Below this many completed trials per varying hyperparameter a ranking is noise: the two
# estimators commonly order the parameters differently (a rule of thumb; the report says so
# where it applies).
TRIALS_PER_PARAMETER = 10


def evaluate(study: optuna.Study, names: list[str], evaluator: str) -> dict[str, float]:
    """Normalized importances by ``evaluator``: fANOVA (a random forest's variance split by
    parameter), or PED-ANOVA (how the top 10 % of trials' parameter densities differ from all
    trials': the evaluator optuna-dashboard shows, called as the dashboard calls it)."""
    if evaluator == "fANOVA":
        fanova = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return optuna.importance.get_param_importances(
            study, evaluator=fanova, params=names, normalize=True
        )
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    with warnings.catch_warnings():  # it warns that it minimizes: the target says which way
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        result = optuna.importance.get_param_importances(
            study,
            evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
            params=names,
            target=(lambda t: -t.values[0]) if maximize else (lambda t: t.values[0]),
            normalize=True,
        )
    return {name: float(result.get(name, 0.0)) for name in names}


def importances(direction: str, done: Sequence[FrozenTrial]) -> dict[str, dict[str, float]] | str:
    """Each evaluator's importances of the varying parameters (``{evaluator: {name: share}}``,
    fANOVA's order) for the trials' one value in ``direction``, or a sentence saying why there
    are none."""
    if len(done) < 2:
        return (
            f"Parameter importance needs at least two completed trials; this study has {len(done)}."
        )
    names = varying_params(done)
    if not names:
        return "No hyperparameter varied among the completed trials, so none can be ranked."
    if len(names) == 1:
        return (
            f"Only <code>{esc(names[0])}</code> varied among the completed trials, so it "
            "explains all of the variation that the hyperparameters explain."
        )
    sample = importance_sample(done)
    storage = optuna.storages.InMemoryStorage()
    storage.create_new_study([optuna.study.StudyDirection[direction.upper()]], IMPORTANCE_STUDY)
    study = optuna.Study(IMPORTANCE_STUDY, storage)
    study.add_trials(sample)
    try:
        results = {e: evaluate(study, names, e) for e in EVALUATORS}
    except Exception as exc:  # an evaluator's failure must not cost the whole report
        return f"Parameter importance could not be computed: {esc(exc)}"
    order = list(results["fANOVA"])
    return {e: {n: float(r[n]) for n in order} for e, r in results.items()}


def importance_section(
    record: StudyLike, done: Sequence[FrozenTrial], size: str | None = None
) -> str:
    """The importances for the metric, or for a trade-off's ``size`` (minimized): ``done`` are
    the completed trials with that one value."""
    anchor, title = ("importance", "Parameter importance")
    which, score = "", "the score"
    if size is not None:
        anchor, title = "importance-size", f"Parameter importance for {size}"
        which, score = f" (the second objective, {esc(size)})", esc(size)
    elif stored_trade_off(record.spec):
        which = f" (the first objective, {esc(record.metric)}; the size's comes next)"
    result = importances("minimize" if size is not None else record.direction, done)
    if isinstance(result, str):
        return section(anchor, title, para(result + which))
    names = list(result["fANOVA"])

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        y = np.arange(len(names))[::-1]
        for k, (evaluator, color) in enumerate(
            zip(EVALUATORS, ("#2a7ab0", "#e0a030"), strict=True)
        ):
            values = [result[evaluator][n] for n in names]
            ax.barh(y + 0.2 - 0.4 * k, values, height=0.4, color=color, label=evaluator)
        ax.set_yticks(y, names)
        ax.set_xlabel("share of the importance (each evaluator sums to 100 %)")
        ax.legend(loc="lower right")

    svg = plot(anchor, draw, (6.0, 0.6 * len(names) + 1.2))
    rows = [
        [f"<code>{esc(n)}</code>", *(f"{100 * result[e][n]:.1f} %" for e in EVALUATORS)]
        for n in names
    ]
    counted = f"the {len(done)} completed trials"
    if len(done) > IMPORTANCE_TRIALS:
        counted = f"a random sample of {IMPORTANCE_TRIALS} of the {len(done)} completed trials"
    body = para(
        f"How much {score} over {counted}{which} depends on each hyperparameter, by two "
        "estimators: "
        "fANOVA (a random forest fitted to the trials, its variance split by parameter) and "
        "PED-ANOVA (how the parameters' distribution among the best 10 % of trials differs "
        "from all trials': what the dashboard shows). Each sums to 100 %. A small share means "
        "the score hardly depends on it within the searched range — not that it does nothing."
    )
    needed = TRIALS_PER_PARAMETER * len(names)
    if len(done) < needed:
        body += para(
            f'<b class="unstable">Not a stable ranking yet</b>: {len(done)} completed '
            f"trials for {len(names)} hyperparameters. With fewer than about "
            f"{TRIALS_PER_PARAMETER} per hyperparameter ({needed} here) the estimators can "
            "rank them differently and a rerun can reorder them; read the shares as rough."
        )
    body += table(["hyperparameter", *EVALUATORS], rows, "importance")
    return section(anchor, title, body + svg)
