"""The search: Optuna's study around the engines, from a spec to the chosen model.

``objective`` samples a configuration and records a trial, ``search`` is the one loop that
asks Optuna for trials and feeds an engine, ``study`` runs a study from its spec, ``refit``
retrains the chosen configuration, ``parallel`` searches with several processes, ``budget``
keeps the trial count exact and ``records`` is what a trial stores. Optuna's private APIs
are fenced in ``optuna_internals``. Imports every part below it; ``trainer.model_file`` is
beside it, not below.
"""
