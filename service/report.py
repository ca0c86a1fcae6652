"""The study report (``GET /v1/studies/{id}/report``): one self-contained HTML page.

``render(record, trials)`` turns a study record and its Optuna trials into a page with the best
configuration, the CV table (per fold, mean ± std) and the test score, the best trial's
learning curves per fold, its diagnosis in words, parameter importance, the score against each
hyperparameter, and how the study spent its budget. The plots are matplotlib figures inlined
as SVG (Agg, text drawn as paths): the page has no script and refers to nothing outside
itself, so it can be saved, mailed and opened offline. Every string that comes from the user
(the study name, a failure message, a dataset name) is HTML-escaped.

Nothing here touches HTTP or the database: the router reads the record and the trials.
"""

from __future__ import annotations

import html
import io
import logging
import math
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from trainer import networks
from trainer.diagnosis import DIAGNOSES
from trainer.records import TrialRecord
from trainer.spec import stored_model

log = logging.getLogger("regtune.report")

# Hyperparameters read on a log axis even when searched on a linear range (λ, λ₁, η).
LOG_SCALE = ("weight_decay", "l1", "lr")
# fANOVA importance is estimated on at most this many completed trials (a seeded sample).
IMPORTANCE_TRIALS = 200
IMPORTANCE_STUDY = "regtune-report-importance"
# Above this many points a scatter is embedded as an image inside the SVG, not as markers.
RASTER_ABOVE = 2000
MAX_FOLD_PLOTS = 10
COLORS = {"complete": "#2a7ab0", "pruned": "#e0a030", "fail": "#c0392b", "best": "#d62728"}
# The budget plot's time axis: the first unit whose limit (in seconds) covers the study.
TIME_UNITS = (("seconds", 1.0, 180.0), ("minutes", 60.0, 180 * 60.0), ("hours", 3600.0, math.inf))
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "fail"}

# matplotlib's pyplot-free API is used, but rcParams and font caches are process-wide.
_matplotlib_lock = threading.Lock()
_RC: dict[str, Any] = {
    "svg.fonttype": "path",  # glyphs as paths: no font files, no font names to resolve
    "svg.hashsalt": "regtune-report",  # stable element ids, so the same study renders the same
    "svg.image_inline": True,  # a rasterized scatter becomes a data: URI, never a file
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
}


