"""The report's sections, each from the study record and its trials."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from service.http.report.figures import plot
from service.http.report.html import esc, floats, para, percent, section, shown, table
from service.http.report.importance import varying_params
from service.http.report.reading import StudyLike, metric_label
from service.store.trials import TrialCounts, listed_state, retried_of
from service.text import MISSING
from trainer import (
    DIAGNOSES,
    OVERFIT_RISE,
    RECENT_FRACTION,
    STILL_IMPROVING_DROP,
    UNDERFIT_RATIO,
    TrialRecord,
    best_first,
    networks,
    stored_model,
)

log = logging.getLogger("regtune.report")

# Hyperparameters read on a log axis even when searched on a linear range (λ, λ₁, η).
LOG_SCALE = ("weight_decay", "l1", "lr")
# Above this many points a scatter is embedded as an image inside the SVG, not as markers.
RASTER_ABOVE = 2000
MAX_FOLD_PLOTS = 10
COLORS = {"complete": "#2a7ab0", "pruned": "#e0a030", "fail": "#c0392b", "best": "#d62728"}
# The budget plot's time axis: the first unit whose limit (in seconds) covers the study.
TIME_UNITS = (("seconds", 1.0, 180.0), ("minutes", 60.0, 180 * 60.0), ("hours", 3600.0, math.inf))


# --- sections ---------------------------------------------------------------------------------

PROGRESS_NOTES = {
    "queued": "This study is queued: no worker has started it yet. The report shows what "
    "exists; reload it later for more.",
    "running": "This study is still running: the report shows the trials finished so far. "
    "Reload it for more.",
    "cancelled": "This study was cancelled: the report shows the trials it finished before.",
    "failed": "This study failed",
}


def header(record: StudyLike, trials: Sequence[FrozenTrial]) -> str:
    spec = record.spec or {}
    cv = spec.get("cv") or {}
    counts = TrialCounts.of(trials)
    facts = [
        ("Study", f"{esc(record.name)} <code>{esc(record.id)}</code>"),
        ("Status", f'<span class="status">{esc(record.status)}</span>'),
        ("Dataset", f"<code>{esc(spec.get('dataset', '?'))}</code>"),
        ("Network", esc(networks.summary(stored_model(spec)))),
        ("Objective", esc(metric_label(record))),
        ("Cross-validation", f"{esc(cv.get('folds', '?'))} folds"),
        (
            "Trials",
            f"{counts.finished} finished of {esc(record.n_trials)} ({trial_counts(counts)})",
        ),
        ("Created", esc(_when(record.created_at))),
        ("Finished", esc(_when(record.finished_at))),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    notes = ""
    note = PROGRESS_NOTES.get(record.status)
    if note is not None:
        if record.status == "failed":
            note += f": {esc(record.error)}" if record.error else "."
        anchor = "in-progress" if record.status in ("queued", "running") else "status-note"
        notes = f'<p class="note" id="{anchor}">{note}</p>'
    return (
        f"<header><h1>Regularization study: {esc(record.name)}</h1>"
        f'<table class="facts">{rows}</table>{notes}</header>'
    )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if moment is not None else MISSING


def best_configuration(record: StudyLike, best: FrozenTrial) -> str:
    recorded = TrialRecord.of(best)
    config: Mapping[str, Any] = recorded.config or {}
    names = [*config, *(name for name in best.params if name not in config)]
    rows = []
    for name in names:
        value = best.params.get(name, config.get(name))
        if name == "hidden" and name in config:
            value = config[name]
        origin = "searched" if name in best.params else "fixed"
        rows.append([f"<code>{esc(name)}</code>", shown(value), origin])
    extra = []
    if recorded.n_params is not None:
        extra.append(f"{recorded.n_params:,} parameters")
    if recorded.l1_sparsity is not None:
        extra.append(
            f"{100 * recorded.l1_sparsity:.1f} % of the regularized weights are "
            "below 1e-3 in magnitude (L1 sparsity, mean over folds)"
        )
    training = (record.spec or {}).get("training") or {}
    if training.get("l2_mode"):
        extra.append(f"weight decay mode: {esc(training['l2_mode'])}")
    max_norm = best.params.get("max_norm", config.get("max_norm"))
    if max_norm is not None:
        extra.append(max_norm_sentence(max_norm, searched="max_norm" in best.params))
    width = best.params.get("width", config.get("width"))
    if width is not None:
        searched = "width" in best.params
        extra.append(width_sentence(width, record.spec or {}, config.get("hidden"), searched))
    body = para(
        f"Trial <b>#{best.number}</b> scored <b>{shown(best.value)}</b> {esc(record.metric)} "
        "(mean over the folds). Its hyperparameters, those the search chose and those fixed by "
        "the spec:"
    )
    body += table(["hyperparameter", "value", ""], rows, "config")
    if extra:
        body += para("; ".join(extra) + ".")
    body += augmentation_note(best.params, config)
    return section("best-configuration", "Best configuration", body)


def max_norm_sentence(c: Any, *, searched: bool) -> str:
    """What the best configuration's max-norm c did (``search_space.max_norm``)."""
    how = "the search chose" if searched else "the spec fixed"
    return (
        f"max-norm c = {shown(c)} ({how} it): after every optimizer step each unit's incoming "
        "weight vector w (a row of a Linear weight, one output filter of a Conv) was rescaled "
        "to norm ≤ c, w ← w·c/‖w‖ where ‖w‖ > c, a hard bound on each unit where weight decay "
        "pulls on all weights; biases and BatchNorm are untouched"
    )


