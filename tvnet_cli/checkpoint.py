"""Checkpoint files: one atomic writer and one checked reader for every torch.save'd dict."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import TVNetError


def save_atomic(obj: dict, path: str | Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_dict(path: str | Path, what: str) -> dict:
    """Load a dict saved by `save_atomic` (tensors and plain types only, on the CPU).

    Raises TVNetError "<path>: <what> not found" or "<path>: not a <what> (<reason>)".
    """
    path = Path(path)
    if not path.is_file():
        raise TVNetError(f"{path}: {what} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise TVNetError(f"{path}: not a {what} ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise TVNetError(f"{path}: not a {what} (holds a {type(obj).__name__})")
    return obj


def validate_weights(path: str | Path, ckpt: dict) -> None:
    """Raise `TVNetError` "<path>: not usable TVNet weights (<why>)" unless `ckpt` (from
    `load_dict`) has an integer version, a dict config whose numbers are finite, and a
    state dict of tensors with finite values (NaN/inf filters or tau/lambda/theta would
    load and turn every flow into garbage)."""

    def bad(why: str) -> None:
        raise TVNetError(f"{path}: not usable TVNet weights ({why})")

    version = ckpt.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        bad(f"version {version!r} is not an integer")
    config = ckpt.get("config")
    if not isinstance(config, dict):
        bad(f"config is a {type(config).__name__}, not a dict")
    for key, value in config.items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            bad(f"config {key} is {value}, not a finite number")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        bad(f"state_dict is a {type(state).__name__}, not a dict")
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            bad(f"state_dict[{key!r}] is a {type(tensor).__name__}, not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad(f"state_dict[{key!r}] holds NaN or infinite values")
