"""``regtune tune`` as a user runs it: a real subprocess, a real SQLite storage."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from servers import children_of

pytestmark = pytest.mark.slow

REGTUNE = [sys.executable, "-m", "service"]


def regtune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "120"}
    return subprocess.run(
        [*REGTUNE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_tune_json_and_storage(tmp_path: Path) -> None:
    spec = {
        "name": "wine-cli",
        "dataset": "builtin:wine",
        "n_trials": 5,
        "model": {"hidden": [16]},
        "training": {"max_epochs": 50},
        "cv": {"folds": 4, "test_fraction": 0.2},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    # The flags override the spec file: 2 trials, 3 folds, 3 epochs.
    done = regtune(
        "tune",
        "--spec",
        "spec.json",
        "--trials",
        "2",
        "--folds",
        "3",
        "--max-epochs",
        "3",
        "--storage",
        storage,
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["study"] == "wine-cli" and summary["metric"] == "accuracy"
    assert summary["trials"] == {"complete": 2}
    best = summary["best"]
    assert len(best["fold_scores"]) == 3 and all(e < 3 for e in best["best_epochs"])
    assert 0 <= summary["test_score"] <= 1
    study = optuna.load_study(study_name="wine-cli", storage=storage)
    assert len(study.trials) == 2
    assert study.best_value == best["value"]
    assert study.user_attrs["test_score"] == summary["test_score"]


def test_tune_prints_a_result_table(tmp_path: Path) -> None:
    done = regtune(
        "tune",
        "--dataset",
        "builtin:wine",
        "--trials",
        "3",
        "--folds",
        "2",
        "--max-epochs",
        "2",
        "--population",
        "3",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for row in (
        "CV accuracy",
        "per fold",
        "weight_decay",
        "dropout",
        "bn_momentum",
        "patience",
        "diagnosis",
    ):
        assert row in done.stdout


def test_tune_names_the_bad_field(tmp_path: Path) -> None:
    done = regtune("tune", "--dataset", "builtin:wine", "--folds", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert "cv.folds" in done.stderr and "greater than or equal to 2" in done.stderr


def test_tune_reports_dataset_problems(tmp_path: Path) -> None:
    (tmp_path / "tiny.csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n")
    done = regtune("tune", "--dataset", "tiny.csv", "--target", "y", cwd=tmp_path)
    assert done.returncode == 2
    assert "class 0 has 2 samples; 5-fold stratified CV needs at least 5" in done.stderr


def test_tune_searches_with_a_process_per_core_over_one_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    done = regtune(
        "tune",
        "--dataset",
        "builtin:wine",
        "--trials",
        "6",
        "--folds",
        "2",
        "--max-epochs",
        "15",
        "--processes",
        "2",
        "--storage",
        storage,
        "--study-name",
        "two",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    # The median pruner may stop one: which trials finish first depends on the two processes.
    counts = json.loads(done.stdout)["trials"]
    assert set(counts) <= {"complete", "pruned"} and sum(counts.values()) == 6, counts
    assert counts["complete"] >= 1
    trials = optuna.load_study(study_name="two", storage=storage).trials
    assert len(trials) == 6 and len({t.params["weight_decay"] for t in trials}) == 6
    # One trial at a time per process (P = 1 on a CPU): overlapping trials mean two processes.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_a_killed_tune_leaves_no_searcher_behind(tmp_path: Path) -> None:

    parent = subprocess.Popen(
        [*REGTUNE, "tune", "--dataset", "builtin:digits", "--trials", "50", "--processes", "2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(children := children_of(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children) >= 2
        time.sleep(3)  # the searchers are training
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    def alive(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.split(") ", 1)[1][0] != "Z"  # a zombie has exited

    deadline = time.monotonic() + 10
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(c) for c in children)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_tune_off_a_terminal_prints_a_line_per_change(tmp_path: Path, processes: str) -> None:
    """Searched in this process or by two searchers, the progress reads as ``submit --wait``'s:
    done out of the budget, counts by state, best and ETA; and the result table's title keeps
    a study's long name whole."""
    name = "wine-" + "0123456789abcdef" * 4  # longer than the table is wide
    done = regtune(
        "tune",
        "--dataset",
        "builtin:wine",
        "--trials",
        "2",
        "--folds",
        "2",
        "--max-epochs",
        "2",
        "--processes",
        processes,
        "--study-name",
        name,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    shown = re.compile(
        r"tuning: (\d)/2 trials done \((\d) complete, (\d) pruned, (\d) fail, (\d) running\), "
        r"(no best yet|best [01]\.\d{4})(, ETA \S+)?"
    )
    lines = done.stderr.splitlines()
    assert lines and all(shown.fullmatch(line) for line in lines), done.stderr
    assert all(a != b for a, b in itertools.pairwise(lines))  # a line per change, no repeats
    assert lines[-1].startswith("tuning: 2/2 trials done (2 complete, 0 pruned, 0 fail, 0 ")
    assert f"study {name}: best of 2 trials" in done.stdout.splitlines()[0], done.stdout