def width_sentence(
    width: Any, spec: Mapping[str, Any], hidden: Sequence[int] | None, searched: bool
) -> str:
    """What the best configuration's width did (``search_space.width``), with the widths of
    the network it trained (``hidden``: the trial's template widths, the spec's if None)."""
    model = stored_model(dict(spec))
    hidden = model.hidden if hidden is None else hidden
    how = "the search chose" if searched else "the spec fixed"
    text = (
        f"width = {shown(width)} ({how} it): every hidden width of the network was multiplied "
        "by it (rounded, at least one unit): the same layers with fewer units; "
    )
    if model.kind == "layers":
        return text + "each <code>out</code> of the layers under Network was scaled"
    w = float(width)
    narrow = model.model_copy(
        update={
            "hidden": [networks.narrow(w, units) for units in hidden],
            "channels": [networks.narrow(w, units) for units in model.channels],
        }
    )
    full = model.model_copy(update={"hidden": list(hidden)})
    return (
        text + f"the trial trained {esc(networks.summary(narrow))} "
        f"(at full width: {esc(networks.summary(full))})"
    )


def cv_table(record: StudyLike, best: FrozenTrial) -> str:
    recorded = TrialRecord.of(best)
    scores = [float(s) for s in recorded.fold_scores or []]
    epochs = recorded.best_epochs or []
    diagnoses = recorded.fold_diagnoses or []
    rows = []
    for k, score in enumerate(scores):
        rows.append(
            [
                f"fold {k + 1}",
                shown(score),
                shown(epochs[k] + 1) if k < len(epochs) else MISSING,
                esc(diagnoses[k]) if k < len(diagnoses) else MISSING,
            ]
        )
    mean = float(np.mean(scores)) if scores else best.value
    std = recorded.cv_std
    std = float(std if std is not None else (np.std(scores) if scores else float("nan")))
    rows.append(
        [
            "<b>mean ± std</b>",
            f'<b class="cv-mean">{shown(mean)} ± {shown(std)}</b>',
            "",
            esc(recorded.diagnosis or ""),
        ]
    )
    body = para(
        f"The best trial's {esc(record.metric)} on each held-out fold (each sample scored "
        "exactly once), the epoch whose weights early stopping kept, and the fold's diagnosis. "
        "The spread over folds is the standard deviation of the fold scores."
    )
    body += table(["fold", esc(record.metric), "best epoch", "diagnosis"], rows, "cv")
    body += para(test_sentence(record, mean, std))
    return section("cross-validation", "Cross-validation and test score", body)


# What each augmentation (``augment.<name>``) does, with its value v.
AUGMENTATIONS = {
    "noise": "Gaussian noise of σ = {v} added to every standardized input",
    "mixup": "pairs of rows of a batch mixed, x̃ = λx + (1 − λ)x′ with λ ~ Beta(α, α), α = {v}, "
    "their targets (class probabilities or values) mixed alike",
    "shift": "each sample moved by a random whole number of positions, up to {v}, along each "
    "spatial axis (zero fill)",
    "flip": "each image mirrored left to right with probability {v}",
    "rotate": "each image rotated by a random angle within ±{v}° (bilinear)",
    "scale": "each image zoomed by a random factor within 1 ± {v} (bilinear)",
}


