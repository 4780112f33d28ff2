"""Where a model trains and how its randomness starts: device resolution and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from search.errors import UsageError


def resolve_device(spec: str | None) -> torch.device:
    """`None`/"auto" -> CUDA when available, else CPU; otherwise the named device, checked."""
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec!r}: CUDA is not available on this machine; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too). Call before building a model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
