"""Choose pre-smoothing without ground truth: the exact TV-L1 energy (on the raw, unsmoothed
frames) of TVNet-50's flow on frame pairs of the openly licensed videos in ../shared/data/videos.

Usage: python bench/bench_flow_energy.py [--sigmas 0,0.8,1.5] [--thetas 0.3] [--pairs 8]
(theta, the coupling of the TV-L1 splitting, is a solver setting, not part of the energy, so
it can be chosen the same way.)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tvnet_cli.io.video import read_frames
from tvnet_cli.model import TVNet
from data import DATA  # noqa: E402  (same folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sigmas", default="0,0.8,1.5")
    ap.add_argument("--thetas", default="0.3")
    ap.add_argument("--preset", default="tvnet-50")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per video (every 4th frame)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clips = {v.name: read_frames(v, max_frames=4 * args.pairs + 1) for v in sorted((DATA / "videos").glob("*.*"))
             if v.suffix in (".mp4", ".avi")}
    raw = TVNet.from_preset(args.preset, smooth_sigma=0.0)
    print("| preset | smooth_sigma | theta | " + " | ".join(clips) + " | mean |")
    print("|---|---|---|" + "---|" * (len(clips) + 1))
    grid = [(float(s), float(t)) for s in args.sigmas.split(",") for t in args.thetas.split(",")]
    for sigma, theta in grid:
        model = TVNet.from_preset(args.preset, smooth_sigma=sigma, theta=theta)
        per = []
        for frames in clips.values():
            t = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
            f0, f1 = t[0:-1:4], t[1::4][: len(t[0:-1:4])]
            flow = model.predict(f0, f1)
            per.append(float(raw.energy(flow, *raw.prepare(f0, f1)).mean()))
        cells = " | ".join(f"{e:.3f}" for e in per)
        print(f"| {args.preset} | {sigma} | {theta} | {cells} | {np.mean(per):.3f} |", flush=True)


if __name__ == "__main__":
    main()