def augmentation_note(params: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The best configuration's data augmentations, each with what it does (none: nothing)."""
    parts = []
    for name, meaning in AUGMENTATIONS.items():
        key = f"augment.{name}"
        value = params.get(key, config.get(key))
        if value:
            how = "searched" if key in params else "fixed"
            text = esc(meaning).format(v=shown(value))
            parts.append(f"<code>{key}</code> = {shown(value)} ({how}): {text}")
    if not parts:
        return ""
    return para(
        "Data augmentation, of the training rows only (never the validation, scored or test "
        "rows): " + "; ".join(parts) + "."
    )


def test_sentence(record: StudyLike, mean: float | None, std: float | None) -> str:
    test_fraction = ((record.spec or {}).get("cv") or {}).get("test_fraction")
    if record.test_score is not None:
        text = (
            f'Test score: <b id="test-score">{shown(record.test_score)}</b> {esc(record.metric)} '
            "— the best configuration retrained on every non-test row and scored once on the "
            f"held-out test split ({percent(test_fraction)} of the data) that no trial has seen."
        )
        if mean is not None and std is not None and math.isfinite(std):
            gap = record.test_score - mean
            better = best_first(record.direction) * gap < 0
            if abs(gap) <= 2 * std + 1e-12:
                text += (
                    " It lies within two fold standard deviations of the CV mean: consistent "
                    "with the CV estimate."
                )
            elif better:
                text += (
                    f" It is {shown(abs(gap))} better than the CV mean, more than two fold "
                    "standard deviations: the final model trained on more rows than any fold "
                    "did, and a small test split varies too."
                )
            else:
                text += (
                    f" It is {shown(abs(gap))} worse than the CV mean, more than two fold standard "
                    "deviations: the search picked this trial for its score on these very folds, "
                    "so its CV figure is optimistic (a small test split varies too)."
                )
        return text
    if not test_fraction:
        return (
            "Test score: none — the spec has no <code>cv.test_fraction</code>, so no held-out "
            "test split was kept back."
        )
    if record.status in ("queued", "running"):
        return "Test score: not yet — it is computed once the search has finished."
    return "Test score: not available (the final retraining did not produce one)."


def learning_curves(best: FrozenTrial) -> str:
    recorded = TrialRecord.of(best)
    train = recorded.train_loss or []
    val = recorded.val_loss or []
    epochs = recorded.best_epochs or []
    diagnoses = recorded.fold_diagnoses or []
    folds = min(len(train), len(val), MAX_FOLD_PLOTS)
    if folds == 0:
        return section(
            "learning-curves",
            "Learning curves of the best trial",
            para("This trial recorded no learning curves."),
        )
    columns = min(folds, 5)
    rows = math.ceil(folds / columns)
    # Under mixup a trial trains against mixed targets: its training loss is that loss, higher
    # than the plain one, and the curves must not read as if it were the plain loss.
    mixed = float((recorded.config or {}).get("augment.mixup", 0) or 0) > 0
    train_label = "training loss (mixed targets)" if mixed else "training loss"

    def draw(figure: Any) -> None:
        axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
        for k in range(rows * columns):
            ax = axes[k // columns][k % columns]
            if k >= folds:
                ax.set_visible(False)
                continue
            x = np.arange(1, len(train[k]) + 1)
            ax.plot(x, floats(train[k]), color="#2a7ab0", label=train_label)
            ax.plot(
                np.arange(1, len(val[k]) + 1),
                floats(val[k]),
                color="#d62728",
                label="validation loss",
            )
            if k < len(epochs):
                ax.axvline(epochs[k] + 1, color="#555555", linestyle=":", label="best epoch")
            title = f"fold {k + 1}"
            if k < len(diagnoses):
                title += f": {diagnoses[k]}"
            ax.set_title(title)
            ax.set_xlabel("epoch")
            if k % columns == 0:
                ax.set_ylabel("loss")
        axes[0][0].legend(loc="upper right")

    svg = plot("curves", draw, (2.6 * columns + 0.6, 2.4 * rows + 0.4))
    body = para(
        "Training loss (on the fold's training part) and validation loss (on the inner "
        "validation split that early stopping watches, never the scored fold), per epoch. The "
        "dotted line is the epoch whose weights were kept."
    )
    if mixed:
        body += para(
            "This trial trained with mixup: its training loss is the loss against the mixed "
            "targets (pairs of rows and their targets blended), which stays above the plain "
            "loss of the same weights; the validation loss is the plain loss. A gap between "
            "the two is partly mixup's, not under-fitting."
        )
    if len(train) > MAX_FOLD_PLOTS:
        body += para(f"The first {MAX_FOLD_PLOTS} of {len(train)} folds are shown.")
    return section("learning-curves", "Learning curves of the best trial", body + svg)


# What each reading means and what to try; the rules are in trainer/engines/diagnosis.py.
# What each reading means, in the thresholds trainer/engines/diagnosis.py applies, and what to try.
MEANINGS = {
    "over-fitting": (
        f"After its best epoch the validation loss rose by more than {OVERFIT_RISE:.0%} while "
        "the training loss kept falling: the network starts to learn the noise of its training "
        "rows.",
        "more regularization: a larger weight decay λ, more dropout, some L1, or a smaller "
        "patience so that early stopping cuts in sooner; a smaller network also helps.",
    ),
    "under-fitting": (
        f"Even on the rows it trains on, the loss stayed above {UNDERFIT_RATIO:.0%} of the "
        "trivial predictor's (class prior or target mean): the model is too constrained to fit "
        "the data.",
        "less regularization: a smaller λ, λ₁ or dropout, a larger network, a higher learning "
        "rate, or more epochs.",
    ),
    "still improving": (
        f"The best validation loss came within the last {RECENT_FRACTION:.0%} of the epochs and "
        f"was still falling (by more than {STILL_IMPROVING_DROP:.0%}) when the fold ran out of "
        "epochs: training stopped before it had converged.",
        "a larger training.max_epochs (or a higher learning rate) before changing the "
        "regularization.",
    ),
    "converged": (
        "The validation loss flattened and early stopping stopped in time, with neither rising "
        "validation loss nor a model too weak to fit: the regularization looks balanced.",
        "little from the regularization; more data, another architecture or features are the "
        "next levers.",
    ),
}


def diagnosis(record: StudyLike, best: FrozenTrial, done: Sequence[FrozenTrial]) -> str:
    recorded = TrialRecord.of(best)
    reading = recorded.diagnosis
    fold_readings = list(recorded.fold_diagnoses or [])
    if reading not in MEANINGS:
        return section(
            "diagnosis", "Diagnosis", para("The best trial recorded no diagnosis of its curves.")
        )
    meaning, advice = MEANINGS[reading]
    body = para(f'The best trial is <b class="diagnosis">{esc(reading)}</b>. {esc(meaning)}')
    counts = Counter(fold_readings)
    if fold_readings:
        parts = ", ".join(f"{n} {esc(d)}" for d, n in counts.most_common())
        agree = (
            "all folds agree"
            if len(counts) == 1
            else "the trial's reading is the folds' majority, a tie going to the more severe one"
        )
        body += para(f"Per fold: {parts} ({agree}).")
    body += para(f"What to try: {esc(advice)}")
    others = [d for d in counts if d != reading and d in MEANINGS]
    for other in others:
        body += para(
            f"Folds reading <i>{esc(other)}</i>: {esc(MEANINGS[other][0])} "
            f"There, try {esc(MEANINGS[other][1])}"
        )
    max_epochs = ((record.spec or {}).get("training") or {}).get("max_epochs")
    epochs = recorded.best_epochs or []
    if epochs and max_epochs:
        body += para(
            f"Early stopping kept epochs {esc(', '.join(str(e + 1) for e in epochs))} of at "
            f"most {esc(max_epochs)}."
        )
    study_counts = Counter(TrialRecord.of(t).diagnosis for t in done)
    study_counts.pop(None, None)
    if study_counts:
        rows = [[esc(d), str(study_counts[d])] for d in DIAGNOSES if study_counts[d]]
        body += para("Across every completed trial of the study:")
        body += table(["diagnosis", "trials"], rows, "diagnoses")
    return section("diagnosis", "Diagnosis: over- or under-fitting?", body)


def axis_scale(name: str, distribution: BaseDistribution | None, xs: Sequence[float]) -> str:
    if isinstance(distribution, FloatDistribution | IntDistribution) and distribution.log:
        return "log"
    if name in LOG_SCALE:
        return "log" if all(x > 0 for x in xs) else "symlog"
    return "linear"


def score_section(record: StudyLike, done: Sequence[FrozenTrial], best: FrozenTrial) -> str:
    names = varying_params(done) or sorted(best.params)
    if not names:
        return section(
            "scores",
            "Score against each hyperparameter",
            para("The search had no hyperparameter to vary."),
        )
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    ys = [float(t.value or 0.0) for t in done]

    def draw(figure: Any) -> None:
        axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
        for k in range(rows * columns):
            ax = axes[k // columns][k % columns]
            if k >= len(names):
                ax.set_visible(False)
                continue
            name = names[k]
            trials = [t for t in done if name in t.params]
            distribution = best.distributions.get(name)
            values = [t.params[name] for t in trials]
            y = [float(t.value or 0.0) for t in trials]
            if isinstance(distribution, CategoricalDistribution) or any(
                isinstance(v, str) for v in values
            ):
                choices = sorted({str(v) for v in values})
                x: list[float] = [choices.index(str(v)) for v in values]
                ax.set_xticks(range(len(choices)), choices)
                best_x: float | None = None
                if name in best.params:
                    best_x = choices.index(str(best.params[name]))
            else:
                x = [float(v) for v in values]
                ax.set_xscale(axis_scale(name, distribution, x))
                best_x = float(best.params[name]) if name in best.params else None
            ax.scatter(
                x,
                y,
                s=14,
                alpha=0.7,
                color=COLORS["complete"],
                rasterized=len(x) > RASTER_ABOVE,
                label="completed trial",
            )
            if best_x is not None:
                ax.scatter(
                    [best_x],
                    [best.value],
                    s=90,
                    marker="*",
                    color=COLORS["best"],
                    zorder=3,
                    label="best",
                )
            ax.set_xlabel(name)
            if k % columns == 0:
                ax.set_ylabel(record.metric)
        axes[0][0].legend(loc="best")

    svg = plot("scores", draw, (3.2 * columns + 0.4, 2.6 * rows + 0.4))
    body = para(
        f"Each completed trial's CV {esc(metric_label(record))} against each searched "
        f"hyperparameter ({len(ys)} trials; the star is the best). λ (weight_decay), λ₁ (l1) and "
        "the learning rate are on a log axis. A clear trend across a panel says the score "
        "depends on that parameter; a flat cloud says it does not, in this range."
    )
    return section("scores", "Score against each hyperparameter", body + svg)


def trial_counts(counts: TrialCounts) -> str:
    """'5 complete, 2 pruned, 1 failed' and each other state that has trials, as the trial
    list names them."""
    named = [
        (counts.complete, "complete"),
        (counts.pruned, "pruned"),
        (counts.fail, "failed"),
        (counts.cancelled, "cancelled"),
        (counts.running, "running"),
        (counts.waiting, "queued"),
        (counts.retried, "retried (failed, then run again)"),
    ]
    return ", ".join(f"{n} {label}" for i, (n, label) in enumerate(named) if n or i < 3)


def budget_section(record: StudyLike, trials: Sequence[FrozenTrial]) -> str:
    retried = retried_of(trials)
    states = {t.number: listed_state(t, retried) for t in trials}
    ended = [t for t in trials if t.datetime_complete is not None]
    counts = TrialCounts.of(trials)
    rows = [
        ["complete", str(counts.complete)],
        ["pruned", str(counts.pruned)],
        ["failed", str(counts.fail)],
    ]
    if counts.cancelled:
        rows.append(["cancelled with the study", str(counts.cancelled)])
    if counts.retried:
        rows.append(["failed, then run again (its worker stopped)", str(counts.retried)])
    if counts.running or counts.waiting:
        rows.append(["running", str(counts.running)])
        rows.append(["queued", str(counts.waiting)])
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    body = para(
        f"How the study spent its budget of {esc(record.n_trials)} trials: pruned trials were "
        "stopped early by the pruner because their fold-mean score lagged behind, failed ones "
        "ended with an error (the reasons are listed below)."
    )
    body += table(["trials", "count"], rows, "budget")
    if ended and starts:
        origin = min(starts)

        span = max((t.datetime_complete - origin).total_seconds() for t in ended)  # type: ignore[operator]
        unit, seconds = next((u, s) for u, s, limit in TIME_UNITS if span <= limit or u == "hours")

        def elapsed(moment: datetime) -> float:
            return (moment - origin).total_seconds() / seconds

        def draw(figure: Any) -> None:
            ax = figure.add_subplot()
            for state, label in (
                ("complete", "complete"),
                ("pruned", "pruned"),
                ("fail", "failed"),
            ):
                times = sorted(
                    elapsed(t.datetime_complete)  # type: ignore[arg-type]
                    for t in ended
                    if states[t.number] == state
                )
                if not times:
                    continue
                ax.step(
                    [0.0, *times],
                    range(len(times) + 1),
                    where="post",
                    color=COLORS[state],
                    label=label,
                )
            ax.axhline(record.n_trials, color="#555555", linestyle="--", label="budget (n_trials)")
            ax.set_xlabel(f"{unit} since the first trial started")
            ax.set_ylabel("trials (cumulative)")
            ax.set_ylim(bottom=0)
            ax.legend(loc="upper left")

        body += plot("budget", draw, (6.5, 3.0))
    reasons = Counter(
        str(TrialRecord.of(t).fail_reason or "no reason recorded")
        for t in trials
        if t.state == TrialState.FAIL
    )
    if reasons:
        body += para("Why trials failed:")
        body += table(
            ["reason", "trials"],
            [[esc(reason), str(n)] for reason, n in reasons.most_common(10)],
            "failures",
        )
    return section("budget", "How the budget was spent", body)
