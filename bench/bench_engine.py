"""Engine benchmark: ms/pair and pairs/s of TVNet per backend, against OpenCV DualTVL1 on the same frames.

    python bench/bench_engine.py [--pairs 8] [--repeats 3] [--batch 8] [--skip-memory]
    python bench/bench_engine.py --device cuda:0 --pairs 256 --batch 256 --backends triton,torch \
        --skip-opencv --skip-startup --skip-memory                                  # GPU targets

Frames: consecutive frames of ../shared/data/videos/test.mp4 (or $TVNET_SHARED_DATA, or
--video; the shipped examples/test.avi where the shared data is absent), resized to --size.
Rows: each preset (--presets) on each backend (--backends, which sets `model.backend`; the
model's own default, i.e. $TVNET_BACKEND or auto, where not given) at batch 1 and at --batch.
Rows are measured interleaved (round robin), so load from other processes hits every row
alike; the ratios against OpenCV's default DualTVL1 are the numbers to quote.
Also reports: time from process start to the first flow of the default (fast) path, and the
peak memory of one TVNet-50 training step (batch 8, 340x256).
Exit status 3: a requested backend does not exist in this tvnet_cli.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from data import VIDEO, frame_pairs

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"tvnet-50": "TVNet-50", "tvl1": "TVNet-5-5-50"}


def opencv_runner(settings: str):
    import cv2

    cv2.setNumThreads(torch.get_num_threads())
    if settings == "default":
        tv = cv2.optflow.DualTVL1OpticalFlow_create()
    else:  # the same algorithm and iteration counts as TVNet 5-5-50
        tv = cv2.optflow.DualTVL1OpticalFlow_create(
            tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.0,
            innnerIterations=50, outerIterations=1, scaleStep=0.5, gamma=0.0, medianFiltering=1)

    def run(a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a, b):
            tv.calc(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(y, cv2.COLOR_RGB2GRAY), None)

    return run


def select_backend(model, backend: str | None) -> None:
    """Set `model.backend` (None = leave the model's default, "auto")."""
    if backend is not None:
        model.backend = backend


def tvnet_runner(preset: str, backend: str | None, batch: int, device: str = "cpu"):
    """Frames go to `device` once (uint8) and stay there: this times TVNet, not transfers
    (those are in bench_extract.py's stage costs). CUDA timings end with a synchronise."""
    from tvnet_cli import TVNet

    model = TVNet.from_preset(preset).to(device)
    select_backend(model, backend)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    on_device: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def run(a: np.ndarray, b: np.ndarray) -> None:
        if len(a) not in on_device:
            on_device[len(a)] = tuple(torch.from_numpy(x).permute(0, 3, 1, 2).to(device) for x in (a, b))
        ta, tb = on_device[len(a)]  # (n, 3, H, W) uint8
        for i in range(0, len(ta), batch):
            model.predict(ta[i:i + batch], tb[i:i + batch])
        sync()

    return run


def startup_seconds(cache: str | None = None) -> float:
    """Seconds from a fresh interpreter to the first TVNet-50 flow on the CPU with the model's
    default (fast) backend; `cache` = an empty kernel cache folder to include the one-time
    build of the CPU kernel."""
    code = ("import time; t=time.time(); import torch; from tvnet_cli import TVNet; "
            "m=TVNet.from_preset('tvnet-50'); x=torch.rand(1,3,256,340); "
            "m.predict(x,x); print(time.time()-t)")
    env = dict(os.environ, **({"TVNET_CACHE": cache} if cache else {}))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def train_step_peak_mib(batch: int = 8) -> float:
    """Peak RSS growth (MiB) of one forward+backward TVNet-50 step at 340x256, in a subprocess."""
    code = f"""
import resource, torch
from tvnet_cli import TVNet
m = TVNet.from_preset('tvnet-50'); m.set_trainable('all')
x = torch.randint(0, 256, ({batch}, 3, 256, 340), dtype=torch.uint8); y = torch.roll(x, 2, 3)
gt = torch.zeros({batch}, 2, 256, 340); gt[:, 0] = 2
m(x[:1], y[:1]).sum().backward()  # warm up allocator and kernels
m.zero_grad()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss = (m(x, y) - gt).norm(dim=1).mean(); loss.backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, base / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grow, _base = (float(v) for v in out.stdout.split())
    return grow


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _size(value: str) -> tuple[int, int]:
    """'340x256' (width x height) -> (256, 340) = (H, W)."""
    w, h = (int(v) for v in value.lower().split("x"))
    return h, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--size", type=_size, default=(256, 340), metavar="WxH", help="frame size (default 340x256)")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="device of the TVNet rows (OpenCV runs on the CPU)")
    ap.add_argument("--presets", type=_csv, default=["tvnet-50", "tvl1"], help="comma-separated presets")
    ap.add_argument("--backends", "--backend", type=_csv, default=None,
                    help="comma-separated model.backend values (auto, torch, c, triton)  [default: the "
                         "model's own, i.e. $TVNET_BACKEND or auto]")
    ap.add_argument("--slow-pairs", type=int, default=4,
                    help="pairs timed for the slow rows (OpenCV and batch 1); the others time all --pairs")
    ap.add_argument("--skip-opencv", action="store_true", help="no OpenCV rows (e.g. no opencv-contrib there)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-startup", action="store_true", help="no start-up rows (two fresh CPU processes)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    backends: list[str | None] = args.backends or [None]
    if args.device == "cpu" and "triton" in backends:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton runs CPU tensors only interpreted
    torch.set_num_threads(args.threads)
    a, b = frame_pairs(args.video, args.pairs, args.size)  # (n, H, W, 3) uint8 each

    dev = args.device
    on = "" if dev == "cpu" else f" on {dev}"
    rows = {} if args.skip_opencv else {
        "OpenCV DualTVL1 default": opencv_runner("default"),
        "OpenCV DualTVL1 5-5-50": opencv_runner("5-5-50"),
    }
    meta: dict[str, dict] = {name: {} for name in rows}
    for preset in args.presets:
        for backend in backends:
            for batch in dict.fromkeys((1, args.batch)):
                name = f"{LABELS.get(preset, preset)} {backend or 'default'}, batch {batch}{on}"
                rows[name] = tvnet_runner(preset, backend, batch, dev)
                meta[name] = {"preset": preset, "backend": backend or "default", "batch": batch, "device": dev}
    n_slow = min(args.slow_pairs, len(a))

    def slow(name: str) -> bool:
        return name.startswith("OpenCV") or re.search(r"batch 1\b", name) is not None

    for name, run in rows.items():  # warm-up (compile, upload) outside the timing; fallbacks are warnings
        n = n_slow if slow(name) else len(a)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(a[:n], b[:n])
        meta[name]["warnings"] = sorted({str(w.message) for w in caught})
        for w in meta[name]["warnings"]:
            print(f"warning ({name}): {w}", file=sys.stderr)
    times = {k: [] for k in rows}
    cpu = {k: [] for k in rows}  # process CPU time: robust to other load on a shared machine
    for _ in range(args.repeats):
        for name, run in rows.items():
            n = n_slow if slow(name) else len(a)
            t, c = time.perf_counter(), time.process_time()
            run(a[:n], b[:n])
            times[name].append((time.perf_counter() - t) / n * 1000)
            cpu[name].append((time.process_time() - c) / n * 1000)
    ref = "OpenCV DualTVL1 default"
    base = float(np.median(times[ref])) if ref in times else float("nan")
    cbase = float(np.median(cpu[ref])) if ref in cpu else float("nan")
    h, w = args.size
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "threads": args.threads, "torch": torch.__version__, "pairs": len(a),
              "size": f"{w}x{h}", "video": str(args.video), "rows": {}}
    if dev.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(torch.device(dev))
    print(f"{'':48s} {'wall ms/pair':>12s} {'pairs/s':>9s} {'x OpenCV default':>17s} {'CPU ms/pair':>12s} "
          f"{'x (CPU)':>8s}")
    for name, ts in times.items():
        ms, cms = float(np.median(ts)), float(np.median(cpu[name]))
        result["rows"][name] = {"ms_per_pair": round(ms, 4), "pairs_per_s": round(1000 / ms, 1),
                                "speedup_vs_opencv_default": round(base / ms, 2) if base == base else None,
                                "cpu_ms_per_pair": round(cms, 2),
                                "cpu_speedup": round(cbase / cms, 2) if cbase == cbase else None,
                                **meta[name]}
        x, cx = (f"{base / ms:16.1f}x", f"{cbase / cms:7.1f}x") if base == base else (f"{'-':>17s}", f"{'-':>8s}")
        print(f"{name:48s} {ms:12.3f} {1000 / ms:9.1f} {x} {cms:12.1f} {cx}")
    if not args.skip_startup:
        result["startup_to_first_flow_s"] = round(startup_seconds(), 1)
        print(f"start-up to first flow (kernel cached): {result['startup_to_first_flow_s']} s")
        with tempfile.TemporaryDirectory() as empty:
            result["startup_with_kernel_build_s"] = round(startup_seconds(empty), 1)
        print(f"start-up to first flow (empty cache: kernel built): {result['startup_with_kernel_build_s']} s")
    if not args.skip_memory:
        result["train_step_peak_mib_b8"] = round(train_step_peak_mib(8), 0)
        print(f"TVNet-50 training step, batch 8, 340x256: peak memory +{result['train_step_peak_mib_b8']:.0f} MiB")
    print(f"(ru_maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
