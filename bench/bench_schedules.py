"""Speed and accuracy of TVNet schedules: ms/pair at 340x256 and EPE on every real GT pair.

    python bench/bench_schedules.py tvnet-50 tvnet-3-1-16 tvnet-4-1-12 tvnet-4-2-8 tvl1

Timing: 8 consecutive pairs of test.mp4 (340x256) in one batch on the CPU kernel, best of 3.
EPE: untrained, engine defaults (sigma 0.8, bicubic warp), Grove3 and FlyingChairs 0-2.
For choosing a preset: which schedule is most accurate at a given cost.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_engine import DEFAULT_VIDEO, load_pairs
from bench_flow_smoothing import gt_pairs

from tvnet_cli import TVNet
from tvnet_cli.evaluate import evaluate_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = gt_pairs()
    a, b = load_pairs(DEFAULT_VIDEO, 8)
    ta, tb = (torch.from_numpy(x).permute(0, 3, 1, 2) for x in (a, b))
    print("| schedule | ms/pair | " + " | ".join(d.name for d in pairs) + " | mean |")
    print("|---|---:|" + "---:|" * (len(pairs) + 1))
    for name in args.presets:
        model = TVNet.from_preset(name)
        model.predict(ta, tb)  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            model.predict(ta, tb)
            times.append((time.perf_counter() - t) / len(ta) * 1000)
        res = evaluate_pairs(model, pairs)
        print(f"| {name} | {min(times):.1f} | " + " | ".join(f"{r['epe']:.3f}" for r in res["per_pair"].values())
              + f" | {res['epe']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
