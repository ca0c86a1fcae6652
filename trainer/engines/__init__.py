"""What trains a trial's folds: the result types, the per-trial engine, the population engine.

``trial_config`` is a trial's resolved configuration and ``results`` what training gives back
(fold and CV results, the fitted model). ``per_trial`` trains one configuration's folds;
``population`` trains P trials × K folds as one stacked model, from its parts
(``stacked_rows``, ``stacked_layers``, ``stacked_optim``, ``stacked_results``, ``stacking``,
``compiled``). ``layout`` sizes the population for a device. The rules both engines share
(``early_stopping``, ``regularizers``, ``diagnosis``) sit here once. Imports ``trainer.specs``,
``trainer.data`` and ``trainer.nets``; never ``trainer.tuning``.
"""
