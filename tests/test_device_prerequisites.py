"""What the device machine lacks must not stop its run: psycopg (the device tests collect
through conftest) and git (the benchmarks name the commit they measured)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
