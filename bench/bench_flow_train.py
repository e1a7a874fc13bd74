"""Paper Table 1 behaviour on the ground truth we have: train TVNet-50 on some real pairs,
report EPE before/after on those pairs and on held-out pairs.

Usage: python bench/bench_flow_train.py --train all --pairs 0000000,0000001 --scale 0.25 --steps 300
Training pairs come from ../shared/data/chairs; held-out = the other chairs pairs + Grove3.
All EPEs are measured at the training scale (u0 is in pixels of the size it was trained at).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tvnet_cli.train_flow import TrainFlowConfig, train_flow

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="all")
    ap.add_argument("--pairs", default="0000000,0000001")
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--u0-lr", type=float, default=0.3)
    ap.add_argument("--smooth-sigma", type=float, default=None)
    ap.add_argument("--crop", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_flow_train.pt")
    args = ap.parse_args()
    pairs = tuple(args.pairs.split(","))
    held = tuple(n for n in ("0000000", "0000001", "0000002") if n not in pairs) + ("Grove3",)
    cfg = TrainFlowConfig(
        data=str(DATA / "chairs"), pairs=pairs, val_data=(str(DATA / "chairs"), str(DATA / "middlebury")),
        val_pairs=held, train=args.train, lr=args.lr, u0_lr=args.u0_lr, steps=args.steps, scale=args.scale,
        smooth_sigma=args.smooth_sigma, crop=tuple(int(v) for v in args.crop.split("x")) if args.crop else None,
        val_every=max(1, args.steps // 3), checkpoint_every=10**9, threads=args.threads)
    t0 = time.time()
    res = train_flow(cfg, args.out, progress=lambda s, n, l, v: print(f"step {s}/{n} loss {l:.3f} val {v}", flush=True)
                     if s % 25 == 0 else None)
    print(f"\n{time.time() - t0:.0f} s; train={args.train} pairs={pairs} scale={args.scale} steps={args.steps} "
          f"lr={args.lr} u0_lr={args.u0_lr} smooth_sigma={args.smooth_sigma} crop={args.crop}\n")
    print("| split | pair | EPE before | EPE after |")
    print("|---|---|---|---|")
    for split in ("train", "val"):
        b, a = res.before[split], res.after[split]
        for name in b["per_pair"]:
            print(f"| {'training' if split == 'train' else 'held-out'} | {name} | "
                  f"{b['per_pair'][name]['epe']:.3f} | {a['per_pair'][name]['epe']:.3f} |")
        print(f"| {'training' if split == 'train' else 'held-out'} | **mean** | {b['epe']:.3f} | {a['epe']:.3f} |")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"before": res.before, "after": res.after}, default=str))


if __name__ == "__main__":
    main()
