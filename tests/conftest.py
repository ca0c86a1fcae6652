"""Shared fixtures: tiny budgets, one torch thread, quiet Optuna, both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import device_tests
import optuna
import pytest
import torch
from servers import fresh_postgres_database

from trainer.data.builtin_sets import load_builtin

torch.set_num_threads(1)
# The equivalence tests compare stacked models with their own modules to float32 tolerances;
# on a GPU (REGTUNE_TEST_DEVICE=cuda, benchmarks/gpu_check.sh) cuDNN's convolutions default to
# TF32 (10-bit mantissas), which alone drifts past them. The engine's own speed setting
# (trainer.configure_device) is for studies, not for these comparisons.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def digits():

    return load_builtin("builtin:digits")


@pytest.fixture(scope="session")
def wine():

    return load_builtin("builtin:wine")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file, then a fresh database on the local PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'regtune.db'}"
    else:
        with fresh_postgres_database() as (url, _):
            yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    device_tests.select(config, items)  # with REGTUNE_TEST_DEVICE: the tests that use it


@pytest.fixture(autouse=True)
def _record_differences(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if device_tests.SELECTING:  # the largest differences, shown at the end (device_tests)
        device_tests.DIFFERENCES.test = request.node.nodeid
        compare = device_tests.DIFFERENCES.wrap(torch.testing.assert_close)
        monkeypatch.setattr(torch.testing, "assert_close", compare)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in device_tests.DIFFERENCES.summary():
        terminalreporter.write_line(line)
