"""Training TVNet on optical flow: supervised (EPE to ground truth, paper Sec. 5.1) or
unsupervised (the exact TV-L1 energy on unlabelled video, no ground truth needed).

`train_flow(cfg, out, progress=...)` is the one library entry point (the CLI wraps it). It
writes a weights file (`TVNet.save`) whose meta records the config, data, steps and the EPE
before/after, a resumable checkpoint `<out>.ckpt` and a loss-curve PNG `<out stem>.loss.png`.
With validation data and `keep_best`, the file holds the parameters of the validation check
(the untrained start included) with the lowest validation EPE.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ConfigMixin
from ..errors import TVNetError
from ..data.pairs import crop_flip, load_gt_pairs, pair_tensors, spread, video_pairs
from ..evaluate import evaluate_pairs
from ..io.datasets import FlowPair, load_pair
from ..model import TVNet
from ..model.tvnet import TRAINABLE_PARTS
from ..runtime import load_model
from .chart import Panel, Series, line_chart, running_mean
from .scaffold import check_resume, load_checkpoint, load_state, save_checkpoint, training_device, will_resume

TRAINABLE = ("all", *TRAINABLE_PARTS)  # or parts joined by "+", e.g. "filters+scalars"
OPTIMIZERS = ("adam", "sgd")
# config fields a --resume may change (scaffold's policy: all others must equal the checkpoint's);
# data, layout, pairs, init, smooth_sigma, theta, train, optimizer and unsupervised must match
RESUME_MAY_CHANGE = ("val_data", "loss_power", "val_layout", "val_pairs", "lr", "u0_lr", "scalar_lr", "u0_decay", "u0_smooth",
                     "steps", "batch", "crop", "flip", "transpose", "scale", "video_frames", "video_size",
                     "val_every", "keep_best", "eval_limit", "checkpoint_every", "seed", "threads", "device",
                     "backend")


@dataclass(frozen=True)
class TrainFlowConfig(ConfigMixin):
    """What to train, on what, how. Defaults follow the paper (lr 0.05, 3000 steps)."""

    data: str  # dataset folder (any `tvnet epe` layout), or a folder/file of videos if unsupervised
    layout: str | None = None  # None = detect
    pairs: tuple[str, ...] = ()  # only these pair names (empty = all with ground truth)
    val_data: tuple[str, ...] = ()  # validation datasets (EPE), any layout; empty = none
    val_layout: str | None = None
    val_pairs: tuple[str, ...] = ()
    init: str = "tvnet-50"  # preset name or weights file to start from
    smooth_sigma: float | None = None  # override the model's pre-smoothing (None = keep)
    theta: float | None = None  # override the model's TV-L1 coupling theta (None = keep)
    per_level: bool = False  # train one set of taps and tau/lambda/theta per pyramid level
    train_levels: int = 0  # with per_level: train only the K finest levels' (0 = all); the coarse
    # levels' long unrolls (many warps x iterations) made gradients chaotic and validation worse
    train: str = "all"  # all (= filters+u0+scalars) | filters | u0 | scalars, or parts joined by "+"
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    lr: float = 0.05
    loss_power: float = 1.0  # per-pixel loss (EPE + 0.01)^q: 1 = EPE (the paper); below 1 (e.g. 0.4) the
    # pixels where the solver failed (large EPE) weigh less, so they do not decide every step
    u0_lr: float | None = None  # learning rate of u0 (pixels) if different from lr (filters)
    scalar_lr: float | None = None  # learning rate of the log tau/lambda/theta multipliers (None = lr)
    u0_decay: float = 0.0  # penalty weight on u0's mean square (px^2): keeps the initial flow small
    u0_smooth: float = 0.0  # penalty weight on the mean square difference of neighbouring u0 cells
    steps: int = 3000
    batch: int = 1
    crop: tuple[int, int] | None = None  # (h, w) random crop; None = whole pairs
    flip: bool = False  # random horizontal/vertical flips (flow signs follow)
    transpose: bool = False  # random transposes (u and v swap); with flip: all 90-degree rotations
    scale: float = 1.0  # resize training and validation pairs (flow too) before cropping, for speed
    unsupervised: bool = False  # TV-L1 energy on video frame pairs instead of EPE
    video_frames: int = 64  # frames read per video (unsupervised)
    video_size: tuple[int, int] | None = None  # (h, w) decode size for videos
    val_every: int = 100
    keep_best: bool = True  # with validation data: save the parameters with the lowest validation EPE
    eval_limit: int = 50  # before/after/validation EPE on at most this many pairs (evenly spaced)
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 2  # torch CPU threads
    device: str = "auto"  # auto (CUDA where present) | cpu | cuda | cuda:N (runtime.resolve_devices)
    backend: str = "auto"  # TV-L1 kernel of the inference runs (evaluation): auto | torch | c | triton

    def __post_init__(self) -> None:
        if self.train != "all" and not set(self.train.split("+")) <= set(TRAINABLE_PARTS):
            raise TVNetError(f"--train must be one of {', '.join(TRAINABLE)} or parts joined by '+', "
                             f"not {self.train!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TVNetError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if (self.steps < 0 or self.batch < 1 or self.lr <= 0 or self.scale <= 0 or (self.u0_lr or 1) <= 0
                or (self.scalar_lr or 1) <= 0 or self.u0_decay < 0 or self.u0_smooth < 0 or self.loss_power <= 0):
            raise TVNetError("steps >= 0, batch >= 1, lr > 0, u0_lr > 0, scalar_lr > 0, scale > 0, loss_power > 0 and "
                             "u0_decay, u0_smooth >= 0 are required")
        for name in ("lr", "loss_power", "u0_lr", "scalar_lr", "scale", "u0_decay", "u0_smooth", "smooth_sigma", "theta"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):  # NaN passes every comparison above
                raise TVNetError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
        for name in ("val_every", "checkpoint_every", "video_frames"):
            if getattr(self, name) < 1:
                raise TVNetError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.train_levels < 0 or (self.train_levels and not self.per_level):
            raise TVNetError(f"--train-levels must be >= 0 and needs --per-level, got {self.train_levels}")
        if self.eval_limit < 0:
            raise TVNetError(f"--eval-limit must be >= 0, got {self.eval_limit}")
        for name in ("crop", "video_size"):
            v = getattr(self, name)
            if v is not None and (len(v) != 2 or min(v) < 1):
                raise TVNetError(f"--{name.replace('_', '-')} must be HxW with both sides >= 1, got "
                                 f"{'x'.join(map(str, v))}")
        if isinstance(self.val_data, str):
            object.__setattr__(self, "val_data", (self.val_data,))
        for name in ("pairs", "val_pairs", "val_data"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("crop", "video_size"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else tuple(int(x) for x in v))



@dataclass
class TrainResult:
    """Where things were written and what was measured (EPE dicts are `mean_errors` output)."""

    weights: Path
    loss_png: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None  # the step whose parameters were saved (keep_best), else None
    before: dict = field(default_factory=dict)  # {"train": {...}, "val": {...}} EPE before training
    after: dict = field(default_factory=dict)


# progress(step, total_steps, loss, latest validation EPE or None)
ProgressFn = Callable[[int, int, float, float | None], None]


def evaluate(model: TVNet, pairs: list, scale: float = 1.0) -> dict:
    """`evaluate.evaluate_pairs` (mean metrics plus "per_pair") under no_grad."""
    with torch.no_grad():
        return evaluate_pairs(model, pairs, scale)


def u0_penalty(model: TVNet, cfg: TrainFlowConfig) -> torch.Tensor | float:
    """u0_decay * mean(u0^2) + u0_smooth * mean squared difference of neighbouring u0 cells."""
    if not model.u0.requires_grad or (cfg.u0_decay == 0 and cfg.u0_smooth == 0):
        return 0.0
    u0 = model.u0  # (1, 2, gh, gw), pixels
    smooth = (u0.diff(dim=2).pow(2).mean() + u0.diff(dim=3).pow(2).mean()) / 2
    return cfg.u0_decay * u0.pow(2).mean() + cfg.u0_smooth * smooth


# -- training ----------------------------------------------------------------------------------
def _make_model(cfg: TrainFlowConfig, device: torch.device) -> TVNet:
    model = load_model(cfg.init, {"smooth_sigma": cfg.smooth_sigma, "theta": cfg.theta}, cfg.backend)
    if cfg.per_level:
        model = model.split_levels()
    model.set_trainable(cfg.train)
    model.grad_levels = cfg.train_levels  # coarser levels run without autograd (TVNet.solve)
    return model.to(device)


def _make_optimizer(cfg: TrainFlowConfig, model: TVNet) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in model.filter_parameters() if p.requires_grad], "lr": cfg.lr},
              {"params": [model.u0] if model.u0.requires_grad else [], "lr": cfg.u0_lr or cfg.lr},
              {"params": [p for p in model.scalar_parameters() if p.requires_grad], "lr": cfg.scalar_lr or cfg.lr}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)


def _freeze_coarse_levels(model: TVNet, k: int) -> None:
    """Zero the gradients of every level's parameters but the `k` finest (per-level models:
    taps and scalars have the level first), so the optimiser leaves those levels as they are."""
    for p in (*model.filter_parameters(), *model.scalar_parameters()):
        if p.grad is not None:
            p.grad[k:] = 0


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


@dataclass
class _Best:
    """The lowest validation EPE so far, its step and a copy of the parameters then."""

    step: int
    epe: float
    state: dict

    def update(self, step: int, epe: float, model: TVNet) -> None:
        if epe < self.epe:
            self.step, self.epe, self.state = step, epe, copy.deepcopy(model.state_dict())


def _save_checkpoint(path: Path, cfg: TrainFlowConfig, model: TVNet, opt: torch.optim.Optimizer,
                     step: int, losses: list[float], val_curve: list, before: dict, gen: torch.Generator,
                     best: _Best | None) -> None:
    state = {"train_config": json.dumps(cfg.to_dict()), "step": step,
             "model": model.state_dict(), "model_config": model.config.to_dict(),
             "optimizer": opt.state_dict(), "losses": losses, "val_curve": val_curve,
             "before": json.dumps(before), "rng": gen.get_state()}
    if best is not None:
        state.update(best_step=best.step, best_epe=best.epe, best_model=best.state)
    save_checkpoint(path, state)


def _with_scalars(model: TVNet, sd: dict) -> dict:
    """A saved state_dict, with untrained TV-L1 scalars added if it predates them."""
    return {**{k: v for k, v in model.state_dict().items() if k.startswith("log_scalars.")}, **sd}


def _load_checkpoint(path: Path, cfg: TrainFlowConfig) -> dict:
    state = load_checkpoint(path, "training checkpoint",
                            ("train_config", "step", "model", "optimizer", "losses", "val_curve", "before", "rng"))
    check_resume(path, json.loads(state["train_config"]), cfg.to_dict(), RESUME_MAY_CHANGE)
    return state


def train_flow(cfg: TrainFlowConfig, out: str | Path, *, resume: bool = False,
               progress: ProgressFn | None = None) -> TrainResult:
    """Train a TVNet as `cfg` says and save it to `out` (see module docstring), on
    `cfg.device` with `cfg.threads` torch threads (both restored afterwards)."""
    with training_device(cfg.device, cfg.threads) as device:
        return _train(cfg, Path(out), device, resume, progress)


def _train(cfg: TrainFlowConfig, out: Path, device: torch.device, resume: bool,
           progress: ProgressFn | None) -> TrainResult:
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU generator: the same draws on any device
    model = _make_model(cfg, device)
    opt = _make_optimizer(cfg, model)

    if cfg.unsupervised:
        train_items = video_pairs(cfg.data, cfg.video_size, cfg.video_frames)
        train_pairs: list[FlowPair] = []
    else:
        train_pairs = load_gt_pairs(cfg.data, cfg.layout, cfg.pairs)
        # small datasets stay decoded in memory; large ones are read pair by pair each step
        train_items = [pair_tensors(load_pair(p), cfg.scale) for p in train_pairs] if len(train_pairs) <= 16 else None
    val_gt = [d for root in cfg.val_data for d in load_gt_pairs(root, cfg.val_layout, ())]
    if cfg.val_pairs:
        val_gt = [d for d in val_gt if d.name in cfg.val_pairs]
    val_gt = spread(val_gt, cfg.eval_limit)
    train_gt = spread(train_pairs, cfg.eval_limit)  # pairs for the before/after EPE

    def augment(tensors: list[torch.Tensor], flow_idx: int | None) -> list[torch.Tensor]:
        return crop_flip(tensors, gen, flow_idx, crop=cfg.crop, flip=cfg.flip, transpose=cfg.transpose)

    losses: list[float] = []
    val_curve: list[tuple[int, float]] = []
    start = 0
    ckpt = checkpoint_path(out)
    if will_resume(ckpt, resume):
        state = _load_checkpoint(ckpt, cfg)
        load_state(model, _with_scalars(model, state["model"]), ckpt)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        start, losses, val_curve = state["step"], list(state["losses"]), [tuple(v) for v in state["val_curve"]]
        before = json.loads(state["before"])
        best = (_Best(state["best_step"], state["best_epe"], _with_scalars(model, state["best_model"]))
                if "best_model" in state else None)
    else:
        before = {"train": evaluate(model, train_gt, cfg.scale) if train_gt else None,
                  "val": evaluate(model, val_gt, cfg.scale) if val_gt else None}
        best = _Best(0, before["val"]["epe"], copy.deepcopy(model.state_dict())) if val_gt and cfg.keep_best else None

    last_val = val_curve[-1][1] if val_curve else None
    t0 = time.time()
    for step in range(start, cfg.steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.batch):  # gradient accumulation: pairs may differ in size
            i = int(torch.randint(0, len(train_items or train_pairs), (1,), generator=gen))
            if cfg.unsupervised:
                f0, f1 = (t.to(device) for t in augment(list(train_items[i]), None))
                flow = model(f0, f1)  # (1, 2, h, w)
                loss = model.energy(flow, *model.prepare(f0, f1)).mean()
            else:
                item = train_items[i] if train_items is not None else pair_tensors(load_pair(train_pairs[i]), cfg.scale)
                f0, f1, gt, valid = (t.to(device) for t in augment(list(item), 2))
                flow = model(f0, f1)
                epe = torch.sqrt(((flow - gt) ** 2).sum(dim=1, keepdim=True) + 1e-8)  # (1, 1, h, w)
                if cfg.loss_power != 1.0:
                    epe = (epe + 0.01) ** cfg.loss_power
                loss = (epe * valid).sum() / valid.sum().clamp_min(1.0)
            loss = loss + u0_penalty(model, cfg)
            (loss / cfg.batch).backward()
            total += loss.item() / cfg.batch
        if not math.isfinite(total):
            raise TVNetError(f"training diverged at step {step + 1} (loss {total}); lower --lr")
        if cfg.train_levels:
            _freeze_coarse_levels(model, cfg.train_levels)
        opt.step()
        losses.append(total)
        done = step + 1
        if val_gt and (done % cfg.val_every == 0 or done == cfg.steps):
            last_val = evaluate(model, val_gt, cfg.scale)["epe"]
            val_curve.append((done, last_val))
            if best is not None:
                best.update(done, last_val, model)
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _save_checkpoint(ckpt, cfg, model, opt, done, losses, val_curve, before, gen, best)
        if progress is not None:
            progress(done, cfg.steps, total, last_val)

    _save_checkpoint(ckpt, cfg, model, opt, cfg.steps, losses, val_curve, before, gen, best)  # last, not best
    if best is not None:
        model.load_state_dict(best.state)
    after = {"train": evaluate(model, train_gt, cfg.scale) if train_gt else None,
             "val": evaluate(model, val_gt, cfg.scale) if val_gt else None}
    meta = {"trained": True, "train_config": cfg.to_dict(), "steps": cfg.steps,
            "best_step": best.step if best is not None else None,
            "seconds": round(time.time() - t0, 1),
            "final_loss": losses[-1] if losses else None,
            "epe_before": {k: _strip(v) for k, v in before.items()},
            "epe_after": {k: _strip(v) for k, v in after.items()}}
    model.save(out, meta=meta)
    png = out.with_name(out.stem + ".loss.png")
    draw_loss_curve(png, losses, val_curve, "TV-L1 energy" if cfg.unsupervised else "EPE loss")
    return TrainResult(out, png, cfg.steps, losses, val_curve, best.step if best is not None else None,
                       before, after)


def _strip(m: dict | None) -> dict | None:
    """Metrics dict small enough for the weights file's meta (per-pair EPE only)."""
    if m is None:
        return None
    return {"epe": m["epe"], "aae": m["aae"], "out3": m["out3"],
            "per_pair_epe": {k: v["epe"] for k, v in m.get("per_pair", {}).items()}}


def draw_loss_curve(path: Path, losses: list[float], val_curve: list[tuple[int, float]], label: str = "loss") -> None:
    """Training loss (grey: per step, blue: running mean) and validation EPE (red dots) as PNG."""
    series = [Series(range(1, len(losses) + 1), losses, (180, 180, 180))] if len(losses) > 1 else []
    series += [running_mean(losses)] if len(losses) > 1 else []
    series.append(Series([v[0] for v in val_curve], [v[1] for v in val_curve], (210, 40, 40), "dots"))
    line_chart(path, [Panel(f"{label} (blue), validation EPE (red) vs step", tuple(series))])
