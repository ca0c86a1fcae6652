"""Choosing where a trial trains."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import traceback

import torch

# glibc's mallopt parameters (<malloc.h>) and the values set for a training process.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 128 << 20  # free memory at the heap's top kept up to this much


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first GPU if there is one, else the CPU; otherwise ``cpu``/``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MiB for reuse instead of returning
    each to the kernel; False where the C library is not glibc.

    A training step frees and allocates the same large temporaries (activations, gradients,
    dropout masks) at every step. Past glibc's mmap threshold each one is fresh pages, faulted
    in and zeroed again by the kernel: about 60,000 page faults in eleven epochs of a digits
    MLP stack, 2–11 % of its CPU time in three paired runs (``perf stat``). PyTorch's CPU
    performance guide gets the same from jemalloc or tcmalloc; this asks the allocator already
    loaded.
    The memory stays the process's own, as it would at the step's peak anyway.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to ask
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def configure_device(device: torch.device) -> None:
    """Process-wide settings for fast training on ``device``: on a CPU, freed memory kept for
    the next step (:func:`keep_freed_memory`); TF32 matmuls and convolutions on a CUDA GPU
    (10-bit mantissa products with float32 accumulation; the stacked models' results stay
    within float noise of full float32 at this size), and cuDNN's algorithm search: a stack's
    shapes never change, so the grouped convolutions (groups = M stacked models) get the
    fastest kernel measured once per shape instead of cuDNN's heuristic pick."""
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def release_memory(device: torch.device, error: BaseException) -> None:
    """Give the memory of whatever ``error`` was raised through back to the device.

    An out-of-memory error's traceback holds the frames it passed (``Population.train_epoch``
    and its ``self``), so the failed stack's tensors outlive the stack's last reference until the
    frames are cleared; and ``torch.cuda.empty_cache`` returns only blocks nothing holds. The
    caller drops its own references first."""
    traceback.clear_frames(error.__traceback__)
    gc.collect()  # the stack's modules and autograd graph hold reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()
