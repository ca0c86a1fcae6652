"""What trains a trial's folds: the per-trial engine, the population engine, and what they share.

``trial_config`` is a trial's resolved configuration and ``results`` what training gives back
(fold and CV results, the fitted model, ``DivergedError``). ``per_trial`` trains one
configuration's folds, each an ``nn.Module``, where the population does not serve (networks
that do not stack, the Wilcoxon pruner's fold-by-fold studies, the fold ensemble).
``population`` trains P trials × K folds as one stacked model, holding its parts: its rows
(``stacked_rows``), its layers (``stacked_layers``, running the network traced by
``stacking``), its optimizer (``stacked_optim``) and its record (``stacked_results``);
``compiled`` compiles the step it hands over, and ``layout`` sizes the population for a device.

What both engines mean the same way is written once: a fold's preprocessing, seed and results
(``folds``), the loss and the objective (``scoring``), early stopping (``early_stopping``),
L1/L2 and sparsity (``regularizers``), data augmentation of the training rows
(``augmentation``) and the diagnosis (``diagnosis``). Imports
``trainer.specs``, ``trainer.data`` and ``trainer.nets`` (and ``trainer.torch_internals``);
never ``trainer.tuning``.
"""
