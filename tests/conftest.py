"""Shared fixtures: tiny budgets, one torch thread, quiet Optuna."""

from __future__ import annotations

import optuna
import pytest
import torch

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def digits():
    from trainer.datasets import load_builtin

    return load_builtin("builtin:digits")


@pytest.fixture(scope="session")
def wine():
    from trainer.datasets import load_builtin

    return load_builtin("builtin:wine")
