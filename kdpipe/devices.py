"""Choosing the torch device from a user's string (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

from __future__ import annotations

import torch

from kdpipe.errors import ConfigError


def resolve_device(spec: str, local_rank: int = 0, field: str = "device") -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` if CUDA is available else ``cpu``; ``cuda`` -> ``cuda:<local_rank>``.

    Args:
        spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (anything ``torch.device`` accepts).
        local_rank: the process's GPU under torchrun (``LOCAL_RANK``); used when ``spec`` names no index.
        field: the config field named in errors (``runtime.device``, ``loop.device``).
    Raises:
        ConfigError: not a device, or CUDA asked for but not available.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(f"cuda:{local_rank}" if spec == "cuda" else spec)
    except RuntimeError:
        raise ConfigError(f"{field}: {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field}: {spec!r} asked for but no CUDA device is visible; use --device cpu")
    return device
