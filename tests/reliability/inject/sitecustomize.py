"""Fault injection into real worker processes: on PYTHONPATH, Python imports this at start-up.

``REGTUNE_INJECT=oom`` makes any population of more than one trial raise CUDA's out-of-memory
error (as a GPU too small for it would); ``REGTUNE_INJECT=raise`` makes every third population
raise a RuntimeError. The worker's own code is untouched: the fault comes from inside the
training call, where a real one would.
"""

from __future__ import annotations

import os

FAULT = os.environ.get("REGTUNE_INJECT")

if FAULT:
    import torch

    from trainer import batched

    real = batched.train_population
    calls = 0

    def faulty(dataset, configs, *args, **kwargs):  # type: ignore[no-untyped-def]
        global calls
        calls += 1
        if FAULT == "oom" and len(configs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB (injected)")
        if FAULT == "raise" and calls % 3 == 0:
            raise RuntimeError("injected training failure")
        return real(dataset, configs, *args, **kwargs)

    batched.train_population = faulty
