"""Time and memory of one end-to-end training step (TVNet -> flow stack -> ResNet) at
224x224, batch 8, stacks of 6 frames (5 flow fields), as in the paper's training.

Each configuration runs in its own process (peak RSS is per process); the RGB-only
ResNet-18 step is the baseline measured in the same run. Frames are random uint8 (the
cost of a training step does not depend on the content: no early stopping in training).

    python bench/bench_action.py                 # all configurations, markdown table
    python bench/bench_action.py --steps 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = [
    # name, overrides of ActionTrainConfig, batch
    ("RGB ResNet-18 (baseline, no TVNet)", {"modality": "rgb"}, 8),
    ("TVNet-50 frozen + ResNet-18", {"freeze_tvnet": True}, 8),
    ("TVNet-10 trained + ResNet-18", {"tvnet": "tvnet-10"}, 8),
    ("TVNet-50 trained + ResNet-18, checkpointing 8 pairs", {"checkpoint_pairs": 8}, 8),
    ("TVNet-50 trained + ResNet-18, no checkpointing", {}, 2),
]


def child(overrides: dict, batch: int, steps: int, threads: int, size: int) -> dict:
    import torch
    import torch.nn.functional as F

    from tvnet_cli.train.action import ActionTrainConfig, build_model, make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ActionTrainConfig(input_size=size, batch=batch, **overrides)
    model = build_model(cfg, 101)
    opt = make_optimizer(model, cfg)
    clips = torch.randint(0, 256, (batch, 1, cfg.length, 3, size, size), dtype=torch.uint8)  # (B, S, L, 3, H, W)
    labels = torch.randint(0, 101, (batch,))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    walls, cpus = [], []
    for i in range(steps + 1):  # first step is warm-up
        t, c = time.perf_counter(), time.process_time()
        logits, energy = model(clips)
        loss = F.cross_entropy(logits, labels) + cfg.flow_loss * energy
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "model_rss_gib": rss0 / 2**20}


def saved_bytes(overrides: dict, batch: int, threads: int, size: int) -> float:
    """GiB of tensors autograd keeps for the backward pass after one forward (no RSS noise)."""
    import torch

    from tvnet_cli.train.action import ActionTrainConfig, build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ActionTrainConfig(input_size=size, batch=batch, **overrides)
    model = build_model(cfg, 101)
    clips = torch.randint(0, 256, (batch, 1, cfg.length, 3, size, size), dtype=torch.uint8)
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(clips)
    return total[0] / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--only", type=int, nargs="*", help="indices of CONFIGS to run")
    ap.add_argument("--saved", action="store_true",
                    help="only report the GiB autograd saves for backward (one forward per config)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.saved:
        for i, (name, over, batch) in enumerate(CONFIGS):
            if not a.only or i in a.only:
                print(f"| {name} | {batch} | {saved_bytes(over, batch, a.threads, a.size):.2f} GiB saved for backward |",
                      flush=True)
        return
    if a.child:
        spec = json.loads(a.child)
        print(json.dumps(child(spec["overrides"], spec["batch"], a.steps, a.threads, a.size)))
        return
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch threads {a.threads}, "
          f"{a.size}x{a.size}, stacks of 6 frames, {a.steps} timed steps (median)")
    print("| configuration | batch | s / step (wall) | CPU s / step | x baseline (wall) | peak RSS GiB |")
    print("|---|---|---|---|---|---|")
    base = None
    for i, (name, over, batch) in enumerate(CONFIGS):
        if a.only and i not in a.only:
            continue
        spec = json.dumps({"overrides": over, "batch": batch})
        r = subprocess.run([sys.executable, __file__, "--child", spec, "--steps", str(a.steps),
                            "--threads", str(a.threads), "--size", str(a.size)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(f"| {name} | {batch} | failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode} | | | |")
            continue
        m = json.loads(r.stdout.strip().splitlines()[-1])
        base = base or m["wall_s"]
        print(f"| {name} | {batch} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} | {m['wall_s'] / base:.1f} | "
              f"{m['peak_rss_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
