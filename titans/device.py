"""Where a command runs: one parser for every ``--device`` flag and ``train.device``, checked before any work."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str, field: str = "--device") -> torch.device:
    """``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` -> a ``torch.device``.

    A CUDA device without an index is this process's ``LOCAL_RANK`` (0 outside ``torchrun``), so one command line
    serves every rank. Raises ``ValueError`` naming ``field`` and the value when the name is not a device or the
    device is not present here.
    """
    if not isinstance(name, str):
        raise ValueError(f"{field}={name!r}: expected a device name (auto, cpu, cuda, cuda:1, mps)")
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", rank)
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{field}={name!r}: not a device (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{field}={name!r}: no CUDA device here (use cpu or auto)")
        index = rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"{field}={name!r}: cuda:{index} does not exist ({torch.cuda.device_count()} devices)")
        return torch.device("cuda", index)
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{field}={name!r}: no MPS device here (use cpu or auto)")
    elif device.type != "cpu":
        raise ValueError(f"{field}={name!r}: unsupported device type {device.type!r} (auto, cpu, cuda, mps)")
    return device
