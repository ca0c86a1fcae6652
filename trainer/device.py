"""Choosing where a trial trains."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first GPU if there is one, else the CPU; otherwise ``cpu``/``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device
