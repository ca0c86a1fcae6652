"""A study's CV protocol: its metric, its held-out test rows and its cross-validation folds.

The protocol is fixed by the spec and the dataset alone (the seed draws the rows), so every
process that searches a study, the refit and ``regtune splits`` see the very same rows: the
test rows are held out of every trial, and fold k of every trial scores the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer.data.datasets import Dataset
from trainer.data.splits import ProtocolRows, Split, protocol_rows
from trainer.engines.augmentation import check_data
from trainer.nets.networks import footprint
from trainer.specs.study_spec import Metric, SpecError, StudySpec, default_metric
from trainer.tuning.space import check_grid


def resolve_metric(spec: StudySpec, dataset: Dataset) -> Metric:
    """The objective metric, checked against the dataset's task."""
    if spec.task is not None and spec.task != dataset.task:
        raise SpecError(f"task is {spec.task!r} but dataset {dataset.name!r} is {dataset.task}")
    metric = spec.objective.metric or default_metric(dataset.task)
    if metric == "accuracy" and dataset.task == "regression":
        raise SpecError("objective.metric 'accuracy' needs a classification dataset")
    if metric == "mse" and dataset.task == "classification":
        raise SpecError("objective.metric 'mse' needs a regression dataset")
    return metric


def network_sizes(spec: StudySpec, dataset: Dataset) -> list[tuple[str, list[int] | None, int]]:
    """Every network the search may build, checked against the data's shape (a
    :class:`~trainer.nets.layers.LayerError` names the layer that does not fit): per choice
    of ``search_space.hidden`` (or the model alone), its field, widths and parameter count."""
    choices: list[tuple[str, list[int] | None]] = [("model", None)]
    if spec.search_space.hidden is not None:
        choices = [("search_space.hidden", widths) for widths in spec.search_space.hidden]
    return [
        (
            field,
            widths,
            footprint(spec.model, dataset.input_shape, dataset.n_outputs, hidden=widths).parameters,
        )
        for field, widths in choices
    ]


@dataclass(frozen=True)
class CVProtocol:
    """The fixed data protocol of a study: metric, held-out test rows and CV folds."""

    metric: Metric
    pool: np.ndarray
    test: np.ndarray
    splits: list[Split]

    @classmethod
    def of(
        cls,
        spec: StudySpec,
        dataset: Dataset,
        *,
        check_network: bool = True,
        rows: Callable[[], ProtocolRows] | None = None,
    ) -> CVProtocol:
        """The protocol of ``spec`` on ``dataset``; ``check_network`` checks the network
        against the data first (a worker does not: the API host did at submission, and a
        plugin missing on the worker fails its trials, with the reason, not the study).
        Either way an augmentation the data cannot take, and a grid smaller than
        ``n_trials``, are refused (``SpecError``). ``rows`` hands over the rows drawn
        elsewhere (:mod:`trainer.tuning.prefetch`), asked for after those checks."""
        metric = resolve_metric(spec, dataset)
        check_data(spec.search_space.augment.given(), dataset.input_shape)
        check_grid(spec)
        if check_network:
            network_sizes(spec, dataset)
        drawn = rows() if rows is not None else protocol_rows(dataset, spec.cv, spec.seed)
        return cls(metric, drawn.pool, drawn.test, drawn.splits)
