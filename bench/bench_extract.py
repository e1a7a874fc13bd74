"""Benchmark `tvnet extract` end to end against an OpenCV DualTVL1 extraction loop.

    python bench/bench_extract.py                   # speed (test.mp4, 340x256) + memory
    python bench/bench_extract.py --frames 31 --threads 2 --skip-memory

Speed: the first `--frames` frames of test.mp4 (340x256; ../shared/data or $TVNET_SHARED_DATA,
else the shipped examples/test.avi, 320x240) are written to a lossless FFV1 clip so both
sides read the same frames; then, in this one run,
  - `tvnet extract` (library call: decode, TVNet-50, quantise, JPEG flow_x/flow_y/img),
  - OpenCV DualTVL1 with default settings (5 scales, 5 warps, 300 iterations) in the loop
    denseflow-style tools run (decode, grey, calc, quantise, cv2.imwrite JPEGs),
  - OpenCV DualTVL1 set to TVNet-50's schedule (1 scale, 1 warp, 50 iterations),
and flows/s end to end (wall time) and the ratios are printed.
Memory: peak RSS of `tvnet extract` in a fresh process for a 10 s and a 100 s generated
video (340x256, 25 fps, full size, JPEG flow + RGB frames, TVNet with 1 iteration: the
pipeline, not the model, is under test), to show that memory does not grow with video
length (2500 frames of 340x256 RGB held in memory would be 650 MB).
Timings exclude the one-time torch.compile warm-up of the engine (a warm-up extraction of
3 frames runs first) and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from data import VIDEO

ROOT = Path(__file__).resolve().parents[1]


def lossless_clip(src: Path, dst: Path, frames: int) -> int:
    """First `frames` frames of `src` -> FFV1 .mkv (lossless): identical input for every method."""
    import av

    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s = out.add_stream("ffv1", rate=25)
        vs = inp.streams.video[0]
        s.width, s.height, s.pix_fmt = vs.width, vs.height, "yuv444p"
        for frame in inp.decode(vs):
            rgb = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for p in s.encode(rgb):
                out.mux(p)
            n += 1
            if n >= frames:
                break
        for p in s.encode():
            out.mux(p)
    return n


def bench_tvnet(clip: Path, out: Path, threads: int, device: str, batch: int) -> tuple[int, float]:
    from tvnet_cli.extract import ExtractConfig, extract

    cfg = ExtractConfig(out=out, preset="tvnet-50", torch_threads=threads, devices=(device,),
                        batch=batch, overwrite=True)
    t0 = time.perf_counter()
    s = extract([clip], cfg)
    dt = time.perf_counter() - t0
    assert s.failed == 0, s.results
    return s.flows, dt


def stage_costs(video: Path, count: int, tmp: Path, device: str, batch: int, quality: int = 95
                ) -> dict[str, float]:
    """Milliseconds per flow field of each pipeline stage, measured alone: CPU stages on one
    thread (decode one frame of the original H.264 `video` to RGB, as datasets are distributed;
    JPEG-encode flow_x, flow_y and the RGB frame; write the three
    files), device stages at `batch` (host-to-device of the uint8 pair, TVNet-50, quantise,
    device-to-host of the uint8 field). Tells how many CPU cores a given device rate needs."""
    import io

    import torch
    from PIL import Image

    from tvnet_cli import TVNet
    from tvnet_cli.io.quantize import quantize
    from tvnet_cli.io.video import iter_frames

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = time.perf_counter()
    frames = [f for f, _ in zip(iter_frames(video, threads=1, check=False), range(count))]
    out = {"decode": (time.perf_counter() - t) / len(frames) * 1000}
    torch.set_num_threads(threads)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = TVNet.from_preset("tvnet-50").to(dev)
    cycled = [frames[i % len(frames)] for i in range(batch + 1)]  # a short video is cycled through
    host = torch.from_numpy(np.stack(cycled)).permute(0, 3, 1, 2)  # (B+1, 3, H, W) uint8
    n = 5
    pin = host.pin_memory() if dev.type == "cuda" else host
    for _ in range(2):  # warm-up, then timed
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            x = pin.to(dev, non_blocking=True)
        sync()
        t1 = time.perf_counter()
        for _ in range(n):
            flow = model.predict(x[:-1], x[1:])
        sync()
        t2 = time.perf_counter()
        for _ in range(n):
            q = quantize(flow, 20.0)
        sync()
        t3 = time.perf_counter()
        for _ in range(n):
            qh = q.cpu().numpy()
        t4 = time.perf_counter()
    per = 1000 / (n * batch)
    out.update({"to device": (t1 - t0) * per, "TVNet-50": (t2 - t1) * per, "quantise": (t3 - t2) * per,
                "to host": (t4 - t3) * per})
    enc, wr = [], []
    for _ in range(5):  # best of 5: single-thread costs, without other load's spikes
        blobs = []
        t = time.perf_counter()
        for i in range(batch):
            for img in (qh[i, 0], qh[i, 1], cycled[i]):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=quality)
                blobs.append(buf.getvalue())
        enc.append((time.perf_counter() - t) / batch * 1000)
        t = time.perf_counter()
        for k, b in enumerate(blobs):
            (tmp / f"stage_{k:05d}.jpg").write_bytes(b)
        wr.append((time.perf_counter() - t) / batch * 1000)
    out["JPEG encode"], out["write"] = min(enc), min(wr)
    return out


def bench_opencv(clip: Path, out: Path, threads: int, tvnet50: bool, bound: float = 20.0) -> tuple[int, float]:
    """Decode (PyAV), grey, DualTVL1.calc, quantise, write flow_x/flow_y/img JPEGs (cv2)."""
    import av
    import cv2

    cv2.setNumThreads(threads)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    if tvnet50:
        tvl1.setScalesNumber(1)
        tvl1.setWarpingsNumber(1)
        tvl1.setInnerIterations(50)
        tvl1.setOuterIterations(1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prev, n = None, 0
    with av.open(str(clip)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            bgr = frame.to_ndarray(format="bgr24")
            cv2.imwrite(str(out / f"img_{i + 1:05d}.jpg"), bgr)
            grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            if prev is not None:
                flow = tvl1.calc(prev, grey, None)  # (H, W, 2)
                q = np.clip(np.round(255 * (flow + bound) / (2 * bound)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(out / f"flow_x_{i:05d}.jpg"), q[..., 0])
                cv2.imwrite(str(out / f"flow_y_{i:05d}.jpg"), q[..., 1])
                n += 1
            prev = grey
    return n, time.perf_counter() - t0


def generated_clip(path: Path, seconds: int, fps: int = 25, size: tuple[int, int] = (256, 340)) -> None:
    """A moving smooth texture, MPEG-4, `seconds` long."""
    from PIL import Image

    from tvnet_cli.io.video import write_video

    h, w = size
    frames = seconds * fps
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (h // 8, (w + frames) // 8 + 1, 3), dtype=np.uint8)
    tex = np.asarray(Image.fromarray(low).resize((low.shape[1] * 8, h), Image.BICUBIC))
    write_video(path, (tex[:, t:t + w] for t in range(frames)), "mpeg4", fps)


_MEM_CHILD = """
import json, resource, sys, torch
from tvnet_cli.extract import ExtractConfig, extract
cfg = ExtractConfig(out=sys.argv[2], iters=1, torch_threads=int(sys.argv[3]))
s = extract([sys.argv[1]], cfg)
print(json.dumps({"flows": s.flows, "run_s": s.seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_memory(tmp: Path, threads: int) -> list[dict]:
    rows = []
    for seconds in (10, 100):
        clip = tmp / f"gen_{seconds}s.avi"
        generated_clip(clip, seconds)
        r = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(clip), str(tmp / f"mem{seconds}"),
                            str(threads)], capture_output=True, text=True, check=True)
        rows.append({"video_s": seconds, **json.loads(r.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16, help="frames of test.mp4 to extract (pairs = frames - 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenCV threads")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-opencv", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clip = tmp / "clip.mkv"
        n = lossless_clip(VIDEO, clip, args.frames)
        from tvnet_cli.io.video import probe

        info = probe(VIDEO)
        print(f"clip: first {n} frames of {VIDEO.name} ({info.width}x{info.height}), {n - 1} flow fields; "
              f"threads={args.threads}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
        warm = tmp / "warm.mkv"
        lossless_clip(VIDEO, warm, 3)
        _, cold = bench_tvnet(warm, tmp / "warm", args.threads, args.device, args.batch)
        print(f"warm-up (3 frames, includes any one-time compile): {cold:.1f} s")
        flows, dt = bench_tvnet(clip, tmp / "tvnet", args.threads, args.device, args.batch)
        tv = flows / dt
        print(f"tvnet extract (TVNet-50, {args.device}, batch {args.batch}): {flows} flows in {dt:.1f} s "
              f"= {tv:.2f} flows/s")
        costs = stage_costs(VIDEO, 300, tmp, args.device, args.batch)  # up to 300 frames: opening amortised
        cpu = sum(v for k, v in costs.items() if k in ("decode", "JPEG encode", "write"))
        print(f"\nwhere the time goes (ms per flow field; CPU stages on one thread, {args.device} stages at "
              f"batch {args.batch}):")
        for k, v in costs.items():
            print(f"  {k:12s} {v:8.3f} ms")
        print(f"  CPU side (decode + encode + write) = {cpu:.2f} ms/flow: {1000 / cpu:.0f} flows/s per core, "
              f"{4000 * cpu / 1000:.1f} cores for 4,000 flows/s\n")
        if not args.skip_opencv:
            for label, fast in (("OpenCV DualTVL1 defaults (5-5-300)", False),
                                ("OpenCV DualTVL1 at 1-1-50", True)):
                flows, dt = bench_opencv(clip, tmp / f"cv{int(fast)}", args.threads, fast)
                print(f"{label}: {flows} flows in {dt:.1f} s = {flows / dt:.2f} flows/s; "
                      f"tvnet extract is {tv / (flows / dt):.1f}x")
        if not args.skip_memory:
            for row in bench_memory(tmp, args.threads):
                print(f"memory: {row['video_s']:>3d} s video, {row['flows']} flows at 340x256 in "
                      f"{row['run_s']:.1f} s: peak RSS {row['peak_rss_mb']:.0f} MB")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
