"""regtune's trainer: the machine learning, pure (numpy, torch, Optuna, scikit-learn).

The front door: ``service/``, the benchmarks and users import from ``trainer`` itself, never
from a part. The parts, from the ground up, each importing only those below it:

* ``specs``: what a study may ask for (pydantic only);
* ``data``: datasets, readers, tables, splits, per-fold preprocessing;
* ``nets``: templates, layer stacks and plugins, built by one path;
* ``engines``: what trains a trial's folds (the per-trial and the population engine);
* ``model_file``: the tuned model as a file;
* ``tuning``: Optuna around the engines, from a spec to the chosen model.

``device``, ``lifetime`` and ``rng`` sit at the top level, below every part, with
``torch_internals`` (torch's private APIs, fenced).

Names load lazily (PEP 562): ``import trainer`` imports no part, and ``trainer.StudySpec``
imports only ``trainer.specs``, so a command line that needs the spec never pays for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name and the module that defines it (a module's own path: the module itself).
_HOME: dict[str, str] = {
    # specs
    "DOMAINS": "trainer.specs.study_spec",
    "Limits": "trainer.specs.study_spec",
    "Metric": "trainer.specs.study_spec",
    "Range": "trainer.specs.study_spec",
    "SEARCHABLE": "trainer.specs.study_spec",
    "SearchSpace": "trainer.specs.study_spec",
    "SpecError": "trainer.specs.study_spec",
    "StudySpec": "trainer.specs.study_spec",
    "Task": "trainer.specs.study_spec",
    "UNLIMITED": "trainer.specs.study_spec",
    "domain": "trainer.specs.study_spec",
    "field_problem": "trainer.specs.spec_base",
    "metric_direction": "trainer.specs.study_spec",
    "stored_model": "trainer.specs.stored_specs",
    "stored_spec": "trainer.specs.stored_specs",
    "stored_trade_off": "trainer.specs.stored_specs",
    # data
    "ArrayLimits": "trainer.data.datasets",
    "Dataset": "trainer.data.datasets",
    "DatasetError": "trainer.data.datasets",
    "DatasetTooLarge": "trainer.data.datasets",
    "MissingTarget": "trainer.data.readers",
    "Split": "trainer.data.splits",
    "Table": "trainer.data.tabular",
    "TableLayout": "trainer.data.tabular",
    "load_builtin": "trainer.data.builtin_sets",
    "load_csv": "trainer.data.readers",
    "load_dataset": "trainer.data.readers",
    "load_npz": "trainer.data.readers",
    # nets (a namespace: build, describe, summary)
    "networks": "trainer.nets.networks",
    # engines
    "DIAGNOSES": "trainer.engines.diagnosis",
    "OVERFIT_RISE": "trainer.engines.diagnosis",
    "RECENT_FRACTION": "trainer.engines.diagnosis",
    "STILL_IMPROVING_DROP": "trainer.engines.diagnosis",
    "UNDERFIT_RATIO": "trainer.engines.diagnosis",
    "Population": "trainer.engines.population",
    "TrialConfig": "trainer.engines.trial_config",
    "cross_validate": "trainer.engines.per_trial",
    "population_size": "trainer.engines.layout",
    "stack_bytes": "trainer.engines.layout",
    "CompileCounts": "trainer.engines.compiled",
    "train_population": "trainer.engines.population",
    # model file
    "ArtifactError": "trainer.model_file.model_format",
    "load_model": "trainer.model_file.loading",
    "to_bytes": "trainer.model_file.packing",
    # tuning
    "BestTrial": "trainer.tuning.records",
    "ParetoTrial": "trainer.tuning.records",
    "CVProtocol": "trainer.tuning.cv_protocol",
    "LISTED": "trainer.tuning.records",
    "Prefetch": "trainer.tuning.prefetch",
    "Search": "trainer.tuning.search",
    "SplitRows": "trainer.tuning.records",
    "StudyOutcome": "trainer.tuning.study",
    "StudyResult": "trainer.tuning.records",
    "TrialInterrupted": "trainer.tuning.trial_errors",
    "TrialRecord": "trainer.tuning.records",
    "TrialTraining": "trainer.tuning.trial_training",
    "best_first": "trainer.tuning.records",
    "best_trial": "trainer.tuning.trade_off",
    "choose_engine": "trainer.tuning.search",
    "chosen_trial": "trainer.tuning.trade_off",
    "failure_reason": "trainer.tuning.trial_errors",
    "final_model": "trainer.tuning.tuned_model",
    "hidden_key": "trainer.tuning.space",
    "make_pruner": "trainer.tuning.optuna_study",
    "make_sampler": "trainer.tuning.optuna_study",
    "metric_of": "trainer.tuning.trade_off",
    "network_sizes": "trainer.tuning.cv_protocol",
    "objective_names": "trainer.tuning.trade_off",
    "optuna_internals": "trainer.tuning.optuna_internals",  # a namespace: Optuna's tables
    "pareto_front": "trainer.tuning.trade_off",
    "front_rows": "trainer.tuning.trade_off",
    "picked": "trainer.tuning.trade_off",
    "front_and_pick": "trainer.tuning.trade_off",
    "refit_trial": "trainer.tuning.tuned_model",
    "run_parallel_study": "trainer.tuning.parallel",
    "run_study": "trainer.tuning.study",
    "study_directions": "trainer.tuning.trade_off",
    "suggest": "trainer.tuning.space",
    # the ground floor
    "SAMPLER_STREAM": "trainer.rng",
    "derived_seed": "trainer.rng",
    "configure_device": "trainer.device",
    "resolve_device": "trainer.device",
    "usable_cores": "trainer.device",
    "on_parent_death": "trainer.lifetime",
    "stop_on_signals": "trainer.lifetime",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then keep the name here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    module = importlib.import_module(home)
    value: Any = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what type checkers see; tests/test_architecture.py keeps it equal to _HOME
    from trainer.data.builtin_sets import load_builtin as load_builtin
    from trainer.data.datasets import ArrayLimits as ArrayLimits
    from trainer.data.datasets import Dataset as Dataset
    from trainer.data.datasets import DatasetError as DatasetError
    from trainer.data.datasets import DatasetTooLarge as DatasetTooLarge
    from trainer.data.readers import MissingTarget as MissingTarget
    from trainer.data.readers import load_csv as load_csv
    from trainer.data.readers import load_dataset as load_dataset
    from trainer.data.readers import load_npz as load_npz
    from trainer.data.splits import Split as Split
    from trainer.data.tabular import Table as Table
    from trainer.data.tabular import TableLayout as TableLayout
    from trainer.device import configure_device as configure_device
    from trainer.device import resolve_device as resolve_device
    from trainer.device import usable_cores as usable_cores
    from trainer.engines.compiled import CompileCounts as CompileCounts
    from trainer.engines.diagnosis import DIAGNOSES as DIAGNOSES
    from trainer.engines.diagnosis import OVERFIT_RISE as OVERFIT_RISE
    from trainer.engines.diagnosis import RECENT_FRACTION as RECENT_FRACTION
    from trainer.engines.diagnosis import STILL_IMPROVING_DROP as STILL_IMPROVING_DROP
    from trainer.engines.diagnosis import UNDERFIT_RATIO as UNDERFIT_RATIO
    from trainer.engines.layout import population_size as population_size
    from trainer.engines.layout import stack_bytes as stack_bytes
    from trainer.engines.per_trial import cross_validate as cross_validate
    from trainer.engines.population import Population as Population
    from trainer.engines.population import train_population as train_population
    from trainer.engines.trial_config import TrialConfig as TrialConfig
    from trainer.lifetime import on_parent_death as on_parent_death
    from trainer.lifetime import stop_on_signals as stop_on_signals
    from trainer.model_file.loading import load_model as load_model
    from trainer.model_file.model_format import ArtifactError as ArtifactError
    from trainer.model_file.packing import to_bytes as to_bytes
    from trainer.nets import networks as networks
    from trainer.rng import SAMPLER_STREAM as SAMPLER_STREAM
    from trainer.rng import derived_seed as derived_seed
    from trainer.specs.spec_base import field_problem as field_problem
    from trainer.specs.stored_specs import stored_model as stored_model
    from trainer.specs.stored_specs import stored_spec as stored_spec
    from trainer.specs.stored_specs import stored_trade_off as stored_trade_off
    from trainer.specs.study_spec import DOMAINS as DOMAINS
    from trainer.specs.study_spec import SEARCHABLE as SEARCHABLE
    from trainer.specs.study_spec import UNLIMITED as UNLIMITED
    from trainer.specs.study_spec import Limits as Limits
    from trainer.specs.study_spec import Metric as Metric
    from trainer.specs.study_spec import Range as Range
    from trainer.specs.study_spec import SearchSpace as SearchSpace
    from trainer.specs.study_spec import SpecError as SpecError
    from trainer.specs.study_spec import StudySpec as StudySpec
    from trainer.specs.study_spec import Task as Task
    from trainer.specs.study_spec import domain as domain
    from trainer.specs.study_spec import metric_direction as metric_direction
    from trainer.tuning import optuna_internals as optuna_internals
    from trainer.tuning.cv_protocol import CVProtocol as CVProtocol
    from trainer.tuning.cv_protocol import network_sizes as network_sizes
    from trainer.tuning.optuna_study import make_pruner as make_pruner
    from trainer.tuning.optuna_study import make_sampler as make_sampler
    from trainer.tuning.parallel import run_parallel_study as run_parallel_study
    from trainer.tuning.prefetch import Prefetch as Prefetch
    from trainer.tuning.records import LISTED as LISTED
    from trainer.tuning.records import BestTrial as BestTrial
    from trainer.tuning.records import ParetoTrial as ParetoTrial
    from trainer.tuning.records import SplitRows as SplitRows
    from trainer.tuning.records import StudyResult as StudyResult
    from trainer.tuning.records import TrialRecord as TrialRecord
    from trainer.tuning.records import best_first as best_first
    from trainer.tuning.search import Search as Search
    from trainer.tuning.search import choose_engine as choose_engine
    from trainer.tuning.space import hidden_key as hidden_key
    from trainer.tuning.space import suggest as suggest
    from trainer.tuning.study import StudyOutcome as StudyOutcome
    from trainer.tuning.study import run_study as run_study
    from trainer.tuning.trade_off import best_trial as best_trial
    from trainer.tuning.trade_off import chosen_trial as chosen_trial
    from trainer.tuning.trade_off import front_and_pick as front_and_pick
    from trainer.tuning.trade_off import front_rows as front_rows
    from trainer.tuning.trade_off import metric_of as metric_of
    from trainer.tuning.trade_off import objective_names as objective_names
    from trainer.tuning.trade_off import pareto_front as pareto_front
    from trainer.tuning.trade_off import picked as picked
    from trainer.tuning.trade_off import study_directions as study_directions
    from trainer.tuning.trial_errors import TrialInterrupted as TrialInterrupted
    from trainer.tuning.trial_errors import failure_reason as failure_reason
    from trainer.tuning.trial_training import TrialTraining as TrialTraining
    from trainer.tuning.tuned_model import final_model as final_model
    from trainer.tuning.tuned_model import refit_trial as refit_trial
