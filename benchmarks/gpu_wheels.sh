#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh needs on the device machine, whose image (Python 3.12,
# a CUDA torch, numpy, scikit-learn, typer, rich, httpx, ...) lacks Optuna, pydantic and
# SQLAlchemy and what they need. Run here (where pip reaches the registry); the device run
# carries .whl (ignored by git) and gpu_check.sh installs it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
PY=${PYTHON:-.venv/bin/python}
# The versions this checkout's environment runs, so that the device runs the same code.
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
for name in optuna alembic sqlalchemy mako colorlog greenlet pydantic pydantic-core \
  annotated-types typing-inspection pydantic-settings python-dotenv cmaes; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$name==$(version "$name")"
done
ls .whl
