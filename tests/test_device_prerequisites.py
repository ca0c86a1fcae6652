"""What the device machine lacks must not stop its run: psycopg (the device tests collect
through conftest) and git (the benchmarks name the commit they measured); and its minutes go
to the tests that use the device, which end by showing how near their tolerances they came."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_test_helpers_import_without_psycopg() -> None:
    # None in sys.modules makes `import psycopg` raise ImportError, as on the device image.
    done = python(
        "import sys; sys.modules['psycopg'] = None; sys.path.insert(0, 'tests'); "
        "import conftest, servers; print('collected')"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "collected"


def test_the_benchmarks_name_their_commit_without_git(tmp_path: Path) -> None:
    code = "import sys; sys.path.insert(0, 'benchmarks'); import provenance; "
    code += "print(provenance.git_commit())"
    # PATH without git (the interpreter is called by its full path).
    no_git = python(code, PATH=str(tmp_path), REGTUNE_COMMIT="abc1234")
    assert no_git.returncode == 0, no_git.stderr
    assert no_git.stdout.strip() == "abc1234"
    assert python(code, PATH=str(tmp_path)).stdout.strip() == "unknown"


def test_a_named_device_selects_the_tests_that_use_it_and_shows_their_differences() -> None:
    files = ["tests/test_networks.py", "tests/test_population.py", "tests/test_compiled.py"]
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *files]
    collected = subprocess.run(
        [*pytest, "--collect-only"],
        cwd=ROOT,
        env=os.environ | {"REGTUNE_TEST_DEVICE": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    tests = {line.split("::")[0] for line in collected.splitlines() if "::" in line}
    # test_compiled trains on the CPU whatever the device; the others through DEVICE, some
    # directly, some through their module's helpers (test_population's differential tests).
    assert tests == {"tests/test_networks.py", "tests/test_population.py"}, collected
    assert "test_every_layer_runs_stacked_as_its_torch_module" in collected
    assert "test_out_of_memory_halves_the_population" not in collected  # no DEVICE there
    ran = subprocess.run(
        [*pytest, "-k", "layer_runs"],
        cwd=ROOT,
        env=os.environ | {"REGTUNE_TEST_DEVICE": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout[-2000:]
    lines = ran.stdout.splitlines()
    first = lines.index("largest differences on cpu (absolute, relative, test):")
    worst = lines[first + 1].split()
    assert float(worst[0]) < 1e-4 and "test_every_layer_runs_stacked" in worst[2]


def test_a_gpu_study_gets_tf32_and_cudnn_algorithm_search() -> None:
    """Flags only (no GPU needed to set them): a stack's fixed shapes make cuDNN's one-time
    search per shape worth it; TF32 for matmuls and convolutions."""
    from trainer.device import configure_device

    flags = [
        (torch.backends.cudnn, "benchmark"),
        (torch.backends.cudnn, "allow_tf32"),
        (torch.backends.cuda.matmul, "allow_tf32"),
    ]
    before = [getattr(module, name) for module, name in flags]
    try:
        for module, name in flags:
            setattr(module, name, False)
        configure_device(torch.device("cuda"))
        assert all(getattr(module, name) for module, name in flags)
    finally:  # the suite compares float32 results without TF32 (conftest)
        for (module, name), value in zip(flags, before, strict=True):
            setattr(module, name, value)
