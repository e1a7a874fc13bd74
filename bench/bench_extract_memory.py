"""Peak RSS of `tvnet extract --no-frames` against video length (issue 12, item 10).

    python bench/bench_extract_memory.py                       # 795 vs 80 frames, 768x576
    python bench/bench_extract_memory.py --long 300 --short 30 --size 384x288 --json out.json

Writes one synthetic video with PyAV (MPEG-4, or H.264 with `--codec libx264`, in .mp4: a
smooth random texture drifting by a fraction of a pixel per frame, plus noise) in a long
and a short version holding the same first frames, runs `tvnet extract VIDEO --out TMP
--no-frames` on each in a fresh process and reads that process's own peak RSS from the
kernel (`os.wait4`: ru_maxrss of that child alone). `--samples` also records RSS every
0.5 s (psutil) to show where memory goes. The result line says long / short; the target
is <= 1.3 (memory bounded by frame size, not by video length). `--src DIR` runs the
`tvnet_cli` of another source tree (e.g. `git archive <commit> | tar -x -C DIR`): before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def texture_frames(n: int, height: int, width: int, seed: int = 0):
    """`n` frames `(H, W, 3)` uint8 of one smooth texture drifting right and down (0.7, 0.3 px
    per frame), with a little noise; the first k frames do not depend on `n`."""
    rng = np.random.default_rng(seed)
    base = rng.random((height // 8 + 4, width // 8 + 4, 3)).astype(np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    noise = np.random.default_rng(seed + 1)
    for t in range(n):
        y, x = (ys + 0.3 * t) / 8.0, (xs + 0.7 * t) / 8.0  # bilinear upsampling of the base grid
        y0, x0 = np.floor(y).astype(int) % (base.shape[0] - 1), np.floor(x).astype(int) % (base.shape[1] - 1)
        fy, fx = (y - np.floor(y))[..., None], (x - np.floor(x))[..., None]
        img = ((1 - fy) * ((1 - fx) * base[y0, x0] + fx * base[y0, x0 + 1])
               + fy * ((1 - fx) * base[y0 + 1, x0] + fx * base[y0 + 1, x0 + 1]))
        img = 40 + 175 * img + noise.normal(0, 3, img.shape)
        yield np.clip(img, 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: int, height: int, width: int, codec: str = "mpeg4") -> Path:
    sys.path.insert(0, str(ROOT))
    from tvnet_cli.io.video import write_video

    return write_video(path, texture_frames(frames, height, width), codec)


def peak_rss(cmd: list[str], samples: bool, src: Path = ROOT
             ) -> tuple[float, float, float, list[tuple[float, float]]]:
    """Run `cmd` with `tvnet_cli` from `src`; (peak RSS MiB of that process from the kernel,
    wall seconds, CPU seconds (user + system), [(t, RSS MiB)])."""
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    series: list[tuple[float, float]] = []
    done = threading.Event()

    def poll() -> None:
        import psutil

        p = psutil.Process(proc.pid)
        while not done.wait(0.5):
            try:
                series.append((time.perf_counter() - t0, p.memory_info().rss / 2**20))
            except psutil.Error:
                return

    if samples:
        threading.Thread(target=poll, daemon=True).start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", type=int, default=795)
    ap.add_argument("--short", type=int, default=80)
    ap.add_argument("--size", default="768x576", help="WxH of the video")
    ap.add_argument("--codec", default="mpeg4", help="mpeg4 or libx264 (B-frames, frame threads)")
    ap.add_argument("--preset", default="tvnet-10")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra", default="", help="more `tvnet extract` options, e.g. '--batch 4'")
    ap.add_argument("--samples", action="store_true", help="record RSS every 0.5 s (psutil)")
    ap.add_argument("--src", type=Path, default=ROOT,
                    help="source tree whose tvnet_cli runs (e.g. `git archive <commit>` unpacked: before/after)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvnet-mem-") as tmp:
        tmp = Path(tmp)
        for n in (args.short, args.long):
            clip = write_clip(tmp / f"v{n}" / "clip.mp4", n, height, width, args.codec)
            cmd = [sys.executable, "-m", "tvnet_cli", "extract", str(clip), "--out", str(tmp / f"out{n}"),
                   "--no-frames", "--preset", args.preset, "--device", "cpu", "--threads", str(args.threads),
                   *args.extra.split()]
            rss, sec, cpu, series = peak_rss(cmd, args.samples, args.src.resolve())
            flows = len(list((tmp / f"out{n}" / "clip").glob("flow_x_*.jpg")))
            rows.append({"frames": n, "flows": flows, "peak_rss_mib": round(rss, 1), "seconds": round(sec, 1), "cpu_seconds": round(cpu, 1),
                         "samples": [(round(t, 1), round(r)) for t, r in series]})
            print(f"{n:5d} frames ({width}x{height}), {flows} flow fields: peak RSS {rss:7.1f} MiB, {sec:6.1f} s "
                  f"wall, {cpu:6.1f} s CPU",
                  flush=True)
            if series:
                print("   RSS MiB every 0.5 s:", " ".join(f"{r:.0f}" for _, r in series[::4]), flush=True)
    ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"long / short peak RSS: {ratio:.3f} (target <= 1.3)")
    result = {"src": str(args.src), "codec": args.codec, "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python "
                         f"{platform.python_version()}", "preset": args.preset, "size": args.size,
              "threads": args.threads, "extra": args.extra, "rows": rows, "ratio": round(ratio, 3)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
