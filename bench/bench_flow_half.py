"""Build the shipped weights `weights/tvl1-half-trained.pt` and measure what its card reports.

1. Generate training and validation pairs with exact flow (`tvnet make-flow-data`'s library
   functions): procedural textures plus frames of the repository's mmaction2 test videos
   (Apache-2.0), so the file can be rebuilt from a clone alone.
2. Train `tvl1-half`'s TV-L1 scalars (tau, lambda, theta) of its two finest levels with the
   EPE loss (`tvnet train --per-level --train-levels 2`), keeping the step with the lowest
   validation EPE on the generated validation pairs. The coarse levels stay untrained: their
   long unrolls give chaotic gradients (BENCHMARKS.md, "Training on generated data").
3. Evaluate on every real ground-truth pair we have (all held out: none was used to train or
   select), on the front bench's generated scenes and on a third generated set; store the
   held-out EPE in the file's meta and print the card's tables.

Usage: python bench/bench_flow_half.py [--steps 300] [--lr 0.02] [--train scalars] [--train-levels 2]
       [--work DIR] [--out weights/tvl1-half-trained.pt]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_front import BASELINE, epe_rows, model_method, opencv_methods, real_pairs, synthetic_textures
from data import ROOT

from tvnet_cli.data.synthetic import KINDS, make_pairs, training_textures, write_dataset
from tvnet_cli.model import TVNet
from tvnet_cli.train.flow import TrainFlowConfig, train_flow

TEXTURES = ROOT / "tests" / "data" / "videos"  # mmaction2's test clips (Apache-2.0)
PROCEDURAL = 16
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 303


def generate(out: Path, per_kind: int, seed: int) -> Path:
    """As `tvnet make-flow-data OUT --per-kind N --textures tests/data/videos --procedural 16 --seed S`."""
    if not (out / f"{per_kind * len(KINDS) - 1:05d}_flow.flo").is_file():
        write_dataset(out, training_textures([TEXTURES], PROCEDURAL, seed=seed), per_kind, KINDS, seed=seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--train", default="scalars")
    ap.add_argument("--scalar-lr", type=float, default=None, help="learning rate of the scalars (default: --lr)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-levels", type=int, default=2, help="how many of the finest levels train")
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated pairs (default: a temp folder)")
    ap.add_argument("--out", default=str(ROOT / "weights" / "tvl1-half-trained.pt"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="tvl1-half-data-"))
    train_dir, val_dir = generate(work / "train", 100, TRAIN_SEED), generate(work / "val", 25, VAL_SEED)
    cfg = TrainFlowConfig(data=str(train_dir), val_data=(str(val_dir),), init="tvl1-half", per_level=True,
                          train_levels=args.train_levels, train=args.train, lr=args.lr, scalar_lr=args.scalar_lr,
                          steps=args.steps, batch=args.batch, flip=True, transpose=True, val_every=10,
                          eval_limit=100, checkpoint_every=50, threads=args.threads)
    out = Path(args.out)
    t0 = time.time()
    res = train_flow(cfg, out, progress=lambda s, n, l, v: print(f"step {s}/{n} loss {l:.4f} val {v}", flush=True)
                     if s % 10 == 0 else None)
    minutes = (time.time() - t0) / 60
    sets = {"real (held out)": real_pairs(),
            "generated, front bench (24)": [p for k in KINDS for p in make_pairs(k, synthetic_textures(), 6)],
            "generated, unseen seed (100)": [p for k in KINDS for p in
                                             make_pairs(k, training_textures([TEXTURES], PROCEDURAL, seed=TEST_SEED),
                                                        25, seed=TEST_SEED)]}
    trained = TVNet.from_file(out)
    methods = (model_method("tvl1-half (untrained)", TVNet.from_preset("tvl1-half")),
               model_method("tvl1-half-trained", trained))
    rows = {name: {m.name: epe_rows(m, pairs) for m in methods} for name, pairs in sets.items()}
    dis = next(m for m in opencv_methods() if m.name == BASELINE)
    rows["real (held out)"][BASELINE] = epe_rows(dis, sets["real (held out)"])
    meta = dict(trained.meta)
    meta["held_out_epe"] = rows["real (held out)"]["tvl1-half-trained"]
    meta["held_out_baselines"] = {k: v for k, v in rows["real (held out)"].items() if k != "tvl1-half-trained"}
    meta["training_data"] = (f"tvnet make-flow-data: {PROCEDURAL} procedural textures + frames of mmaction2 "
                             "tests/data test.mp4, test.avi (Apache-2.0); train seed 1 (400 pairs), "
                             "validation seed 2 (100 pairs)")
    meta["train_minutes"] = round(minutes, 1)
    trained.save(out, meta=meta)
    ckpt = out.with_name(out.name + ".ckpt")
    for extra in (ckpt, out.with_name(out.stem + ".loss.png")):  # for resuming and looking at, not for shipping
        if extra.exists():
            extra.unlink()
    print(f"\nvalidation EPE by step: {res.val_curve}; kept step {res.best_step}; {minutes:.1f} min")
    print("trained scalars (finest level first):", json.dumps(trained.scalar_values()))
    for name, table in rows.items():
        names = list(next(iter(table.values())))
        print(f"\n{name}\n")
        wide = len(names) <= 6
        print("| model | " + (" | ".join(names) + " | " if wide else "") + "mean |")
        print("|---|" + ("---:|" * len(names) if wide else "") + "---:|")
        for k, epe in table.items():
            cells = " | ".join(f"{epe[n]:.3f}" for n in names) + " | " if wide else ""
            print(f"| {k} | {cells}{np.mean(list(epe.values())):.3f} |")


if __name__ == "__main__":
    main()