class _QuietImportanceStudy(logging.Filter):
    """Drop Optuna's INFO line for the throwaway in-memory study that importance needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return IMPORTANCE_STUDY not in record.getMessage()


logging.getLogger("optuna.storages._in_memory").addFilter(_QuietImportanceStudy())


class StudyLike(Protocol):
    """What the report reads of a study: ``service.tables.StudyRecord`` has all of it."""

    id: str
    name: str
    spec: dict[str, Any]
    status: str
    metric: str
    direction: str
    n_trials: int
    test_score: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# --- small formatting helpers -----------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number to 4 significant digits (ints and strings as they are), escaped."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return esc(value)
        return esc(f"{value:.4g}")
    if isinstance(value, list | tuple):
        return esc(", ".join(str(v) for v in value) or "none")
    return esc(value)


def percent(fraction: Any) -> str:
    return f"{100 * float(fraction):.3g} %" if isinstance(fraction, int | float) else "part"


def floats(values: Sequence[Any]) -> list[float]:
    """A stored curve as numbers: a missing (None) or non-numeric point becomes NaN, a gap."""
    out = []
    for value in values:
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            out.append(math.nan)
    return out


def table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table from cells that are already HTML (escape before passing them in)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def para(text: str) -> str:
    return f"<p>{text}</p>"


# --- SVG from matplotlib ----------------------------------------------------------------------

_XML_DECLARATION = re.compile(r"<\?xml[^>]*\?>\s*")
_DOCTYPE = re.compile(r"<!DOCTYPE[^>]*>\s*", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->\s*", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_ID = re.compile(r'\bid="([^"]+)"')


def inline_svg(figure: Any, prefix: str) -> str:
    """The figure as an ``<svg>`` element for an HTML page.

    Dropped: the XML declaration and DOCTYPE (which name w3.org), metadata, comments (which
    repeat each label's text) and the namespace declarations, which HTML's parser does not
    need. Element ids get ``prefix`` so that several plots on one page cannot collide, and
    ``xlink:href`` becomes SVG 2's plain ``href``.
    """
    buffer = io.StringIO()
    figure.savefig(
        buffer,
        format="svg",
        bbox_inches="tight",
        metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
    )
    svg = buffer.getvalue()
    for pattern in (_XML_DECLARATION, _DOCTYPE, _COMMENT, _METADATA, _XMLNS):
        svg = pattern.sub("", svg)
    ids = set(_ID.findall(svg))
    svg = svg.replace("xlink:href=", "href=")

    def renamed(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}" if name in ids else match.group(0)

    seen: Counter[str] = Counter()

    def declared(match: re.Match[str]) -> str:
        # matplotlib names equal images alike: a repeat gets a suffix (references reach the first).
        name = match.group(2)
        seen[name] += 1
        suffix = f"-{seen[name]}" if seen[name] > 1 else ""
        return f"{match.group(1)}{prefix}-{name}{suffix}"

    svg = re.sub(r'(\bid=")([^"]+)', declared, svg)
    svg = re.sub(r'(\bhref="#)([^"]+)', renamed, svg)
    svg = re.sub(r"(url\(#)([^)]+)", renamed, svg)
    # Shrinks with a narrow page (CSS max-width); the viewBox keeps the proportions.
    svg = svg.replace("<svg ", '<svg class="plot" role="img" ', 1)
    return svg.strip()


def plot(prefix: str, draw: Callable[[Any], None], size: tuple[float, float]) -> str:
    """Draw on a fresh matplotlib Figure (no pyplot state) and inline it as SVG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with _matplotlib_lock, matplotlib.rc_context(_RC):  # type: ignore[arg-type]  # str keys
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        return inline_svg(figure, prefix)


# --- reading the trials -----------------------------------------------------------------------


def finished(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state in STATES]


def completed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]


