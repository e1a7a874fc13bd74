"""End-to-end action recognition: TVNet -> flow stack -> classifier (paper Sec. 4.3 / 5.2).

`train_action(config)` trains with L = L_c + flow_loss * L_f (cross entropy + the exact
TV-L1 energy), SGD with momentum and step decays, TVNet's lr = base lr / 255, TSN
sampling with corner cropping and scale jittering. Data order and augmentation are
seeded per step, so a resumed run continues exactly. Checkpoints are
`{"version", "config", "classes", "state_dict", "optimizer", "scaler", "step"}`.
`evaluate_action(checkpoint)` runs the TSN test protocol (25 segments, 1 or 10 crops).
Runs under `torchrun` use DistributedDataParallel (one process per GPU).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..classifier import ActionModel, ClassifierConfig
from ..config import ConfigMixin
from ..data.clips import ClipDataset, ClipSpec, batch_plan
from ..errors import TVNetError
from ..io.splits import VideoItem, check_videos, parse_hmdb51, parse_list, parse_ucf101
from ..runtime import DistEnv, load_model, on_device, resolve_devices
from .chart import Panel, Series, confusion_chart, line_chart
from .scaffold import CsvLog, check_resume, load_state, save_checkpoint, training_device, will_resume
from .scaffold import load_checkpoint as _load_checkpoint

# config fields a --resume may change (scaffold's policy: all others must equal the checkpoint's):
# those that leave the training trajectory unchanged
RESUME_MAY_CHANGE = ("steps", "out", "root", "annotations", "workers", "cache_videos", "checkpoint_every",
                     "log_every", "device", "threads", "test_segments", "test_crops", "eval_batch")
Progress = Callable[[int, int, dict], None]  # (done, total, metrics)

# the paper's schedules (Sec. 5.2): max steps and lr decay steps per dataset
PAPER_SCHEDULE = {"ucf101": (18000, (10000, 16000)), "hmdb51": (7000, (4000, 6000))}


@dataclass(frozen=True)
class ActionTrainConfig(ConfigMixin):
    """Everything that defines an action-training run. Defaults: the paper's settings."""

    label: ClassVar[str] = "action config"

    # data
    dataset: str = "ucf101"  # ucf101 | hmdb51 | list
    root: str = ""  # folder of the videos (list paths are relative to it)
    annotations: str | None = None  # folder of the official split files
    split: int = 1
    train_list: str | None = None  # dataset "list": `<video> <label>` lines
    test_list: str | None = None
    out: str = "runs/action"
    # model
    tvnet: str = "tvnet-50"  # preset
    weights: str | None = None  # TVNet weights file (overrides the preset)
    freeze_tvnet: bool = False
    flow_loss: float = 0.1  # lambda of L = L_c + lambda L_f
    tvnet_lr_scale: float = 1.0 / 255.0
    modality: str = "flow"  # flow | rgb | two-stream
    depth: int = 18
    width: int = 64
    dropout: float = 0.5
    flow_bound: float = 20.0
    checkpoint_pairs: int = 0  # >0: TVNet under activation checkpointing, this many pairs a chunk
    # clips
    frame_size: tuple[int, int] = (256, 340)  # decode size (H, W)
    input_size: int = 224
    length: int = 6  # frames per stack -> length - 1 flow fields
    segments: int = 1  # TSN segments per training clip
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    flip: bool = True
    # optimisation
    batch: int = 128  # global batch (split over DDP processes)
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    steps: int = 18000
    lr_steps: tuple[int, ...] = (10000, 16000)
    lr_gamma: float = 0.1
    grad_clip: float = 20.0  # max gradient norm (TSN flow: 20); 0 = off
    amp: bool = True  # mixed precision (CUDA only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N; under torchrun auto = cuda:LOCAL_RANK (or cpu)
    threads: int | None = None  # torch CPU threads while it runs (None = torch's)
    seed: int = 0
    workers: int = 4
    cache_videos: int = 0  # decoded videos kept in memory per worker
    checkpoint_every: int = 500
    log_every: int = 10
    # test protocol
    test_segments: int = 25
    test_crops: int = 1  # 1 (centre) or 10 (4 corners + centre, flipped)
    eval_batch: int = 25  # stacks per forward pass at test time

    def __post_init__(self) -> None:
        if self.dataset not in ("ucf101", "hmdb51", "list"):
            raise TVNetError(f"dataset must be ucf101, hmdb51 or list, not {self.dataset!r}")
        for name in ("batch", "steps", "length", "segments", "input_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise TVNetError(f"train-action: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "momentum", "weight_decay", "lr_gamma", "grad_clip", "flow_loss", "tvnet_lr_scale",
                     "dropout", "flow_bound"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise TVNetError(f"train-action: {name} must be a finite number >= 0, got {v}")
        if not self.lr > 0:
            raise TVNetError(f"train-action: lr must be > 0, got {self.lr}")
        if self.test_crops not in (1, 10):
            raise TVNetError(f"train-action: test crops must be 1 or 10, got {self.test_crops}")
        object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
        object.__setattr__(self, "scales", tuple(float(v) for v in self.scales))
        object.__setattr__(self, "lr_steps", tuple(int(v) for v in self.lr_steps))


    @property
    def clip_spec(self) -> ClipSpec:
        return ClipSpec(self.frame_size, self.input_size, self.length, self.segments,
                        self.scales, 1, self.flip)


# -- data ---------------------------------------------------------------------------------------
def load_split(config: ActionTrainConfig, check: bool = True) -> tuple[tuple[str, ...], tuple[VideoItem, ...], tuple[VideoItem, ...]]:
    """(classes, train, test) of the configured dataset; missing videos raise by name."""
    root = Path(config.root)
    ann = Path(config.annotations) if config.annotations else None
    if config.dataset == "ucf101":
        s = parse_ucf101(ann, config.split, root)
        classes, train, test = s.classes, s.train, s.test
    elif config.dataset == "hmdb51":
        s = parse_hmdb51(ann, config.split, root)
        classes, train, test = s.classes, s.train, s.test
    else:
        if not config.train_list:
            raise TVNetError("dataset 'list' needs --list FILE (and --test-list FILE to evaluate)")
        train, classes = parse_list(Path(config.train_list))
        test = parse_list(Path(config.test_list), classes)[0] if config.test_list else ()
    if check:
        check_videos(train, root, "training video")
        check_videos(test, root, "test video")
    return classes, train, test


class _Plans:
    """Batch sampler: the `(index, seed)` items of steps start..steps-1 for this process."""

    def __init__(self, n: int, config: ActionTrainConfig, start: int, rank: int, world: int) -> None:
        self.n, self.config, self.start, self.rank, self.world = n, config, start, rank, world

    def __len__(self) -> int:
        return self.config.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.config.steps):
            yield batch_plan(self.n, self.config.batch, step, self.config.seed)[self.rank::self.world]


