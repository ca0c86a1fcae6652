"""benchmarks/gpu_check.sh --dry-run: the GPU verification's every step, on the CPU with tiny
sizes, so that the script the device machine runs never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        cwd=ROOT,
        env=os.environ | {"OUT": str(tmp_path), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for step in (
        "equivalence",
        "engines",
        "engines-layers-cnn",
        "engines-plugin",
        "engines-augment",
        "profile",
        "tune",
    ):
        assert f"== {step} passed" in done.stdout
    assert "passed" in (tmp_path / "equivalence.log").read_text()
    engines = (tmp_path / "engines.md").read_text()
    for row in ("| textbook |", "| population P=3 compiled |", "| population P=3 bf16 |"):
        assert row in engines
    for net in ("layers-cnn", "plugin"):
        rows = (tmp_path / f"engines-{net}.md").read_text()
        assert f"population, {net} on CPU" in rows and "| population P=2 |" in rows
    augment = (tmp_path / "engines-augment.md").read_text()
    assert "| population P=3 augmented |" in augment  # compiled too, on the device only
    assert "an epoch of population P=3 takes" in augment
    assert "matrix products" in (tmp_path / "profile.md").read_text()
    log = (tmp_path / "tune.log").read_text()
    tuned = json.loads(log[log.index("{") : log.rindex("}") + 1])
    assert tuned["trials"] == {"complete": 2}
