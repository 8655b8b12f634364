"""Choosing the torch device: CPU everywhere, CUDA when present and asked for."""

from __future__ import annotations

import torch

from .errors import InvalidArgumentError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``None`` / ``"auto"`` / ``"cpu"`` / ``"cuda[:n]"`` into a usable device.

    ``None`` means CPU; ``"auto"`` means CUDA when available, else CPU.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(
            f"device {device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(
            f"device {device!r} was requested but torch sees no CUDA GPU here; use 'auto' or 'cpu'"
        )
    return dev
