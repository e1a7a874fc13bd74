"""What a GPU forward of TVNet costs, counted on the CPU: launches, bytes moved, host syncs.

A forward on a GPU is bound by memory traffic, so its time is about bytes moved / bandwidth
plus launches x launch cost. This counts both for everything outside the TV-L1 iterations
(grey, normalise, blur, pyramid, warps, gradients: the PyTorch ops a CUDA forward
dispatches, counted with a dispatch mode on CPU tensors of the same shapes) and adds the
iterations as the Triton kernel runs them (`kernels/triton_tvl1.py`: one launch and
`BYTES_PER_PIXEL_ITER` bytes per pixel per iteration). Host syncs are counted the same way
as in `tests/test_host_sync.py`.

    python bench/bench_gpu_estimate.py [--batch 256] [--size 340x256] [--bandwidth 4.3e12]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tvnet_cli import TVNet
from tvnet_cli.model import ops

VIEWS = {"view", "_unsafe_view", "slice", "select", "expand", "permute", "unsqueeze", "squeeze",
         "alias", "as_strided", "t", "transpose", "detach", "split", "unbind", "_reshape_alias",
         "reshape", "flatten", "to", "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty"}
SYNCS = {"_local_scalar_dense", "is_nonzero", "item", "lift_fresh", "lift_fresh_copy"}
BYTES_PER_PIXEL_ITER = 64  # Triton kernel: reads u, px, py, grad_i (2 planes each), grad_sq, rho_c; writes u, px, py
LAUNCH_S = 4e-6  # a kernel launch on the host, stream-ordered (no CUDA graph)


def _nbytes(t: torch.Tensor) -> int:
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


class Traffic(TorchDispatchMode):
    """Counts non-view ops (= GPU kernel launches) and the bytes they read and write."""

    def __init__(self) -> None:
        super().__init__()
        self.launches = 0
        self.bytes = 0
        self.syncs: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in SYNCS:
            self.syncs[name] += 1
        if name not in VIEWS:
            self.launches += 1
            flat = [a for a in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(a, torch.Tensor)]
            self.bytes += sum(_nbytes(t) for t in flat)
        return out


def count(preset: str, batch: int, h: int, w: int, iters: int | None = None) -> Traffic:
    model = TVNet.from_preset(preset, **({"iters": iters} if iters else {}))
    model.backend = "torch"
    f0 = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8)
    f1 = torch.roll(f0, 2, 3)
    model.predict(f0, f1)  # parameters read once (cached afterwards)
    with Traffic() as t:
        model.predict(f0, f1)
    # On the CPU the blur runs as shifted sums; a GPU runs it as depthwise convolutions.
    grey = torch.rand(batch, 1, h, w)
    for shifted, sign in ((True, -1), (False, 1)):
        with Traffic() as b:
            ops.gaussian_blur(grey, model.config.smooth_sigma, shifted=shifted)
        t.bytes += sign * 2 * b.bytes  # both frames
        t.launches += sign * 2 * b.launches
    return t


def estimate(preset: str, count_batch: int, batch: int, h: int, w: int, bandwidth: float) -> dict:
    """Launches and bytes per batch of `batch` pairs: the torch ops outside the iterations
    (counted at `count_batch`, bytes scaled to `batch`) plus the Triton iterations; the
    estimated pairs/s at `bandwidth` bytes/s with `LAUNCH_S` per launch."""
    one, two = count(preset, count_batch, h, w, 1), count(preset, count_batch, h, w, 2)
    cfg = TVNet.from_preset(preset).config
    sizes = cfg.level_sizes(h, w)
    px = sum(a * b for a, b in sizes)  # pixels of all levels, one pair
    # total(k iterations per warp) = prep + k * (one iteration at every warp of every level)
    step_bytes, step_launches = two.bytes - one.bytes, two.launches - one.launches
    prep_bytes = (one.bytes - step_bytes) * batch / count_batch
    prep_launches = one.launches - step_launches
    iter_launches = cfg.warps * cfg.iters * len(sizes)
    iter_bytes = cfg.warps * cfg.iters * px * batch * BYTES_PER_PIXEL_ITER
    seconds = (prep_bytes + iter_bytes) / bandwidth + (prep_launches + iter_launches) * LAUNCH_S
    return {"preset": preset, "size": f"{w}x{h}", "batch": batch, "levels": len(sizes),
            "torch_step": {"launches_per_iter": step_launches // (cfg.warps * len(sizes)),
                           "bytes_per_px_iter": round(step_bytes / (cfg.warps * px * count_batch), 1)},
            "triton_step": {"launches_per_iter": 1, "bytes_per_px_iter": BYTES_PER_PIXEL_ITER},
            "prep_launches_per_batch": prep_launches, "prep_MB_per_pair": round(prep_bytes / batch / 1e6, 2),
            "iter_launches_per_batch": iter_launches, "iter_MB_per_pair": round(iter_bytes / batch / 1e6, 2),
            "host_syncs_per_batch": sum(one.syncs.values()),
            "est_ms_per_batch": round(seconds * 1e3, 2), "est_pairs_per_s": round(batch / seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", default="340x256")
    ap.add_argument("--bandwidth", type=float, default=4.3e12, help="bytes/s (H200: ~4.3e12 measured copy)")
    ap.add_argument("--presets", default="tvnet-50,tvnet-4-1-12,tvl1")
    ap.add_argument("--count-batch", type=int, default=2, help="batch counted on the CPU (bytes scale linearly)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    for preset in args.presets.split(","):
        print(json.dumps(estimate(preset, args.count_batch, args.batch, h, w, args.bandwidth)))


if __name__ == "__main__":
    main()
