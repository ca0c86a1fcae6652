"""A trade-off study in the report: its metric against the network's size, and its front.

A study with ``objective.trade_off`` has two objectives, the metric and a size (minimized).
The other sections read its trials by the metric alone (:func:`metric_view`); this one draws
every completed trial at (size, metric), joins the Pareto front (``trainer.pareto_front``),
marks the trial that the final model refits (``final_model.pick``) and lists the front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from optuna.trial import FrozenTrial, TrialState

from service.http.report.figures import plot
from service.http.report.html import esc, para, section, shown, table
from service.http.report.reading import StudyLike, metric_label
from trainer import (
    Metric,
    TrialRecord,
    front_and_pick,
    metric_of,
    optuna_internals,
    pareto_front,
    stored_spec,
    stored_trade_off,
)

SIZES = {
    "parameters": "the network's parameter count",
    "nonzero_parameters": "the network's parameters with |θ| ≥ 1e-3 at the kept epoch, mean "
    "over folds (what L1 prunes away)",
}


def objective_view(trials: Sequence[FrozenTrial], index: int) -> list[FrozenTrial]:
    """The trials as a single-objective study of objective ``index`` would hold them: the
    sections written for one objective read a trade-off study's trials through this."""
    return [
        FrozenTrial(
            number=t.number,
            state=t.state,
            value=None,
            values=[t.values[index]] if t.values else None,
            datetime_start=t.datetime_start,
            datetime_complete=t.datetime_complete,
            params=t.params,
            distributions=t.distributions,
            user_attrs=t.user_attrs,
            system_attrs=t.system_attrs,
            intermediate_values=t.intermediate_values,
            trial_id=optuna_internals.trial_id(t),
        )
        for t in trials
    ]


def front_and_chosen(
    record: StudyLike, trials: Sequence[FrozenTrial], best: FrozenTrial
) -> tuple[list[FrozenTrial], FrozenTrial]:
    """The study's Pareto front (best metric first) and the trial ``final_model.pick``
    chooses from it (the final model's)."""
    best_of_two = next(t for t in trials if t.number == best.number)
    front, chosen = front_and_pick(
        stored_spec(record.spec),
        cast("Metric", record.metric),  # the protocol's, written at submission
        lambda directions: pareto_front(trials, directions),
        best_of_two,
    )
    assert chosen is not None  # a best was given
    return front, chosen


def pareto_section(record: StudyLike, trials: Sequence[FrozenTrial], best: FrozenTrial) -> str:
    """Metric against size, every completed trial a dot, the front joined, the final model's
    trial marked; then the front as a table."""
    size_name = stored_trade_off(record.spec)
    assert size_name is not None, "a trade-off study"
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values and len(t.values) == 2]
    front, chosen = front_and_chosen(record, done, best)

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        ax.scatter(
            [t.values[1] for t in done],
            [metric_of(t) for t in done],
            s=14,
            color="#9ab",
            label="completed trials",
        )
        by_size = sorted(front, key=lambda t: t.values[1])
        ax.step(
            [t.values[1] for t in by_size],
            [metric_of(t) for t in by_size],
            where="post",
            marker="o",
            color="#2a7ab0",
            label="Pareto front",
        )
        ax.scatter(
            [chosen.values[1]],
            [metric_of(chosen)],
            s=160,
            marker="*",
            color="#e0a030",
            zorder=3,
            label=f"final model (trial #{chosen.number})",
        )
        ax.set_xscale("log" if min(t.values[1] for t in done) > 0 else "linear")
        ax.set_xlabel(size_name)
        ax.set_ylabel(metric_label(record))
        ax.legend(loc="best")

    svg = plot("pareto", draw, (6.0, 3.6))
    rows = [
        [
            f"#{t.number}" + (" ★" if t.number == chosen.number else ""),
            shown(metric_of(t)),
            shown(t.values[1]),
            "  ".join(shown(s) for s in TrialRecord.of(t).fold_scores or []),
            esc(", ".join(f"{k}={shown(v)}" for k, v in t.params.items())),
        ]
        for t in front
    ]
    body = para(
        f"This study traded {esc(record.metric)} against {esc(SIZES.get(size_name, size_name))} "
        f"(<code>objective.trade_off: {esc(size_name)}</code>, minimized). Each dot is a "
        f"completed trial; the line joins the {len(front)} trial(s) of the Pareto front, those "
        "that no other trial beats on both. The best by the metric is trial "
        f"#{best.number}; the final model refits trial #{chosen.number} (★, "
        "<code>final_model.pick</code>). The other sections show the trials by the metric."
    )
    header = ["trial", esc(record.metric), esc(size_name), "per fold", "hyperparameters"]
    listed = table(header, rows, "pareto")
    return section("trade-off", "Trade-off: metric against size", body + svg + listed)
