"""Trade-offs (``objective.trade_off``): a two-objective study of the metric and the network's
size, its Pareto front, pruning on the metric, ``final_model.pick`` and the result's shape.

In process, on wine: the spec's refusals, the nonzero count in both engines, pruning in both
engines, the front against Optuna's own, the pick refitted, the report's section.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from rich.console import Console
from test_report import assert_self_contained, record_of, section_of

from service.cli import views
from service.http import report
from trainer import field_problem
from trainer.engines import layout
from trainer.engines.per_trial import fold_runs, train_folds
from trainer.engines.population import Population
from trainer.engines.regularizers import SPARSITY_THRESHOLD, nonzero
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.optuna_study import create_study
from trainer.tuning.study import StudyOutcome, run_study
from trainer.tuning.trade_off import picked

# The front: widths drawn from three, all else fixed, so size and accuracy pull apart (a few
# hidden units separate wine's three classes worse than 32 do, in a few epochs).
FIXED = {"weight_decay": 0.0, "l1": 0.0, "dropout": 0.0, "bn_momentum": 0.1, "patience": 50}
WIDTHS = [[1], [4], [32]]


def wine_spec(**overrides: Any) -> StudySpec:
    base: dict[str, Any] = {
        "dataset": "builtin:wine",
        "n_trials": 3,
        "model": {"hidden": [16]},
        "training": {"max_epochs": 3, "lr": 0.03},
        "cv": {"folds": 2},
        "objective": {"trade_off": "parameters"},
    }
    return StudySpec.model_validate(base | overrides)


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate({"dataset": "builtin:wine"} | data)
    return [field_problem(e) for e in caught.value.errors()]


def dominated(trial: FrozenTrial, others: list[FrozenTrial], maximize: bool) -> bool:
    sign = 1.0 if maximize else -1.0
    metric, size = sign * trial.values[0], trial.values[1]
    return any(
        sign * o.values[0] >= metric
        and o.values[1] <= size
        and (sign * o.values[0], o.values[1]) != (metric, size)
        for o in others
    )


# --- the spec ---------------------------------------------------------------------------------


def test_a_spec_without_a_trade_off_is_single_objective_as_before() -> None:
    spec = StudySpec.model_validate({"dataset": "builtin:wine"})
    assert spec.objective.trade_off is None and spec.final_model.pick == "best"
    study = create_study(spec, "accuracy")
    assert len(study.directions) == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"objective": {"trade_off": "weights"}}, "objective.trade_off"),
        ({"final_model": {"pick": "smallest"}}, "final_model.pick"),
        ({"final_model": {"pick": {"within": -0.1}}}, "final_model.pick: within"),
        ({"final_model": {"pick": {"by": 0.1}}}, "final_model.pick: within: Field required"),
        ({"final_model": {"pick": {"within": 0.01}}}, "final_model.pick {'within': d}"),
        (
            {"objective": {"trade_off": "parameters"}, "sampler": {"kind": "cmaes"}},
            "sampler.kind 'cmaes'",
        ),
        (
            {"objective": {"trade_off": "parameters"}, "pruner": {"kind": "wilcoxon"}},
            "pruner.kind 'wilcoxon'",
        ),
    ],
)
def test_a_bad_trade_off_or_pick_names_its_field(data: dict[str, Any], field: str) -> None:
    found = problems(data)
    assert len(found) == 1 and found[0].startswith(field), found


def test_a_trade_off_study_has_two_directions_and_every_two_objective_sampler() -> None:
    for kind in ("tpe", "nsga2", "random", "gp", "grid"):
        spec = wine_spec(sampler={"kind": kind}, final_model={"pick": {"within": 0.02}})
        study = create_study(spec, "loss")
        assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert isinstance(
        create_study(wine_spec(sampler={"kind": "nsga2"}), "accuracy").sampler,
        optuna.samplers.NSGAIISampler,
    )


# --- what a trial records ---------------------------------------------------------------------


def test_nonzero_counts_parameters_at_or_above_the_threshold() -> None:
    weights = torch.tensor([[[0.5, -1e-3, 9e-4], [0.0, 2.0, -3.0]], [[0.0] * 3, [1e-2] * 3]])
    bias = torch.tensor([[1e-4, 1.0], [1.0, 1.0]])
    assert nonzero([weights, bias]).tolist() == [4 + 1, 3 + 2]


def kept_count(model: torch.nn.Module) -> int:
    return sum(int((p.abs() >= SPARSITY_THRESHOLD).sum()) for p in model.parameters())


def test_both_engines_count_the_kept_weights(wine) -> None:
    """Each fold's count is its best epoch's network's, every parameter of it (what
    ``parameters`` counts too); strong L1 leaves fewer."""
    spec = wine_spec(model={"hidden": [8]})
    splits = CVProtocol.of(spec, wine).splits
    values = FIXED | {"l1": 3e-2, "patience": 2}
    config = TrialConfig.from_values(spec, values)
    runs = fold_runs(wine, config, splits, metric="accuracy", device="cpu", seed=1)
    train_folds(runs)
    per_trial = [run.result().nonzero_params for run in runs]
    assert per_trial == [kept_count(run.model) for run in runs]
    population = Population(wine, splits, config, slots=1, metric="accuracy")
    population.assign(0, config, 1)
    finished = False
    while not finished:
        population.train_epoch()
        finished = any(report.finished for report in population.end_epoch())
    result = population.result(0)
    stacked = [population.trained(0, k).model for k in range(len(splits))]
    assert [f.nonzero_params for f in result.folds] == [kept_count(m) for m in stacked]
    assert all(0 < n < result.n_params for n in per_trial)


# --- the study --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def front_study(wine) -> tuple[StudySpec, StudyOutcome]:
    """Four trials of three widths, a pick within 1.0 accuracy (so: the smallest front trial)."""
    spec = wine_spec(
        name="trade-off",
        n_trials=4,
        search_space=FIXED | {"hidden": WIDTHS},
        sampler={"kind": "random"},
        pruner={"kind": "none"},
        training={"max_epochs": 6, "lr": 0.03},
        cv={"folds": 2, "test_fraction": 0.2},
        final_model={"pick": {"within": 1.0}},
    )
    return spec, run_study(spec, wine)


def test_the_front_is_optunas_and_non_dominated_and_best_stays_by_the_metric(
    front_study: tuple[StudySpec, StudyOutcome],
) -> None:
    _, outcome = front_study
    study = outcome.study
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4
    for trial in done:
        record = trial.user_attrs
        assert trial.values == [record["cv_mean"], record["n_params"]]
    assert outcome.pareto is not None
    assert {t.number for t in outcome.pareto} == {t.number for t in study.best_trials}
    assert not any(dominated(t, done, maximize=True) for t in outcome.pareto)
    on_front = {t.number for t in outcome.pareto}
    assert len(on_front) >= 2  # the test's widths make a trade-off
    assert all(dominated(t, done, True) for t in done if t.number not in on_front)
    best = max(done, key=lambda t: (t.values[0], -t.number))
    assert outcome.best is not None and outcome.best.number == best.number
    summary = outcome.summary()
    assert summary.trade_off == "parameters" and summary.best is not None
    assert summary.best.value == best.values[0]
    assert summary.pareto is not None
    assert [p.number for p in summary.pareto] == [t.number for t in outcome.pareto]
    assert [p.values[0] for p in summary.pareto] == sorted(
        (p.values[0] for p in summary.pareto), reverse=True
    )
    assert all(len(p.fold_scores or []) == 2 for p in summary.pareto)


def test_pick_within_refits_the_smallest_trial_near_the_best(
    front_study: tuple[StudySpec, StudyOutcome],
) -> None:
    _, outcome = front_study
    assert outcome.pareto is not None and outcome.best is not None
    smallest = min(outcome.pareto, key=lambda t: t.values[1])
    assert outcome.chosen is not None and outcome.chosen.number == smallest.number
    assert outcome.model is not None and outcome.model["trial"]["number"] == smallest.number
    expected = None if smallest.number == outcome.best.number else smallest.number
    assert outcome.summary().chosen == expected
    # Within 0 of the best: the best's own metric, the smallest at it.
    assert picked(outcome.pareto, outcome.best, "best", "maximize") is outcome.best
    tight = wine_spec(final_model={"pick": {"within": 0}}).final_model.pick
    at_best = picked(outcome.pareto, outcome.best, tight, "maximize")
    assert at_best.values[0] == outcome.best.values[0]


def test_the_result_table_and_the_front_table(
    front_study: tuple[StudySpec, StudyOutcome],
) -> None:
    _, outcome = front_study
    result = outcome.summary()
    out = Console(record=True, width=200)
    out.print(views.result_table(result))
    front = views.pareto_table(result)
    assert front is not None and outcome.chosen is not None and outcome.pareto is not None
    out.print(front)
    text = out.export_text()
    assert f"test accuracy (final model: trial {outcome.chosen.number})" in text
    assert "Pareto front: accuracy against parameters" in text
    rows = re.findall(r"│ (\d+)( ◀ model)? +│ (0\.\d{4}) +│ (\d+) ", text)
    assert [int(n) for n, *_ in rows] == [t.number for t in outcome.pareto]
    assert [int(n) for n, marked, *_ in rows if marked] == [outcome.chosen.number]
    single = result.model_copy(update={"trade_off": None, "pareto": None, "chosen": None})
    assert views.pareto_table(single) is None


def test_the_report_draws_the_front_and_each_objectives_importance(
    front_study: tuple[StudySpec, StudyOutcome],
) -> None:
    spec, outcome = front_study
    page = report.render(record_of(spec, outcome), outcome.study.trials)
    assert_self_contained(page)
    trade_off = section_of(page, "trade-off")
    assert outcome.pareto is not None and outcome.chosen is not None
    assert "<svg" in trade_off and f"#{outcome.chosen.number} ★" in trade_off
    listed = re.findall(r"<tr><td>#(\d+)", trade_off)
    assert listed == [str(t.number) for t in outcome.pareto]
    assert "the first objective, accuracy" in section_of(page, "importance")
    assert "the second objective, parameters" in section_of(page, "importance-size")
    assert "could not be rendered" not in page
    # Each beside its single-objective kin: the front after the best configuration, the size's
    # importance after the metric's.
    order = re.findall(r'<section id="([a-z-]+)"', page)
    assert order[order.index("best-configuration") + 1] == "trade-off"
    assert order[order.index("importance") + 1] == "importance-size"


# --- pruning in a two-objective study ---------------------------------------------------------


# Trials that a median pruner stops at once: lr 1e-7 hardly moves from the start.
PRUNABLE: dict[str, Any] = {
    "n_trials": 5,
    "search_space": {"lr": [3e-2, 1e-7], "patience": 50},
    "sampler": {"kind": "random"},
    "pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "objective": {"trade_off": "nonzero_parameters"},
}


@pytest.mark.parametrize(
    ("engine", "pruner"),
    [("population", "median"), ("per-trial", "median"), ("population", "hyperband")],
)
def test_a_two_objective_study_prunes_on_the_metric(
    wine, engine: str, pruner: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """In both engines, with the median pruner and with hyperband (whose bracket studies are
    built from the study's storage: here a database's)."""
    if engine == "per-trial":  # as for a network that does not stack
        monkeypatch.setattr(layout, "per_trial_reason", lambda spec, data: "forced by the test")
    spec = wine_spec(**PRUNABLE)
    storage = None
    if pruner == "hyperband":  # rungs at epochs 1, 3 and 9
        # Named: hyperband draws each trial's bracket from the study's name and its number.
        hyperband = {"name": "hyperband", "pruner": {"kind": pruner}, "training": {"max_epochs": 9}}
        spec = wine_spec(**PRUNABLE | hyperband)
        storage = f"sqlite:///{tmp_path / 'hyperband.db'}"
    outcome = run_study(spec, wine, storage=storage, refit_best=False)
    trials = outcome.study.trials
    assert all(t.user_attrs.get("engine", engine) == engine for t in trials)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned
    if pruner == "median":  # below the median at once (hyperband compares within a bracket)
        assert all(t.params["lr"] == 1e-7 for t in pruned)
    assert all(t.intermediate_values for t in pruned)  # the metric's curve, stored
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert done and all(t.values[1] == t.user_attrs["nonzero_params"] for t in done)
    assert all(t.values[1] <= t.user_attrs["n_params"] for t in done)
    epochs = spec.training.max_epochs
    assert all(sorted(t.intermediate_values) == list(range(epochs)) for t in done)


@pytest.mark.parametrize(
    "sampler",
    [
        {"kind": "tpe", "n_startup_trials": 2},
        {"kind": "nsga2", "population_size": 2},
        {"kind": "gp", "n_startup_trials": 2},
        {"kind": "grid"},
    ],
)
def test_each_two_objective_sampler_searches_on_past_pruned_trials(
    wine, sampler: dict[str, Any]
) -> None:
    """Past its random start a sampler models the trials so far, pruned ones (which carry the
    metric's curve) included: none fails, and the budget is spent."""
    outcome = run_study(wine_spec(**PRUNABLE | {"n_trials": 6, "sampler": sampler}), wine)
    states = [t.state for t in outcome.study.trials]
    assert len(states) == 6 and TrialState.FAIL not in states, [
        t.user_attrs.get("fail_reason") for t in outcome.study.trials
    ]
    assert TrialState.PRUNED in states


@pytest.mark.parametrize("directions", [("maximize", "minimize"), ("minimize", "minimize")])
def test_the_front_of_plain_rows_is_the_non_dominated_ones_in_order(directions) -> None:
    """front_rows (what the service finds a large study's front with, from plain values) keeps
    exactly the rows no other row dominates, ties and repeated points included, best metric
    first, then smallest, then first by number."""
    from trainer import front_rows

    generator = np.random.default_rng(3)
    values = generator.integers(0, 6, size=(60, 2)).astype(float)  # many ties and repeats
    values[5] = [np.inf, 0.0] if directions[0] == "maximize" else [-np.inf, 0.0]
    numbers = list(range(100, 160))
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    loss = values * sign

    def beaten(i: int) -> bool:
        return any((loss[j] <= loss[i]).all() and (loss[j] < loss[i]).any() for j in range(60))

    rows = front_rows(numbers, values, list(directions))
    assert set(rows) == {i for i in range(60) if not beaten(i)}
    assert rows == sorted(rows, key=lambda r: (loss[r, 0], values[r, 1], numbers[r]))
