"""Checkpoint files: one atomic writer and one checked reader for every torch.save'd dict."""

from __future__ import annotations

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
