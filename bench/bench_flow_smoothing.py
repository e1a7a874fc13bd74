"""Pre-smoothing (smooth_sigma) and warp interpolation vs EPE on every real ground-truth pair
in ../shared/data.

Usage: python bench/bench_flow_smoothing.py [--presets tvnet-50,tvnet-3-1-10,tvl1] [--sigmas 0,0.8]
       [--warps bilinear,bicubic]
Prints a markdown table (EPE per pair and mean) and writes JSON next to it if --json is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from data import DATA

from tvnet_cli.io.datasets import find_pairs, load_pair
from tvnet_cli.evaluate import evaluate_pairs
from tvnet_cli.model import TVNet



def gt_pairs() -> list:
    pairs = []
    for root in (DATA / "middlebury", DATA / "chairs"):
        pairs += [load_pair(p) for p in find_pairs(root, require_gt=True)[1]]
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tvnet-50,tvnet-3-1-10,tvl1")
    ap.add_argument("--sigmas", default="0,0.8")
    ap.add_argument("--warps", default="bicubic", help="warp interpolations to compare")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = gt_pairs()
    results = []
    print("| preset | smooth_sigma | warp | " + " | ".join(d.name for d in pairs) + " | mean | s/pair |")
    print("|---|---|---|" + "---|" * (len(pairs) + 2))
    settings = [(p, float(s), w) for p in args.presets.split(",") for s in args.sigmas.split(",")
                for w in args.warps.split(",")]
    for preset, sigma, warp in settings:
        model = TVNet.from_preset(preset, smooth_sigma=sigma, warp=warp)
        t0 = time.time()
        epes = [r["epe"] for r in evaluate_pairs(model, pairs)["per_pair"].values()]
        sec = (time.time() - t0) / len(pairs)
        results.append({"preset": preset, "sigma": sigma, "warp": warp,
                        "epe": dict(zip([d.name for d in pairs], epes)),
                        "mean": float(np.mean(epes)), "sec_per_pair": sec})
        print(f"| {preset} | {sigma} | {warp} | " + " | ".join(f"{e:.3f}" for e in epes)
              + f" | {np.mean(epes):.3f} | {sec:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
