"""The search: Optuna's study around the engines, from a spec to the chosen model.

* a study's set-up: ``cv_protocol`` (its metric, held-out test rows and folds),
  ``optuna_study`` (its sampler, pruner and Optuna study), ``space`` (what a trial draws:
  its values and its seed);
* the search: ``search`` (the driver, :class:`~trainer.tuning.search.Search`, and the choice
  of engine), ``ask_tell`` (which trial may start, and how each is told), ``budget`` (the
  trial count kept exact), ``trial_training`` (what every trial trains on and what stops it),
  ``population_search`` (the population engine: trial slots trained as stacks),
  ``per_trial_search`` and ``objective`` (the per-trial engine and its Optuna objective),
  ``trial_errors`` (how a trial is interrupted or fails);
* ``study`` runs a study from its spec, ``parallel`` with several processes;
* the result: ``refit`` retrains the chosen configuration, ``tuned_model`` packs it as the
  model file, ``records`` is what a trial stores and how trials are shown.

Optuna's private APIs are fenced in ``optuna_internals``. Imports every part below it,
``trainer.model_file`` included (``tuned_model`` packs the final model with it).
"""
