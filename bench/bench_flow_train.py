"""Paper Table 1 behaviour on the ground truth we have: train TVNet-50 on some real pairs,
report EPE before/after on those pairs and on held-out pairs.

Usage: python bench/bench_flow_train.py --train all --pairs 0000000,0000001 --scale 0.25 --steps 300
Training pairs are named among chairs 0000000-0000002 and Grove3; held-out = the others.
`--val NAMES` moves pairs from held-out to validation (model selection, `keep_best`), so
held-out numbers stay untouched by any choice. All EPEs are measured at the training scale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from data import DATA

from tvnet_cli.train.flow import TrainFlowConfig, train_flow



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="all")
    ap.add_argument("--pairs", default="0000000,0000001")
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--u0-lr", type=float, default=0.3)
    ap.add_argument("--scalar-lr", type=float, default=None)
    ap.add_argument("--u0-decay", type=float, default=0.0)
    ap.add_argument("--u0-smooth", type=float, default=0.0)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--transpose", action="store_true")
    ap.add_argument("--val", default="", help="validation pair names (comma separated); default: none")
    ap.add_argument("--val-every", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smooth-sigma", type=float, default=None)
    ap.add_argument("--crop", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_flow_train.pt")
    args = ap.parse_args()
    names = ("0000000", "0000001", "0000002", "Grove3")
    pairs = tuple(args.pairs.split(","))
    val = tuple(n for n in args.val.split(",") if n)
    held = tuple(n for n in names if n not in pairs + val)
    roots = (str(DATA / "chairs"), str(DATA / "middlebury"))
    common = dict(pairs=pairs, train=args.train, lr=args.lr, u0_lr=args.u0_lr, scalar_lr=args.scalar_lr,
                  u0_decay=args.u0_decay, u0_smooth=args.u0_smooth, flip=args.flip, transpose=args.transpose,
                  steps=args.steps, scale=args.scale, smooth_sigma=args.smooth_sigma, seed=args.seed,
                  crop=tuple(int(v) for v in args.crop.split("x")) if args.crop else None,
                  val_every=args.val_every or max(1, args.steps // 3), checkpoint_every=10**9, threads=args.threads)
    # training data: a folder holding the named pairs (chairs, or Middlebury for Grove3)
    data = roots[1] if pairs == ("Grove3",) else roots[0]
    if "Grove3" in pairs and len(pairs) > 1:
        raise SystemExit("train on chairs pairs or on Grove3 alone (one dataset folder per run)")
    cfg = TrainFlowConfig(data=data, val_data=roots, val_pairs=val or held, keep_best=bool(val), **common)
    t0 = time.time()
    res = train_flow(cfg, args.out, progress=lambda s, n, l, v: print(f"step {s}/{n} loss {l:.3f} val {v}", flush=True)
                     if s % 25 == 0 else None)
    from tvnet_cli.evaluate import evaluate_pairs
    from tvnet_cli.model import TVNet
    from tvnet_cli.data.pairs import load_gt_pairs

    held_pairs = [p for r in roots for p in load_gt_pairs(r, None, ()) if p.name in held]
    untrained = TVNet.from_preset("tvnet-50", **({"smooth_sigma": args.smooth_sigma} if args.smooth_sigma else {}))
    trained = TVNet.from_file(args.out)
    h_before, h_after = (evaluate_pairs(m, held_pairs, args.scale) for m in (untrained, trained))
    print(f"\n{time.time() - t0:.0f} s; {vars(args)}; saved step {res.best_step or args.steps}; "
          f"scalars {trained.scalar_values()}\n")
    print("| split | pair | EPE before | EPE after |")
    print("|---|---|---|---|")
    rows = [("training", res.before["train"], res.after["train"]), ("held-out", h_before, h_after)]
    if val:
        rows.insert(1, ("validation", res.before["val"], res.after["val"]))
    for split, b, a in rows:
        for name in b["per_pair"]:
            print(f"| {split} | {name} | {b['per_pair'][name]['epe']:.3f} | {a['per_pair'][name]['epe']:.3f} |")
        print(f"| {split} | **mean** | {b['epe']:.3f} | {a['epe']:.3f} |")
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "before": res.before, "after": res.after, "best_step": res.best_step,
         "held_before": h_before, "held_after": h_after}, default=str))


if __name__ == "__main__":
    main()