def best_of(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best completed trial (the lowest number among equals), as the status endpoint."""
    done = completed(trials)
    if not done:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(done, key=lambda t: (sign * float(t.value or 0.0), t.number))


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Failed trials whose parameters were re-queued (a worker died): they cost no budget."""
    return {
        int(t.system_attrs["failed_trial"])
        for t in trials
        if isinstance(t.system_attrs.get("failed_trial"), int)
    }


def metric_label(record: StudyLike) -> str:
    better = "higher" if record.direction == "maximize" else "lower"
    return f"{record.metric} ({better} is better)"


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
    counts = Counter(STATES.get(t.state, t.state.name.lower()) for t in trials)
    facts = [
        ("Study", f"{esc(record.name)} <code>{esc(record.id)}</code>"),
        ("Status", f'<span class="status">{esc(record.status)}</span>'),
        ("Dataset", f"<code>{esc(spec.get('dataset', '?'))}</code>"),
        ("Network", esc(networks.summary(stored_model(spec)))),
        ("Objective", esc(metric_label(record))),
        ("Cross-validation", f"{esc(cv.get('folds', '?'))} folds"),
        (
            "Trials",
            f"{len(finished(trials))} finished of {esc(record.n_trials)} "
            f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"
            + (f", {counts['running']} running" if counts["running"] else "")
            + ")",
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
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if moment is not None else "—"


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
        rows.append([f"<code>{esc(name)}</code>", fmt(value), origin])
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
    body = para(
        f"Trial <b>#{best.number}</b> scored <b>{fmt(best.value)}</b> {esc(record.metric)} "
        "(mean over the folds). Its hyperparameters, those the search chose and those fixed by "
        "the spec:"
    )
    body += table(["hyperparameter", "value", ""], rows, "config")
    if extra:
        body += para("; ".join(extra) + ".")
    return section("best-configuration", "Best configuration", body)


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
                fmt(score),
                fmt(epochs[k] + 1) if k < len(epochs) else "—",
                esc(diagnoses[k]) if k < len(diagnoses) else "—",
            ]
        )
    mean = float(np.mean(scores)) if scores else best.value
    std = recorded.cv_std
    std = float(std if std is not None else (np.std(scores) if scores else float("nan")))
    rows.append(
        [
            "<b>mean ± std</b>",
            f'<b class="cv-mean">{fmt(mean)} ± {fmt(std)}</b>',
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


def test_sentence(record: StudyLike, mean: float | None, std: float | None) -> str:
    test_fraction = ((record.spec or {}).get("cv") or {}).get("test_fraction")
    if record.test_score is not None:
        text = (
            f'Test score: <b id="test-score">{fmt(record.test_score)}</b> {esc(record.metric)} '
            "— the best configuration retrained on every non-test row and scored once on the "
            f"held-out test split ({percent(test_fraction)} of the data) that no trial has seen."
        )
        if mean is not None and std is not None and math.isfinite(std):
            gap = record.test_score - mean
            better = gap > 0 if record.direction == "maximize" else gap < 0
            if abs(gap) <= 2 * std + 1e-12:
                text += (
                    " It lies within two fold standard deviations of the CV mean: consistent "
                    "with the CV estimate."
                )
            elif better:
                text += (
                    f" It is {fmt(abs(gap))} better than the CV mean, more than two fold "
                    "standard deviations: the final model trained on more rows than any fold "
                    "did, and a small test split varies too."
                )
            else:
                text += (
                    f" It is {fmt(abs(gap))} worse than the CV mean, more than two fold standard "
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

    def draw(figure: Any) -> None:
        axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
        for k in range(rows * columns):
            ax = axes[k // columns][k % columns]
            if k >= folds:
                ax.set_visible(False)
                continue
            x = np.arange(1, len(train[k]) + 1)
            ax.plot(x, floats(train[k]), color="#2a7ab0", label="training loss")
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
    if len(train) > MAX_FOLD_PLOTS:
        body += para(f"The first {MAX_FOLD_PLOTS} of {len(train)} folds are shown.")
    return section("learning-curves", "Learning curves of the best trial", body + svg)


# What each reading means and what to try; the rules are in trainer/diagnosis.py.
MEANINGS = {
    "over-fitting": (
        "After its best epoch the validation loss rose by more than 10 % while the training "
        "loss kept falling: the network starts to learn the noise of its training rows.",
        "more regularization: a larger weight decay λ, more dropout, some L1, or a smaller "
        "patience so that early stopping cuts in sooner; a smaller network also helps.",
    ),
    "under-fitting": (
        "Even on the rows it trains on, the loss stayed above half of the trivial predictor's "
        "(class prior or target mean): the model is too constrained to fit the data.",
        "less regularization: a smaller λ, λ₁ or dropout, a larger network, a higher learning "
        "rate, or more epochs.",
    ),
    "still improving": (
        "The best validation loss came within the last epochs and was still falling when the "
        "fold ran out of epochs: training stopped before it had converged.",
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


def importances(
    record: StudyLike, done: Sequence[FrozenTrial]
) -> dict[str, dict[str, float]] | str:
    """Each evaluator's importances of the varying parameters (``{evaluator: {name: share}}``,
    fANOVA's order), or a sentence saying why there are none."""
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
    direction = optuna.study.StudyDirection[record.direction.upper()]
    storage.create_new_study([direction], IMPORTANCE_STUDY)
    study = optuna.Study(IMPORTANCE_STUDY, storage)
    study.add_trials(sample)
    try:
        results = {e: evaluate(study, names, e) for e in EVALUATORS}
    except Exception as exc:  # an evaluator's failure must not cost the whole report
        return f"Parameter importance could not be computed: {esc(exc)}"
    order = list(results["fANOVA"])
    return {e: {n: float(r[n]) for n in order} for e, r in results.items()}


def importance_section(record: StudyLike, done: Sequence[FrozenTrial]) -> str:
    result = importances(record, done)
    title = "Parameter importance"
    if isinstance(result, str):
        return section("importance", title, para(result))
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

    svg = plot("importance", draw, (6.0, 0.6 * len(names) + 1.2))
    rows = [
        [f"<code>{esc(n)}</code>", *(f"{100 * result[e][n]:.1f} %" for e in EVALUATORS)]
        for n in names
    ]
    counted = f"the {len(done)} completed trials"
    if len(done) > IMPORTANCE_TRIALS:
        counted = f"a random sample of {IMPORTANCE_TRIALS} of the {len(done)} completed trials"
    body = para(
        f"How much the score over {counted} depends on each hyperparameter, by two estimators: "
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
    return section("importance", title, body + svg)


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


def budget_section(record: StudyLike, trials: Sequence[FrozenTrial]) -> str:
    retried = retried_numbers(trials)
    ended = [t for t in finished(trials) if t.datetime_complete is not None]
    counts = Counter(STATES[t.state] for t in finished(trials))
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    rows = [
        ["complete", str(counts["complete"])],
        ["pruned", str(counts["pruned"])],
        ["failed", str(counts["fail"])],
    ]
    if retried:
        rows.append(["failed, then re-queued (a worker died)", str(len(retried))])
    if running or waiting:
        rows.append(["running", str(running)])
        rows.append(["queued", str(waiting)])
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
                    if STATES[t.state] == state
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


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.2rem .7rem;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}thead th{border-bottom:2px solid #ccc}
code{background:#f4f4f4;padding:0 .2rem;border-radius:3px}
.note{background:#fff6dd;border-left:4px solid #e0a030;padding:.5rem .8rem}
.empty{background:#fdecea;border-left:4px solid #c0392b;padding:.5rem .8rem}
svg.plot{max-width:100%;height:auto;display:block;margin:.5rem 0}
footer{margin-top:3rem;color:#777;font-size:.85rem}
"""


def guarded(anchor: str, build: Callable[..., str], *args: Any) -> str:
    """One section; if it cannot be built (odd stored data), a line says so and the rest stands."""
    try:
        return build(*args)
    except Exception as exc:
        log.exception("report section %r failed", anchor)
        return section(
            anchor,
            anchor.replace("-", " ").capitalize(),
            para(f"This section could not be rendered ({esc(type(exc).__name__)}: {esc(exc)})."),
        )


def render(
    record: StudyLike, trials: Sequence[FrozenTrial], *, generated_at: datetime | None = None
) -> str:
    """The whole report as one HTML document (UTF-8, no script, no external reference)."""
    trials = sorted(trials, key=lambda t: t.number)
    done = completed(trials)
    best = best_of(trials, record.direction)
    parts = [header(record, trials)]
    if best is None:
        states = Counter(STATES.get(t.state, "other") for t in finished(trials))
        parts.append(
            section(
                "no-completed-trial",
                "No completed trial yet",
                f'<p class="empty">No trial of this study has completed, so there is no best '
                f"configuration, CV table or learning curve to show yet ({states['pruned']} "
                f"pruned, {states['fail']} failed so far).</p>",
            )
        )
    else:
        parts += [
            guarded("best-configuration", best_configuration, record, best),
            guarded("cross-validation", cv_table, record, best),
            guarded("learning-curves", learning_curves, best),
            guarded("diagnosis", diagnosis, record, best, done),
            guarded("importance", importance_section, record, done),
            guarded("scores", score_section, record, done, best),
        ]
    parts.append(guarded("budget", budget_section, record, trials))
    when = (generated_at or datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M:%S %Z")
    parts.append(f"<footer>Generated by regtune at {esc(when.strip())}.</footer>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>regtune report: {esc(record.name)}</title><style>{STYLE}</style></head>\n"
        "<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