# -- model ---------------------------------------------------------------------------------------
def build_model(config: ActionTrainConfig, num_classes: int) -> ActionModel:
    """TVNet (preset or weights file) + classifier, with TVNet's trainable parts set."""
    tvnet = load_model(config.weights or config.tvnet)
    cls_cfg = ClassifierConfig(config.depth, config.width, config.dropout)
    model = ActionModel(tvnet, num_classes, config.length, config.modality, cls_cfg, config.flow_bound,
                        config.checkpoint_pairs)
    frozen = config.freeze_tvnet or config.modality == "rgb"
    tvnet.set_trainable("none" if frozen else "filters+u0")  # the paper's trainable parts (Sec. 4.2)
    return model


def make_optimizer(model: ActionModel, config: ActionTrainConfig) -> torch.optim.SGD:
    """SGD with momentum; TVNet's parameters at lr * tvnet_lr_scale, no weight decay."""
    tv = [p for p in model.tvnet.parameters() if p.requires_grad]
    tv_ids = {id(p) for p in model.tvnet.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in tv_ids]
    groups = [{"params": rest, "lr_scale": 1.0, "weight_decay": config.weight_decay}]
    if tv:
        groups.append({"params": tv, "lr_scale": config.tvnet_lr_scale, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def lr_at(config: ActionTrainConfig, step: int) -> float:
    """Base learning rate at `step` (0-based): step decays by lr_gamma."""
    return config.lr * config.lr_gamma ** sum(step >= s for s in config.lr_steps)


# -- checkpoints --------------------------------------------------------------------------------
def _save(path: Path, model: ActionModel, optimizer, scaler, step: int,
          config: ActionTrainConfig, classes: tuple[str, ...]) -> None:
    """The full training state (scaffold.save_checkpoint adds the version, writes atomically)."""
    save_checkpoint(path, {"config": config.to_dict(), "classes": list(classes), "step": step,
                           "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scaler": scaler.state_dict() if scaler is not None else None})


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint and check its keys (the state itself is loaded strictly later)."""
    return _load_checkpoint(Path(path), "action checkpoint", ("config", "classes", "state_dict", "step"))


def model_from_checkpoint(path: Path) -> tuple[ActionModel, ActionTrainConfig, tuple[str, ...], dict]:
    ckpt = load_checkpoint(path)
    config = ActionTrainConfig.from_dict(dict(ckpt["config"]))
    classes = tuple(ckpt["classes"])
    # the stored state holds TVNet's trained weights; build from its config, not a file
    model = build_model(config.replace(weights=None), len(classes))
    load_state(model, ckpt["state_dict"], path)
    return model, config, classes, ckpt


# -- log and chart ------------------------------------------------------------------------------
LOG_FIELDS = ("step", "lr", "loss", "loss_c", "loss_f", "acc", "sec_per_step")


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training curve PNG: loss (total, L_c) and batch accuracy against step, from log rows."""
    steps = [float(r["step"]) for r in rows]

    def series(key: str, colour: tuple[int, int, int]) -> Series:
        return Series(steps, [float(r[key]) for r in rows], colour, "thick")

    line_chart(path, [Panel("loss (red), L_c (blue)", (series("loss", (200, 30, 30)), series("loss_c", (30, 30, 200)))),
                      Panel("batch accuracy", (series("acc", (20, 140, 20)),), (0.0, 1.0))], (400, 360))


# -- training ------------------------------------------------------------------------------------
def train_action(config: ActionTrainConfig, progress: Progress | None = None, resume: bool = False) -> dict:
    """Train; returns {"step", "loss", "acc", "checkpoint", "tvnet"}. Writes under `config.out`:
    `checkpoint.pt` (every `checkpoint_every` steps and at the end), `log.csv`, `curve.png`,
    `tvnet.pt` (the trained TVNet alone, for `tvnet extract --weights`), `train.json`.
    Under torchrun: one DDP process per device (nccl on CUDA, gloo on the CPU)."""
    env = DistEnv.from_env()
    if config.batch % env.world_size:
        raise TVNetError(f"batch {config.batch} is not divisible by {env.world_size} processes")
    with training_device(config.device, config.threads, env) as device:
        return _train(config, device, env, progress, resume)


def _train(config: ActionTrainConfig, device: torch.device, env: DistEnv, progress: Progress | None,
           resume: bool) -> dict:
    rank, world = env.rank, env.world_size
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    classes, train_items, _ = load_split(config)
    torch.manual_seed(config.seed)  # the same initial weights in every process and run
    model = build_model(config, len(classes)).to(device)
    optimizer = make_optimizer(model, config)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    start = 0
    if will_resume(ckpt_path, resume):
        ckpt = load_checkpoint(ckpt_path)
        saved = ActionTrainConfig.from_dict(dict(ckpt["config"]))  # fields added since: defaults
        check_resume(ckpt_path, saved.to_dict(), config.to_dict(), RESUME_MAY_CHANGE)
        load_state(model, ckpt["state_dict"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start = int(ckpt["step"])
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    dataset = ClipDataset(Path(config.root), train_items, config.clip_spec, cache=config.cache_videos)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_Plans(len(train_items), config, start, rank, world),
        num_workers=config.workers, pin_memory=device.type == "cuda",
        persistent_workers=False)
    log = CsvLog(out / "log.csv", LOG_FIELDS)
    rows = log.read(start) if rank == 0 else []
    window: list[tuple[float, float, float, float]] = []
    last = {"loss": float("nan"), "acc": float("nan")}
    model.train()
    t0 = time.perf_counter()
    step = start
    for step, (clips, labels) in enumerate(loader, start):
        torch.manual_seed(config.seed * 1_000_003 + step * 101 + rank)  # dropout, per step
        lr = lr_at(config, step)
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        clips = clips.to(device, non_blocking=True)  # (B, S, L, 3, H, W) uint8
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits, energy = net(clips, with_energy=config.flow_loss > 0)
            loss_c = F.cross_entropy(logits.float(), labels)
            loss = loss_c + config.flow_loss * energy if config.flow_loss > 0 else loss_c
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if not math.isfinite(loss.item()):
            raise TVNetError(f"training diverged at step {step + 1} (loss {loss.item()}); lower --lr")
        acc = (logits.argmax(dim=1) == labels).float().mean().item()
        window.append((loss.item(), loss_c.item(), float(energy.item()), acc))
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            now = time.perf_counter()
            m = np.mean(window, axis=0)
            row = {"step": done, "lr": lr, "loss": m[0], "loss_c": m[1], "loss_f": m[2], "acc": m[3],
                   "sec_per_step": (now - t0) / len(window)}
            last = {"loss": float(m[0]), "acc": float(m[3])}
            window, t0 = [], now
            if rank == 0:
                rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
                log.write(rows)
            if progress:
                progress(done, config.steps, row)
        if rank == 0 and (done % config.checkpoint_every == 0 or done == config.steps):
            _save(ckpt_path, model, optimizer, scaler, done, config, classes)
    if rank == 0:
        model.tvnet.save(out / "tvnet.pt", meta={"trained_with": "tvnet train-action", "dataset": config.dataset,
                                                  "split": config.split, "steps": config.steps})
        if rows:
            plot_curves(rows, out / "curve.png")
        (out / "train.json").write_text(json.dumps(
            {"config": config.to_dict(), "classes": list(classes), "final": last, "steps": config.steps}, indent=1))
    return {"step": max(start, config.steps), **last,
            "checkpoint": str(ckpt_path), "tvnet": str(out / "tvnet.pt")}


# -- evaluation ----------------------------------------------------------------------------------
class _TestViews(torch.utils.data.Dataset):
    def __init__(self, dataset: ClipDataset, segments: int, crops: int) -> None:
        self.dataset, self.segments, self.crops = dataset, segments, crops

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset.test_views(i, self.segments, self.crops), self.dataset.items[i].label


@torch.no_grad()
def evaluate_model(model: ActionModel, dataset: ClipDataset, num_classes: int, segments: int = 25,
                   crops: int = 1, batch: int = 25, device: torch.device | None = None,
                   workers: int = 0, progress: Progress | None = None) -> dict:
    """TSN test protocol: average the scores of `segments` x `crops` stacks per video.

    Returns top1, top5, mean class accuracy, the confusion matrix and per-video predictions.
    """
    device = device or next(model.parameters()).device
    model.eval()
    loader = torch.utils.data.DataLoader(_TestViews(dataset, segments, crops), batch_size=None,
                                         num_workers=workers)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    top5 = 0
    preds = []
    for i, (views, label) in enumerate(loader):
        scores = []
        for chunk in views.split(batch):  # (n, L, 3, h, w)
            logits, _ = model(chunk.unsqueeze(1).to(device), with_energy=False)
            scores.append(logits.float())
        score = torch.cat(scores).mean(dim=0)  # (classes,)
        pred = int(score.argmax())
        conf[label, pred] += 1
        top5 += int(label in score.topk(min(5, num_classes)).indices.tolist())
        preds.append(pred)
        if progress:
            progress(i + 1, len(dataset), {"acc": float(np.trace(conf) / conf.sum())})
    n = max(int(conf.sum()), 1)
    per_class = np.diag(conf) / np.maximum(conf.sum(axis=1), 1)
    present = conf.sum(axis=1) > 0
    return {"videos": int(conf.sum()), "top1": float(np.trace(conf) / n), "top5": float(top5 / n),
            "mean_class_acc": float(per_class[present].mean()) if present.any() else 0.0,
            "confusion": conf, "predictions": preds}


def evaluate_action(checkpoint: str | Path, root: str | None = None, annotations: str | None = None,
                    test_list: str | None = None, segments: int | None = None, crops: int | None = None,
                    out: str | Path | None = None, device: str = "auto", workers: int = 0,
                    progress: Progress | None = None, threads: int | None = None) -> dict:
    """Evaluate a checkpoint on its split's test list (or `test_list`); writes
    `eval.json` and `confusion.png` into `out` (default: the checkpoint's folder).
    Runs on `device` (runtime.resolve_devices) with `threads` torch threads, both restored."""
    dev = resolve_devices(device)[0]
    model, config, classes, _ = model_from_checkpoint(Path(checkpoint))
    changes = {k: v for k, v in (("root", root), ("annotations", annotations), ("test_list", test_list))
               if v is not None}
    config = config.replace(**changes)
    if test_list is not None and config.dataset != "list":
        items = parse_list(Path(test_list), classes)[0]
        check_videos(items, Path(config.root), "test video")
    else:
        items = load_split(config, check=False)[2]
        check_videos(items, Path(config.root), "test video")
    if not items:
        raise TVNetError(f"{checkpoint}: no test videos (pass --test-list FILE)")
    model.to(dev)
    dataset = ClipDataset(Path(config.root), items, config.clip_spec)
    with on_device(dev, threads):
        res = evaluate_model(model, dataset, len(classes), segments or config.test_segments,
                             crops or config.test_crops, config.eval_batch, dev, workers, progress)
    out = Path(out) if out is not None else Path(checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    confusion_chart(res["confusion"], classes, out / "confusion.png")
    summary = {k: v for k, v in res.items() if k not in ("confusion", "predictions")}
    summary.update(segments=segments or config.test_segments, crops=crops or config.test_crops,
                   checkpoint=str(checkpoint), classes=list(classes), confusion=res["confusion"].tolist())
    (out / "eval.json").write_text(json.dumps(summary, indent=1))
    return res
