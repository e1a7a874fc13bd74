"""The speed/accuracy front: mean EPE on every real ground-truth pair (and optionally on
synthetic pairs with exact flow) and CPU ms/pair at 340x256, OpenCV methods and TVNet
schedules side by side in one run (issue 13).

    python bench/bench_front.py [--tvnet tvnet-50,tvnet-4-1-12,tvl1,tvl1@0] [--synthetic 6]
                                [--rounds 5] [--json out.json]

TVNet specs are preset names (any `tvnet-S-W-I`, per-level parts joined by dots) with an
optional `@sigma` for the pre-smoothing (`tvl1@0` = tvl1 without it) and optional config
overrides after a colon, joined by semicolons (`tvl1-half:median=0;coarsest_side=0`).
Synthetic scenes: `--synthetic N` per kind at 256x340 (seed 0) by default; `--synthetic-size`,
`--synthetic-kinds` and `--synthetic-seed` give the large-frame sets of BENCHMARKS.md, e.g.
`--synthetic 4 --synthetic-kinds driving --synthetic-size 375x1242 --synthetic-seed 9 --no-time`.
Timing: 8 consecutive frame pairs of the benchmark video (bench/data.py) at 340x256, RGB
uint8 in; "batch 1" runs them one at a time (OpenCV: always, it has no batches), "batch 8"
in one call. Rounds go round robin over the methods (order rotated each round); the table
gives the best of the rounds (other processes only ever add time; medians are in the JSON),
and ratios to OpenCV DIS-medium measured in the same rounds, because the machine is shared:
compare ratios, not milliseconds, across runs.
Slow methods (> 50 ms/pair in the warm-up) are timed on `--slow-pairs` pairs per round.
Both wall time and CPU time (all threads of the process) per pair are reported: on a machine
whose cores are all busy with extraction workers, CPU time is what a pair costs.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch loads

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from data import DATA, VIDEO, frame_pairs, read_frames  # noqa: E402

from tvnet_cli.data.synthetic import KINDS, make_pairs, procedural_texture  # noqa: E402
from tvnet_cli.io.datasets import PairData, find_pairs, load_image, load_pair  # noqa: E402
from tvnet_cli.metrics import flow_errors  # noqa: E402
from tvnet_cli.model import TVNet  # noqa: E402

SIZE = (256, 340)  # (H, W) of the timing frames
BASELINE = "OpenCV DIS medium"
GT_TEXTURE_SEQS = {"Grove3"}  # frames of ground-truth pairs are not used as textures


@dataclass
class Method:
    """A flow method: `flow(f0, f1)` on `(H, W, 3)` uint8 RGB -> `(H, W, 2)`, and `batch(a, b)`
    on `(N, H, W, 3)` arrays (None: no batched form, batch 8 = eight single calls)."""

    name: str
    flow: Callable[[np.ndarray, np.ndarray], np.ndarray]
    batch: Callable[[np.ndarray, np.ndarray], object] | None = None
    info: dict = field(default_factory=dict)


def _grey(f: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)


def opencv_methods() -> list[Method]:
    """OpenCV's methods with their own defaults (DualTVL1 also at the paper's 5-5-50)."""

    def calc(make: Callable[[], object]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        algo = make()
        return lambda f0, f1: algo.calc(_grey(f0), _grey(f1), None)

    def farneback(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:  # OpenCV's sample parameters
        return cv2.calcOpticalFlowFarneback(_grey(f0), _grey(f1), None, 0.5, 3, 15, 3, 5, 1.2, 0)

    tvl1_5_5_50 = dict(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.0,
                       innnerIterations=50, outerIterations=1, scaleStep=0.5, gamma=0.0, medianFiltering=1)
    return [
        Method("OpenCV DIS ultrafast", calc(lambda: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST))),
        Method("OpenCV DIS fast", calc(lambda: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST))),
        Method(BASELINE, calc(lambda: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM))),
        Method("OpenCV Farneback", farneback),
        Method("OpenCV DeepFlow", calc(cv2.optflow.createOptFlow_DeepFlow)),
        Method("OpenCV DualTVL1 5-5-50", calc(lambda: cv2.optflow.DualTVL1OpticalFlow_create(**tvl1_5_5_50))),
        Method("OpenCV DualTVL1 default", calc(cv2.optflow.DualTVL1OpticalFlow_create)),
    ]


def tvnet_method(spec: str) -> Method:
    """`preset[@sigma][:key=value;...]` -> a TVNet method (C kernel on the CPU)."""
    head, _, changes = spec.partition(":")
    name, _, sigma = head.partition("@")
    overrides = {"smooth_sigma": float(sigma)} if sigma else {}
    for item in filter(None, changes.split(";")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = ast.literal_eval(value.strip())
    return model_method(f"TVNet {spec}", TVNet.from_preset(name, **overrides))


def model_method(name: str, model: TVNet) -> Method:
    """A TVNet model as a method (C kernel on the CPU)."""
    model.eval()

    def tensors(a: np.ndarray) -> torch.Tensor:  # (N, H, W, 3) uint8 -> (N, 3, H, W)
        return torch.from_numpy(np.require(a, requirements=["C", "W"])).permute(0, 3, 1, 2)

    def flow(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
        return model.predict(tensors(f0[None]), tensors(f1[None]))[0].permute(1, 2, 0).numpy()

    cfg = model.config
    return Method(name, flow, lambda a, b: model.predict(tensors(a), tensors(b)),
                  {"config": cfg.to_dict(), "schedule": cfg.name, "smooth_sigma": cfg.smooth_sigma})


def real_pairs() -> list[PairData]:
    """Every real pair with ground truth in the shared data (Middlebury, FlyingChairs)."""
    pairs = []
    for root in (DATA / "middlebury", DATA / "chairs"):
        if root.is_dir():
            pairs += [load_pair(p) for p in find_pairs(root, require_gt=True)[1]]
    return pairs


def synthetic_textures(size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """Textures for the synthetic scenes: Middlebury frames without ground truth, frames of
    bikes.mp4 (a street) and test.mp4, and procedural textures (none from a GT pair); for
    scenes larger than 256x340 also three procedural ones of 600x1300."""
    tex = []
    mid = DATA / "middlebury"
    for seq in sorted(p for p in mid.iterdir() if p.is_dir() and p.name not in GT_TEXTURE_SEQS) if mid.is_dir() else []:
        tex.append(load_image(seq / "frame10.png").astype(np.float32))
    for video, decode in ((DATA / "videos" / "bikes.mp4", (272, 640)), (VIDEO, SIZE)):
        if video.is_file():
            frames = read_frames(video, 200, decode)
            tex += [f.astype(np.float32) for f in frames[::60]]
    rng = np.random.default_rng(11)
    tex += [procedural_texture((320, 440), rng) for _ in range(4)]
    if max(size) > max(SIZE):
        big = np.random.default_rng(5)
        tex += [procedural_texture((600, 1300), big) for _ in range(3)]
    return tex


def epe_rows(method: Method, pairs: list[PairData]) -> dict[str, float]:
    return {p.name: flow_errors(method.flow(p.frame0, p.frame1), p.gt, p.valid)["epe"] for p in pairs}


def time_round(method: Method, a: np.ndarray, b: np.ndarray, n1: int) -> tuple[float, float | None, float, float | None]:
    """Wall ms/pair over `n1` single pairs and over one batch of all (None without batches),
    then the same as CPU ms/pair (this process's CPU time: every thread's, so a method that
    uses two threads for half the wall time costs the same as one that uses one)."""
    t, c = time.perf_counter(), time.process_time()
    for i in range(n1):
        method.flow(a[i], b[i])
    single, single_cpu = ((time.perf_counter() - t) / n1 * 1000, (time.process_time() - c) / n1 * 1000)
    if method.batch is None:
        return single, None, single_cpu, None
    t, c = time.perf_counter(), time.process_time()
    method.batch(a, b)
    return single, (time.perf_counter() - t) / len(a) * 1000, single_cpu, (time.process_time() - c) / len(a) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tvnet", default="tvnet-50,tvnet-4-1-12,tvl1", help="comma-separated TVNet specs")
    ap.add_argument("--opencv", default="all", help="'all', 'none' (DIS medium is always kept: the baseline) "
                                                    "or comma-separated names as in the table")
    ap.add_argument("--synthetic", type=int, default=0, help="synthetic pairs per kind (%s)" % ", ".join(KINDS))
    ap.add_argument("--synthetic-kinds", default=",".join(KINDS), help="comma-separated kinds")
    ap.add_argument("--synthetic-size", default="256x340", help="HxW of the synthetic scenes")
    ap.add_argument("--synthetic-seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slow-pairs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-time", action="store_true", help="EPE only")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    methods = opencv_methods()
    if args.opencv != "all":
        keep = {BASELINE} | (set() if args.opencv == "none" else set(args.opencv.split(",")))
        methods = [m for m in methods if m.name in keep]
    methods += [tvnet_method(s) for s in args.tvnet.split(",") if s]
    real = real_pairs()
    if not real:
        raise SystemExit(f"no ground-truth pairs under {DATA}: set TVNET_SHARED_DATA")
    kinds = args.synthetic_kinds.split(",")
    size = tuple(int(v) for v in args.synthetic_size.split("x"))
    textures = synthetic_textures(size) if args.synthetic else []
    synth = [p for k in kinds for p in make_pairs(k, textures, args.synthetic, size, args.synthetic_seed)]
    load0 = os.getloadavg()
    print(f"real GT pairs: {', '.join(p.name for p in real)} ({DATA}); synthetic: {len(synth)}; "
          f"{args.threads} threads; {os.cpu_count()} cores; load average {load0[0]:.1f}", file=sys.stderr)

    results = {m.name: {"info": m.info} for m in methods}
    for m in methods:
        t = time.perf_counter()
        results[m.name]["real"] = epe_rows(m, real)
        if synth:
            results[m.name]["synthetic"] = epe_rows(m, synth)
        print(f"EPE {m.name}: {np.mean(list(results[m.name]['real'].values())):.3f} "
              f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)

    if not args.no_time:
        a, b = frame_pairs(VIDEO, 8, SIZE)
        n1 = {}
        for m in methods:  # warm-up; decide who is slow
            single = time_round(m, a, b, 1)[0]
            n1[m.name] = args.slow_pairs if single > 50 else len(a)
        times: dict[str, list[tuple[float, float | None, float, float | None]]] = {m.name: [] for m in methods}
        for r in range(args.rounds):
            order = methods[r % len(methods):] + methods[:r % len(methods)]
            for m in order:
                times[m.name].append(time_round(m, a, b, n1[m.name]))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        base = min(t[0] for t in times[BASELINE])
        base_cpu = min(t[2] for t in times[BASELINE])
        for m in methods:
            ts = times[m.name]
            b1, cpu1 = min(t[0] for t in ts), min(t[2] for t in ts)
            b8 = min(t[1] for t in ts) if ts[0][1] is not None else b1
            cpu8 = min(t[3] for t in ts) if ts[0][3] is not None else cpu1
            results[m.name].update(ms_b1=b1, ms_b8=b8, x_base_b1=b1 / base, x_base_b8=b8 / base,
                                   cpu_b1=cpu1, cpu_b8=cpu8, x_base_cpu_b1=cpu1 / base_cpu, x_base_cpu_b8=cpu8 / base_cpu,
                                   median_b1=statistics.median(t[0] for t in ts), timed_pairs=n1[m.name],
                                   runs_b1=[t[0] for t in ts], runs_b8=[t[1] for t in ts])

    ref = results.get("OpenCV DualTVL1 5-5-50", {})
    names = [p.name for p in real]
    head = "| method | " + " | ".join(names) + " | mean EPE real |"
    sep = "|---|" + "---:|" * (len(names) + 1)
    if synth:
        head += " mean EPE synthetic | " + " | ".join(kinds) + " |"
        sep += "---:|" * (len(kinds) + 1)
    if not args.no_time:
        head += (" ms/pair b1 | x DIS-medium | ms/pair b8 | x DIS-medium b8 | CPU ms/pair b1 | x DIS-medium CPU |"
                 " CPU ms/pair b8 | x DIS-medium CPU b8 |")
        sep += "---:|" * 8
    if ref:
        head += " worst real pair / OpenCV 5-5-50 |" + (" worst synthetic pair / OpenCV 5-5-50 |" if synth else "")
        sep += "---:|" * (2 if synth else 1)
    print(f"\nreal GT pairs: {', '.join(names)}; synthetic pairs: {len(synth)} ({args.synthetic} per kind, "
          f"{args.synthetic_size}, seed {args.synthetic_seed}); "
          f"timing 340x256, {args.threads} threads, best of {args.rounds} rounds; load average "
          f"{load0[0]:.1f} at the start\n")
    print(head)
    print(sep)
    for m in methods:
        r = results[m.name]
        r["mean_real"] = float(np.mean(list(r["real"].values())))
        row = f"| {m.name} | " + " | ".join(f"{r['real'][n]:.3f}" for n in names) + f" | {r['mean_real']:.3f} |"
        if synth:
            r["mean_synthetic"] = float(np.mean(list(r["synthetic"].values())))
            r["mean_by_kind"] = {k: float(np.mean([v for n, v in r["synthetic"].items() if n.startswith(k + "-")]))
                                 for k in kinds}
            row += f" {r['mean_synthetic']:.3f} | " + " | ".join(f"{r['mean_by_kind'][k]:.3f}" for k in kinds) + " |"
        if not args.no_time:
            row += (f" {r['ms_b1']:.1f} | {r['x_base_b1']:.2f} | {r['ms_b8']:.1f} | {r['x_base_b8']:.2f} |"
                    f" {r['cpu_b1']:.1f} | {r['x_base_cpu_b1']:.2f} | {r['cpu_b8']:.1f} | {r['x_base_cpu_b8']:.2f} |")
        if ref:
            r["worst_ratio_real"] = max(r["real"][n] / ref["real"][n] for n in names)
            row += f" {r['worst_ratio_real']:.3f} |"
            if synth:
                r["worst_ratio_synthetic"] = max(v / ref["synthetic"][n] for n, v in r["synthetic"].items())
                row += f" {r['worst_ratio_synthetic']:.3f} |"
        print(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"real_pairs": names, "synthetic_per_kind": args.synthetic,
                                         "threads": args.threads, "rounds": args.rounds, "load_start": load0,
                                         "baseline": BASELINE, "results": results}, indent=1))


if __name__ == "__main__":
    main()
