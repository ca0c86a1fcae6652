"""Fault injection into real worker processes: on PYTHONPATH, Python imports this at start-up.

``REGTUNE_INJECT=oom`` makes any population of more than one slot raise CUDA's out-of-memory
error in training (as a GPU too small for it would); ``REGTUNE_INJECT=raise`` makes the
training of every third trial given a slot raise a RuntimeError (the final model's refit
is no trial: it is left alone). The worker's own code is
untouched: the fault comes from inside the training call, where a real one would.
"""

from __future__ import annotations

import os

FAULT = os.environ.get("REGTUNE_INJECT")

if FAULT:
    import torch

    from trainer.engines.population import Population

    real_assign, real_train = Population.assign, Population.train_epoch
    assigned = 0

    def assign(self, slot, config, seed, **kwargs):  # type: ignore[no-untyped-def]
        global assigned
        trial = kwargs.get("fold_seeds") is None  # the refit names its seeds; it is no trial
        assigned += trial
        if FAULT == "raise" and trial and assigned % 3 == 0:
            self.doomed = True
        return real_assign(self, slot, config, seed, **kwargs)

    def train_epoch(self):  # type: ignore[no-untyped-def]
        if FAULT == "oom" and self.P > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB (injected)")
        if getattr(self, "doomed", False):
            raise RuntimeError("injected training failure")
        return real_train(self)

    Population.assign, Population.train_epoch = assign, train_epoch
