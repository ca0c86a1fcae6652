"""The study report: rendered from a real study in-process, and served by a live ``regtune serve``.

Checked: every section with its content (best configuration, per-fold CV table with mean ± std
and the test score, learning curves, diagnosis in words, importance, score per hyperparameter,
budget), one inline SVG per plot, no script and no reference outside the page, escaping of the
user's strings, and the pages for a study in progress or without a completed trial.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from servers import regtune, serving, tiny_study, wait_status

from service.http import report
from service.http.report import sections
from service.http.report.importance import varying_params
from service.store.tables import StudyRecord
from trainer.specs.study_spec import StudySpec
from trainer.tuning.study import StudyOutcome, run_study

NAME = '<script>alert("x")</script> & co'
SECTIONS = {
    "best-configuration": "Best configuration",
    "cross-validation": "Cross-validation and test score",
    "learning-curves": "Learning curves of the best trial",
    "diagnosis": "Diagnosis: over- or under-fitting?",
    "importance": "Parameter importance",
    "scores": "Score against each hyperparameter",
    "budget": "How the budget was spent",
}
PLOTTED = ("learning-curves", "importance", "scores", "budget")
# Anything a browser could fetch: a URL, a protocol-relative reference, a script, a stylesheet
# or image by address, CSS url() or @import, a link to anything but a fragment of the page.
EXTERNAL = re.compile(
    r"https?:|//|<script|\bsrc\s*=|<link\b|@import|url\(\s*(?!['\"]?#)|href\s*=\s*(?!['\"]?#)",
    re.IGNORECASE,
)
# An image inlined in the page itself (a crowded scatter): part of the page, not a reference.
INLINE_IMAGE = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=\s]+(?=\")")


def record_of(spec: StudySpec, outcome: StudyOutcome | None, **fields: Any) -> StudyRecord:
    """A study record as the service stores it (not added to any database)."""
    values: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef",
        "tenant": "open",
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        "status": "completed",
        "optuna_name": "regtune-test",
        "metric": outcome.metric if outcome else "accuracy",
        "direction": "maximize",
        "n_trials": spec.n_trials,
        "test_score": outcome.test_score if outcome else None,
        "error": None,
        "created_at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "started_at": datetime(2024, 1, 2, 3, 4, 6, tzinfo=UTC),
        "finished_at": datetime(2024, 1, 2, 3, 5, 0, tzinfo=UTC),
    }
    return StudyRecord(**(values | fields))


def section_of(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no section {anchor!r}"
    return match.group(1)


def assert_self_contained(page: str) -> None:
    found = EXTERNAL.findall(INLINE_IMAGE.sub("#inline-image", page))
    assert not found, found[:5]
    for svg in re.findall(r"<svg\b.*?</svg>", page, re.DOTALL):
        ET.fromstring(svg)  # each plot is well-formed on its own
    ids = re.findall(r'\bid="([^"]+)"', page)
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, sorted(duplicates)[:5]  # plots' element ids cannot collide


@pytest.fixture(scope="module")
def study(wine) -> tuple[StudySpec, StudyOutcome]:
    spec = StudySpec.model_validate(
        {
            "name": NAME,
            "dataset": "builtin:wine",
            "n_trials": 5,
            "seed": 0,
            "model": {"hidden": [16]},
            "training": {"max_epochs": 6},
            "cv": {"folds": 3, "test_fraction": 0.2},
            "pruner": {"kind": "none"},
        }
    )
    return spec, run_study(spec, wine)


@pytest.fixture(scope="module")
def page(study: tuple[StudySpec, StudyOutcome]) -> str:
    spec, outcome = study
    return report.render(record_of(spec, outcome), outcome.study.trials)


def test_the_report_has_every_section_with_its_content(
    study: tuple[StudySpec, StudyOutcome], page: str
) -> None:
    _, outcome = study
    best = outcome.best
    assert best is not None and outcome.test_score is not None
    assert page.startswith("<!DOCTYPE html>")
    for anchor, title in SECTIONS.items():
        assert f"<h2>{report.esc(title)}</h2>" in section_of(page, anchor)
    assert 'id="in-progress"' not in page  # the study has finished
    # Best configuration: each searched value, and the fixed ones from the spec.
    config = section_of(page, "best-configuration")
    assert f"Trial <b>#{best.number}</b>" in config
    for name, value in best.params.items():
        assert f"<td><code>{name}</code></td><td>{report.shown(value)}</td><td>searched" in config
    assert "<td><code>lr</code></td><td>0.001</td><td>fixed" in config
    # CV table: a row per fold, mean ± std, the test score.
    cv = section_of(page, "cross-validation")
    scores = best.user_attrs["fold_scores"]
    for k, (score, epoch) in enumerate(zip(scores, best.user_attrs["best_epochs"], strict=True)):
        assert f"<td>fold {k + 1}</td><td>{report.shown(score)}</td><td>{epoch + 1}</td>" in cv
    mean_std = f"{best.value:.4g} ± {best.user_attrs['cv_std']:.4g}"
    assert f'<b class="cv-mean">{mean_std}</b>' in cv
    assert f'<b id="test-score">{outcome.test_score:.4g}</b>' in cv
    # One inline SVG per plot.
    for anchor in PLOTTED:
        assert section_of(page, anchor).count("<svg ") == 1, anchor
    assert page.count("<svg ") == len(PLOTTED)
    # The diagnosis in words: what the reading means, and what to try.
    words = section_of(page, "diagnosis")
    reading = best.user_attrs["diagnosis"]
    meaning, advice = report.MEANINGS[reading]
    assert f'<b class="diagnosis">{reading}</b>' in words
    assert report.esc(meaning) in words and report.esc(advice) in words
    assert "Per fold:" in words
    # Importance: every searched parameter, as a share in percent by each evaluator, named;
    # a handful of trials is said to be too few for a stable ranking.
    importance = section_of(page, "importance")
    share = r"<td>\d+(\.\d)? %</td>"
    for name in best.params:
        assert re.search(rf"<td><code>{name}</code></td>{share}{share}", importance), name
    assert "<th>fANOVA</th><th>PED-ANOVA</th>" in importance
    n_done = sum(t.state.name == "COMPLETE" for t in outcome.study.trials)
    assert ("Not a stable ranking yet" in importance) == (n_done < 10 * len(best.params))
    # Budget: the state counts.
    assert f"<td>complete</td><td>{len(outcome.study.trials)}</td>" in section_of(page, "budget")


def test_the_report_refers_to_nothing_outside_itself(page: str) -> None:
    assert_self_contained(page)
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()


def test_user_strings_are_escaped(page: str) -> None:
    assert NAME not in page and "<script>alert" not in page
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"
    assert f"<title>regtune report: {escaped}</title>" in page
    assert f"<h1>Regularization study: {escaped}</h1>" in page


def test_lambda_is_read_on_a_log_axis() -> None:
    linear = FloatDistribution(0.0, 0.1)
    assert report.axis_scale("weight_decay", FloatDistribution(1e-6, 0.1, log=True), [1e-3]) == (
        "log"
    )
    assert report.axis_scale("weight_decay", linear, [1e-4, 1e-2]) == "log"
    assert report.axis_scale("l1", linear, [0.0, 1e-4]) == "symlog"  # 0 has no logarithm
    assert report.axis_scale("dropout", FloatDistribution(0.0, 0.7), [0.1]) == "linear"


# --- studies in progress, without a completed trial, with one ----------------------------------

SPACE = {"weight_decay": FloatDistribution(1e-6, 0.1, log=True), "patience": IntDistribution(2, 20)}


def made_trial(state: TrialState, value: float | None, **user_attrs: Any) -> FrozenTrial:
    return create_trial(
        state=state,
        value=value,
        params={"weight_decay": 1e-3, "patience": 5},
        distributions=SPACE,
        user_attrs=user_attrs,
    )


def numbered(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    for number, trial in enumerate(trials):
        trial.number = number
    return trials


@pytest.fixture
def spec() -> StudySpec:
    return StudySpec.model_validate({"name": "partial", "dataset": "builtin:wine", "n_trials": 10})


def test_a_study_without_a_completed_trial_says_so(spec: StudySpec) -> None:
    trials = numbered(
        [
            made_trial(TrialState.PRUNED, None),
            made_trial(TrialState.FAIL, None, fail_reason="fold 0 diverged at epoch 3"),
            create_trial(state=TrialState.RUNNING),
        ]
    )
    page = report.render(record_of(spec, None, status="running", finished_at=None), trials)
    assert 'id="no-completed-trial"' in page
    assert "No trial of this study has completed" in page
    assert "(0 complete, 1 pruned, 1 failed, 1 running so far)" in page
    assert 'id="in-progress"' in page and "still running" in page
    assert "fold 0 diverged at epoch 3" in section_of(page, "budget")
    assert "best-configuration" not in page
    assert_self_contained(page)
    # Nothing at all yet: a queued study.
    empty = report.render(record_of(spec, None, status="queued", finished_at=None), [])
    assert "No trial of this study has completed" in empty and "queued" in empty
    assert_self_contained(empty)


def test_a_running_study_with_one_completed_trial_renders_what_exists(spec: StudySpec) -> None:
    curves = {
        "fold_scores": [0.9, 0.8],
        "cv_std": 0.05,
        "best_epochs": [2, 3],
        "train_loss": [[1.0, 0.5, 0.3, 0.2], [1.0, 0.6, 0.4, 0.3]],
        "val_loss": [[1.1, 0.7, 0.5, 0.6], [1.1, 0.8, 0.6, 0.55]],
        "fold_diagnoses": ["over-fitting", "converged"],
        "diagnosis": "over-fitting",
        "config": {"weight_decay": 1e-3, "patience": 5, "lr": 0.01},
    }
    trials = numbered(
        [made_trial(TrialState.COMPLETE, 0.85, **curves), create_trial(state=TrialState.RUNNING)]
    )
    held_out = spec.model_copy(update={"cv": spec.cv.model_copy(update={"test_fraction": 0.2})})
    record = record_of(held_out, None, status="running", finished_at=None, test_score=None)
    page = report.render(record, trials)
    assert 'id="in-progress"' in page
    assert "<td>fold 2</td><td>0.8</td><td>4</td><td>converged</td>" in page
    assert '<b class="cv-mean">0.85 ± 0.05</b>' in page
    assert "computed once the search has finished" in page  # no test split scored yet
    words = section_of(page, "diagnosis")
    assert "weight decay λ, more dropout" in words  # over-fitting → more regularization
    assert "Folds reading <i>converged</i>" in words  # the fold that disagrees
    assert "at least two completed trials" in section_of(page, "importance")
    assert "<svg " in section_of(page, "learning-curves")
    assert_self_contained(page)


def test_importance_with_a_single_varying_parameter_is_a_sentence(spec: StudySpec) -> None:
    trials = []
    for k, wd in enumerate([1e-4, 1e-3, 1e-2]):
        trials.append(
            create_trial(
                value=0.8 + 0.01 * k,
                params={"weight_decay": wd, "patience": 5},
                distributions=SPACE,
            )
        )
    page = report.render(record_of(spec, None), numbered(trials))
    assert "Only <code>weight_decay</code> varied" in section_of(page, "importance")
    assert "no held-out test split" in page  # the spec has no test_fraction
    assert_self_contained(page)


def test_a_searched_max_norm_is_explained_and_plotted(spec: StudySpec) -> None:
    space = SPACE | {"max_norm": FloatDistribution(0.5, 10, log=True)}
    trials = [
        create_trial(
            value=0.8 + 0.01 * k,
            params={"weight_decay": wd, "patience": 5, "max_norm": c},
            distributions=space,
            user_attrs={"config": {"weight_decay": wd, "patience": 5, "max_norm": c}},
        )
        for k, (wd, c) in enumerate([(1e-4, 0.7), (1e-3, 3.5), (1e-2, 1.25)])
    ]
    page = report.render(record_of(spec, None), numbered(trials))
    config = section_of(page, "best-configuration")
    assert "<td><code>max_norm</code></td><td>1.25</td><td>searched" in config
    assert "max-norm c = 1.25 (the search chose it)" in config
    assert "rescaled to norm ≤ c" in config
    # A panel of its own in the score plots, as every searched parameter has.
    assert varying_params(trials) == ["max_norm", "weight_decay"]
    assert len(set(re.findall(r'id="scores-axes_\d+"', section_of(page, "scores")))) == 2
    assert_self_contained(page)


def test_crowded_scatters_are_inlined_as_images(
    spec: StudySpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sections, "RASTER_ABOVE", 2)  # thousands of trials, in miniature
    trials = [
        create_trial(
            value=0.8 + 0.01 * k,
            params={"weight_decay": wd, "patience": 3 + k},
            distributions=SPACE,
        )
        for k, wd in enumerate([1e-4, 1e-3, 1e-2])
    ]
    page = report.render(record_of(spec, None), numbered(trials))
    assert section_of(page, "scores").count('<image href="data:image/png;base64,') == 2
    assert_self_contained(page)


def test_odd_stored_attributes_cost_one_section_not_the_page(spec: StudySpec) -> None:
    broken = made_trial(TrialState.COMPLETE, 0.9, fold_scores=["not a number"], cv_std=None)
    page = report.render(record_of(spec, None), numbered([broken]))
    assert "could not be rendered (ValueError" in section_of(page, "cross-validation")
    assert "<h2>Best configuration</h2>" in page and "<h2>How the budget was spent</h2>" in page
    assert_self_contained(page)


def test_trials_with_retries_are_counted_once(spec: StudySpec) -> None:
    failed = made_trial(TrialState.FAIL, None, fail_reason="worker died")
    rerun = create_trial(
        value=0.9,
        params={"weight_decay": 1e-3, "patience": 5},
        distributions=SPACE,
        system_attrs={"failed_trial": 0, "retry_history": [0]},  # as Optuna's retry writes them
    )
    page = report.render(record_of(spec, None), numbered([failed, rerun]))
    assert "<td>failed, then run again (its worker stopped)</td><td>1</td>" in page
    assert "<td>failed</td><td>0</td>" in page
    assert "1 finished of 10 (1 complete, 0 pruned, 0 failed, 1 retried" in page


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'regtune.db'}"
    tokens = {
        name: regtune("token", "create", name, "--tenant", name, database_url=url).stdout.strip()
        for name in ("alice", "bob")
    }
    with serving(url, root / "serve.log", workers=1) as server:
        yield server, tokens
    assert "Traceback" not in (root / "serve.log").read_text()


def test_the_report_is_served_as_one_self_contained_page(
    tenants: tuple[Any, dict[str, str]],
) -> None:
    server, tokens = tenants
    spec = tiny_study(name=NAME, cv={"folds": 3, "test_fraction": 0.2})
    with server.client(tokens["alice"]) as alice, server.client(tokens["bob"]) as bob:
        created = alice.post("/v1/studies", json=spec)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        early = alice.get(f"/v1/studies/{study_id}/report")  # queued or running: still a page
        assert early.status_code == 200 and "<h1>" in early.text
        done = wait_status(alice, study_id, ("completed", "failed"), timeout=120)
        assert done["status"] == "completed", done
        response = alice.get(f"/v1/studies/{study_id}/report")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        page = response.text
        for anchor in SECTIONS:
            assert f'<section id="{anchor}">' in page, anchor
        assert f'<b id="test-score">{done["test_score"]:.4g}</b>' in page
        assert f'<b class="cv-mean">{done["best"]["value"]:.4g} ±' in page
        assert "&lt;script&gt;alert" in page and "<script" not in page
        assert_self_contained(page)
        # Another tenant's study and an unknown id are not found; no token is refused.
        for other in (bob.get(f"/v1/studies/{study_id}/report"), alice.get("/v1/studies/x/report")):
            assert other.status_code == 404
            assert other.json()["detail"].endswith("not found")
    with server.client() as anonymous:
        assert anonymous.get(f"/v1/studies/{study_id}/report").status_code == 401
    with server.client() as anonymous:
        document = anonymous.get("/openapi.json").json()
    operation = document["paths"]["/v1/studies/{study_id}/report"]["get"]
    assert "text/html" in operation["responses"]["200"]["content"]
    assert {"401", "404"} <= set(operation["responses"])
    assert "application/json" in operation["responses"]["404"]["content"]  # errors stay JSON


def test_curves_under_mixup_say_the_training_loss_is_against_mixed_targets(
    spec: StudySpec,
) -> None:
    def best_with(config: dict[str, float]) -> str:
        curves = {"train_loss": [[1.0, 0.9]], "val_loss": [[1.1, 1.0]], "best_epochs": [1]}
        trial = create_trial(
            value=0.8,
            params={"weight_decay": 1e-3, "patience": 5},
            distributions=SPACE,
            user_attrs={"config": {"weight_decay": 1e-3} | config} | curves,
        )
        page = report.render(record_of(spec, None), numbered([trial]))
        return section_of(page, "learning-curves")

    # (the plot's legend is drawn as glyphs: the paragraph is what a test can read)
    assert "This trial trained with mixup: its training loss is the loss against" in best_with(
        {"augment.mixup": 0.2}
    )
    assert "trained with mixup" not in best_with({})


def test_the_best_configurations_augmentations_are_explained(spec: StudySpec) -> None:
    space = SPACE | {"augment.noise": FloatDistribution(0.0, 0.5)}
    fixed = {"augment.rotate": 15.0, "augment.mixup": 0.2}
    trials = [
        create_trial(
            value=0.8 + 0.01 * k,
            params={"weight_decay": 1e-3, "patience": 5, "augment.noise": sigma},
            distributions=space,
            user_attrs={"config": {"weight_decay": 1e-3, "augment.noise": sigma} | fixed},
        )
        for k, sigma in enumerate([0.1, 0.25])
    ]
    config = section_of(
        report.render(record_of(spec, None), numbered(trials)), "best-configuration"
    )
    assert "<td><code>augment.noise</code></td><td>0.25</td><td>searched" in config
    assert "of the training rows only (never the validation, scored or test rows)" in config
    assert "<code>augment.noise</code> = 0.25 (searched): Gaussian noise of σ = 0.25" in config
    assert "<code>augment.mixup</code> = 0.2 (fixed): pairs of rows of a batch mixed" in config
    assert "rotated by a random angle within ±15°" in config
    assert "augment.flip" not in config
    plain = [
        create_trial(value=0.8, params={"weight_decay": 1e-3, "patience": 5}, distributions=SPACE)
    ]
    assert "Data augmentation" not in report.render(record_of(spec, None), numbered(plain))
