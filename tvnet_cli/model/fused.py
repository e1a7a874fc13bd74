"""The fused TV-L1 iteration off the CPU: `tv_l1_step` compiled ahead of time, cached on disk.

Used for devices other than the CPU (CUDA) and dtypes other than float32; float32 on the
CPU runs the hand-written kernel in `native.py`, which is ~4x faster than this step there.
Eager PyTorch runs each iteration as ~40 small kernels that each stream the whole flow
field through memory; the fused step is one or two loops per iteration. It is built with
AOTInductor (torch.export + inductor) for dynamic batch/height/width, once per machine,
torch version, device type and dtype, and stored under `~/.cache/tvnet/kernels` (or
`$TVNET_CACHE`). Later processes load the compiled library in well under a second. Any
failure to build or load falls back to the eager step with a warning: same flow, slower.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

_LOADED: dict[str, Callable] = {}


def cache_dir() -> Path:
    root = os.environ.get("TVNET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tvnet"
    return Path(root) / "kernels"


def _key(device: torch.device, dtype: torch.dtype) -> str:
    info = f"{torch.__version__}|{device.type}|{dtype}|{platform.machine()}|{sys.version_info[:2]}|v1"
    if device.type == "cuda":
        info += "|" + torch.cuda.get_device_name(device)
    return hashlib.sha1(info.encode()).hexdigest()[:16]


class _Step(torch.nn.Module):
    """`tv_l1_step` with its constants as a tensor input, so one kernel serves every config."""

    def forward(self, u, px, py, grad_i, grad_sq, rho_c, forward_taps, backward_taps, consts):
        from .tvnet import tv_l1_step

        return tv_l1_step(u, px, py, grad_i, grad_sq, rho_c, (forward_taps, backward_taps),
                          consts[0], consts[1], consts[2], consts[3])


def _build(path: Path, device: torch.device, dtype: torch.dtype) -> None:
    """Export and AOT-compile the step for dynamic (B, h, w); write the package atomically."""
    b, h, w = 2, 16, 24
    t = dict(device=device, dtype=dtype)
    args = (torch.rand(b, 2, h, w, **t), torch.rand(b, 2, h, w, **t), torch.rand(b, 2, h, w, **t),
            torch.rand(b, 2, h, w, **t), torch.rand(b, 1, h, w, **t) + 1, torch.rand(b, 1, h, w, **t),
            torch.ones(2, 2, **t), torch.ones(2, 2, **t), torch.ones(4, **t))
    bd = torch.export.Dim("batch", min=1, max=65536)
    hd = torch.export.Dim("height", min=3, max=16384)
    wd = torch.export.Dim("width", min=3, max=16384)
    field = {0: bd, 2: hd, 3: wd}
    dims = (field,) * 6 + (None, None, None)
    with torch.no_grad():
        exported = torch.export.export(_Step(), args, dynamic_shapes=dims)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.pt2")
    torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp))
    tmp.replace(path)


def _stderr(msg: str) -> None:
    print(f"tvnet: {msg}", file=sys.stderr, flush=True)


def fused_step(device: torch.device, dtype: torch.dtype = torch.float32,
               notify: Callable[[str], None] | None = _stderr) -> Callable | None:
    """A callable with `tv_l1_step`'s signature running the fused kernel, or None where it
    cannot be built here (the caller then uses the eager step)."""
    key = _key(device, dtype)
    if key in _LOADED:
        return _LOADED[key]
    path = cache_dir() / f"tv_l1_step-{key}.pt2"
    try:
        if not path.is_file():
            if notify:
                notify(f"building the fused TVNet kernel once for this machine (about a minute), cached in {path.parent}")
            _build(path, device, dtype)
        runner = torch._inductor.aoti_load_package(str(path))
    except Exception as e:  # noqa: BLE001 - no compiler, unsupported device...: use eager
        warnings.warn(f"tvnet: fused TV-L1 kernel unavailable ({type(e).__name__}: "
                      f"{(str(e).splitlines() or [''])[0][:200]}); using eager PyTorch")
        _LOADED[key] = None
        return None

    def step(u, px, py, grad_i, grad_sq, rho_c, taps, lt, theta, taut, eps):
        consts = torch.tensor([lt, theta, taut, eps], device=u.device, dtype=u.dtype)
        return tuple(runner(u.contiguous(), px.contiguous(), py.contiguous(), grad_i.contiguous(),
                            grad_sq.contiguous(), rho_c.contiguous(),
                            taps[0].detach().to(u.dtype).contiguous(),
                            taps[1].detach().to(u.dtype).contiguous(), consts))

    _LOADED[key] = step
    return step
