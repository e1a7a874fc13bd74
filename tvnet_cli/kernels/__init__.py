"""Machine plumbing for the TV-L1 iterations: the C CPU kernel (`cpu.py`, `tvl1_cpu.c`), the
Triton GPU kernel (`triton_tvl1.py`), their cache (`cache.py`) and the one selector below.

A backend is "auto", "torch" (the PyTorch reference step, differentiable), "c" (float32 on
the CPU) or "triton" (float32 on CUDA, or on CPU tensors under `TRITON_INTERPRET=1`).
"auto" takes `$TVNET_BACKEND` if set, else C on CPU float32, Triton on CUDA float32 and torch
otherwise. Every kernel here has the `Iterate` signature of `model.tvnet.stepwise`:
`(u, px, py, grad_i, grad_sq, rho_c, taps, consts, n) -> (u, px, py)`.
An explicitly requested backend that cannot run is an error; "auto" falls back to torch
with a warning that names the reason, once per process and reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from ..errors import TVNetError

BACKENDS = ("auto", "torch", "c", "triton")
Iterate = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
_WARNED: set[str] = set()


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise TVNetError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    return name


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _why_not(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Why `backend` cannot run float tensors of `dtype` on `device` here ("" = it can)."""
    if backend == "torch":
        return ""
    if dtype != torch.float32:
        return f"the {backend} kernel is float32 only, not {dtype}"
    if backend == "c":
        if device.type != "cpu":
            return f"the C kernel runs on the CPU, not {device}"
        from . import cpu

        return "" if cpu.library() is not None else f"the C kernel could not be built ({cpu.unavailable})"
    if device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        return f"the Triton kernel runs on CUDA (or on the CPU under TRITON_INTERPRET=1), not {device}"
    try:
        from . import triton_tvl1  # noqa: F401
    except Exception as e:  # noqa: BLE001 - triton missing or broken: say why
        return f"triton is not usable here ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    return ""


def resolve(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that will run: `backend` itself if it can, "auto" resolved by the rules above."""
    check_backend(backend)
    if backend == "auto":
        backend = check_backend(os.environ.get("TVNET_BACKEND") or "auto")
    if backend != "auto":
        reason = _why_not(backend, device, dtype)
        if reason:
            raise TVNetError(f"backend {backend!r}: {reason}")
        return backend
    preferred = {"cpu": "c", "cuda": "triton"}.get(device.type, "torch")
    if dtype != torch.float32:
        return "torch"
    reason = _why_not(preferred, device, dtype)
    if reason:
        if reason not in _WARNED:
            _WARNED.add(reason)
            warnings.warn(f"tvnet: using the PyTorch TV-L1 step, several times slower: {reason}", stacklevel=3)
        return "torch"
    return preferred


def iterate_for(backend: str) -> Iterate | None:
    """The kernel `Iterate` of a resolved backend; None for "torch" (the caller's reference step)."""
    if backend == "c":
        from . import cpu

        return cpu.iterate
    if backend == "triton":
        from . import triton_tvl1

        return triton_tvl1.iterate
    return None
