"""What a trial draws: its values from the study's search space, and its seed.

A searched parameter is a :class:`~trainer.specs.study_spec.Range` (sampled, on a log scale if
asked), a list (a categorical choice) or a number (fixed: passed through, never sampled);
``hidden`` layer widths are a categorical choice among keys such as ``'256-256'``. The grid
sampler walks :func:`grid`, the same space with every range cut into evenly spaced points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from trainer import rng
from trainer.specs.study_spec import SEARCHABLE, Param, Range, SpecError, StudySpec, domain


def hidden_key(widths: Sequence[int]) -> str:
    """Optuna's categorical choices must be scalars, so layer widths travel as '256-256'."""
    return "-".join(str(w) for w in widths)


def _draw(trial: optuna.Trial, name: str, entry: Param) -> Any:
    """One parameter: a range sampled, a list of choices picked from, a number as it is."""
    if isinstance(entry, Range):
        if _integer(name):
            return trial.suggest_int(name, int(entry.low), int(entry.high), log=entry.log)
        return trial.suggest_float(name, entry.low, entry.high, log=entry.log)
    if isinstance(entry, list):
        return trial.suggest_categorical(name, entry)
    return entry


def _integer(name: str) -> bool:
    found = domain(name)
    return found is not None and found.integer


def searched(spec: StudySpec) -> dict[str, Param]:
    """Every parameter a trial of ``spec`` draws, by its Optuna name (``hidden`` apart):
    ``dropout.<group>`` per dropout group, ``dropout`` only if some dropout has no group,
    ``augment.<name>`` per augmentation given."""
    space = spec.search_space
    entries = {name: getattr(space, name) for name in SEARCHABLE}
    if not spec.model.shares_dropout():
        del entries["dropout"]
    depth = max(len(h) for h in space.hidden or [spec.model.hidden])
    for group in spec.model.groups(depth):
        entries[f"dropout.{group}"] = space.group_dropout(group)
    entries |= space.augment.given()
    return {name: entry for name, entry in entries.items() if entry is not None}


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Draw every searched parameter from ``trial``; fixed numbers pass through unsampled."""
    space = spec.search_space
    values = {name: _draw(trial, name, entry) for name, entry in searched(spec).items()}
    if space.hidden is not None:
        key = trial.suggest_categorical("hidden", [hidden_key(h) for h in space.hidden])
        values["hidden"] = [int(w) for w in key.split("-")]
    return values


def grid(spec: StudySpec, points: int) -> dict[str, list[Any]]:
    """The search space as a grid: ranges become ``points`` evenly (or log-) spaced values."""
    axes: dict[str, list[Any]] = {}
    for name, entry in searched(spec).items():
        if isinstance(entry, Range):
            spacing = np.geomspace if entry.log else np.linspace
            values = spacing(entry.low, entry.high, points)
            if _integer(name):
                axes[name] = sorted({round(float(v)) for v in values})
            else:
                axes[name] = [float(v) for v in values]
        elif isinstance(entry, list):
            axes[name] = entry
    if spec.search_space.hidden is not None:
        axes["hidden"] = [hidden_key(h) for h in spec.search_space.hidden]
    return axes


def check_grid(spec: StudySpec) -> None:
    """A grid study runs each point of :func:`grid` once: ``n_trials`` beyond the grid's
    size would only repeat points (``SpecError`` on ``n_trials``, naming the size)."""
    if spec.sampler.kind != "grid":
        return
    points = int(np.prod([len(axis) for axis in grid(spec, spec.sampler.grid_points).values()]))
    if spec.n_trials > points:
        raise SpecError(
            f"n_trials {spec.n_trials} is more than the grid's {points} points "
            f"(sampler.grid_points {spec.sampler.grid_points} per range): each point runs "
            f"once, so ask for at most {points}",
            field="n_trials",
        )


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The seed of a study's trial ``trial_number`` (its folds derive theirs from it)."""
    return rng.derived_seed(study_seed, trial_number)
