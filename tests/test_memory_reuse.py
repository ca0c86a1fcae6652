"""A CPU training process keeps its freed memory for the next step (``keep_freed_memory``):
a large temporary allocated and freed again costs no fresh pages from the kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Minor page faults of 20 allocations of an 8 MiB tensor, each freed before the next, before
# and after the process asks glibc to keep freed blocks (in a process of its own: the setting
# is process-wide).
PROBE = """
import json, resource, sys
import torch
from trainer.device import configure_device

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(2 << 20).sum()  # 8 MiB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
configure_device(torch.device("cpu"))
faults()  # the first block of the new regime comes from the kernel once
print(json.dumps({"before": before, "after": faults()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    counts = json.loads(done.stdout)
    # A fresh 8 MiB block is 2,048 pages faulted in; glibc's own threshold, which moves with
    # what was freed, hands back only some of them before (5,000 to 12,000 faults measured).
    assert counts["before"] > 2_048
    assert counts["after"] < counts["before"] / 20  # 0 measured
