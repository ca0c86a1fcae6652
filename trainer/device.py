"""Choosing where a trial trains."""

from __future__ import annotations

import os

import torch


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


def configure_device(device: torch.device) -> None:
    """Process-wide settings for fast training on ``device``: TF32 matmuls and convolutions on
    a CUDA GPU (10-bit mantissa products with float32 accumulation; the stacked models'
    results stay within float noise of full float32 at this size)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
