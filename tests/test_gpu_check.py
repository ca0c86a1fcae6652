"""benchmarks/gpu_check.sh --dry-run: the GPU verification's every step, on the CPU with tiny
sizes, so that the script the device machine runs never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        cwd=ROOT,
        env=os.environ
        | {
            "OUT": str(tmp_path / "out"),
            "PYTHON": sys.executable,
            "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
        },
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
        "engines-scan",
        "profile",
        "profile-cnn",
        "tune",
    ):
        assert f"== {step} passed" in done.stdout
    # What comes back from the device: five files, each whole after every step.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "check.tar.gz",
        "device.txt",
        "inductor-cache.tar.gz",
        "results.md",
        "run.log",
    ]
    assert "torch" in (out / "device.txt").read_text()
    with tarfile.open(out / "inductor-cache.tar.gz") as tar:  # what the next call carries in
        assert any(m.isfile() for m in tar.getmembers())
    with tarfile.open(out / "check.tar.gz") as tar:
        logs = {
            Path(m.name).name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    assert "passed" in logs["equivalence.log"]
    run_log = (out / "run.log").read_text()
    assert all(f"== {step} passed" in run_log for step in ("equivalence", "tune"))
    results = (out / "results.md").read_text()
    engines = logs["engines.md"]
    for row in ("| textbook |", "| population P=3 compiled |", "| population P=3 bf16 |"):
        assert row in engines and row in results
    for net in ("layers-cnn", "plugin"):
        rows = logs[f"engines-{net}.md"]
        assert f"population, {net} on CPU" in rows and "| population P=2 |" in rows
    augment = logs["engines-augment.md"]
    assert "| population P=3 augmented |" in augment  # compiled too, on the device only
    assert "an epoch of population P=3 takes" in augment
    # The compiled engine's counters: built in the warm-up, nothing again while timed.
    counts = engines[engines.index("| engine | warm-up s | graphs | graph breaks |") :]
    compiled = next(line for line in counts.splitlines() if "population P=3 compiled" in line)
    cells = [cell.strip() for cell in compiled.split("|")[1:-1]]
    assert int(cells[2]) > 0 and cells[3:] == ["0", "0", "0", "0"], compiled  # one graph a step
    scan = logs["engines-scan.md"]
    assert "| population P=1 | 1 |" in scan and "| population P=2 | 2 |" in scan
    for profiled in ("profile.md", "profile-cnn.md"):
        assert "matrix products" in logs[profiled]
    log = logs["tune.log"]
    tuned = json.loads(log[log.index("{") : log.rindex("}") + 1])
    assert tuned["trials"] == {"complete": 2}
