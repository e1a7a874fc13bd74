"""Running a model over ground-truth pairs: the one evaluation loop of `tvnet epe` and of
training (EPE before/after and on validation). The maths of the metrics is in `metrics.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigMixin
from .data.pairs import pair_tensors
from .errors import TVNetError
from .io.datasets import FlowPair, PairData, find_pairs, load_pair
from .metrics import flow_errors, mean_errors
from .model import TVNet
from .runtime import load_model, on_device, resolve_devices


@dataclass(frozen=True)
class EpeConfig(ConfigMixin):
    """What `tvnet epe` evaluates: a dataset folder, its layout and the model to run."""

    data: str
    layout: str | None = None  # None = detect
    model: str = "tvnet-50"  # preset name or weights file (.pt)
    device: str = "auto"  # auto (CUDA where present) | cpu | cuda | cuda:N (runtime.resolve_devices)
    backend: str = "auto"  # TV-L1 kernel: auto | torch | c | triton
    sintel_pass: str = "clean"
    kitti_gt: str = "flow_occ"
    save_flow: str | None = None  # folder for the predicted .flo files
    compare_opencv: bool = False
    threads: int = 2


# -- the evaluation loop ----------------------------------------------------------------------
@dataclass
class Prediction:
    """One evaluated pair: the loaded data, the predicted flow `(h, w, 2)` and its metrics."""

    pair: PairData
    flow: np.ndarray
    metrics: dict[str, float]


def predictions(model: TVNet, pairs: Iterable[FlowPair | PairData], scale: float = 1.0) -> Iterator[Prediction]:
    """Run `model.predict` on each pair (at `scale`, on the model's device) and measure it
    against the ground truth."""
    device = model.u0.device
    for p in pairs:
        d = load_pair(p) if isinstance(p, FlowPair) else p
        f0, f1, gt, valid = pair_tensors(d, scale)
        flow = model.predict(f0.to(device), f1.to(device))[0].permute(1, 2, 0).cpu().numpy()  # (h, w, 2)
        yield Prediction(d, flow, flow_errors(flow, gt[0].permute(1, 2, 0).numpy(), valid[0, 0].numpy() > 0))


def evaluate_pairs(model: TVNet, pairs: Iterable[FlowPair | PairData], scale: float = 1.0) -> dict:
    """Mean metrics (per pair, then averaged) on whole pairs at `scale`: `mean_errors` output
    plus "per_pair": {name: metrics}."""
    rows = {pr.pair.name: pr.metrics for pr in predictions(model, pairs, scale)}
    out = mean_errors(list(rows.values()))
    out["per_pair"] = rows
    return out


# -- `tvnet epe` ---------------------------------------------------------------------------------
def _opencv_flow(cfg_model, f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """OpenCV DualTVL1 with the model's tau/lambda/theta/scales/warps/iterations -> `(H, W, 2)`."""
    try:
        import cv2

        make = cv2.optflow.DualTVL1OpticalFlow_create
    except (ImportError, AttributeError):
        raise TVNetError("--compare opencv needs OpenCV with the contrib modules: "
                         "pip install opencv-contrib-python-headless") from None
    tvl1 = make(tau=cfg_model.tau, lambda_=cfg_model.lam, theta=cfg_model.theta,
                nscales=cfg_model.scales, warps=cfg_model.warps, epsilon=0.0,
                innnerIterations=cfg_model.iters, outerIterations=1,
                scaleStep=cfg_model.zfactor, gamma=0.0, medianFiltering=1)
    g0, g1 = (cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (f0, f1))
    return tvl1.calc(g0, g1, None)


def evaluate_dataset(cfg: EpeConfig, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """EPE/AAE/outliers of a model (and optionally OpenCV TV-L1) on every ground-truth pair.

    Returns {"layout", "model", "config", "rows": [{"name", metrics...}], "mean": {...},
    "skipped": [names without ground truth], and with OpenCV "opencv_rows", "opencv_mean"}.
    Runs on `cfg.device` with torch's threads set to `cfg.threads` (both restored afterwards).
    """
    from .io.flowio import write_flo

    device = resolve_devices(cfg.device)[0]
    model = load_model(cfg.model, backend=cfg.backend).to(device).eval()
    mc = model.config
    if cfg.compare_opencv and (mc.level_warps or mc.level_iters):
        raise TVNetError(f"--compare opencv: {cfg.model} runs a per-level schedule ({mc.name}), which "
                         "OpenCV's DualTVL1 cannot; compare a uniform tvnet-S-W-I schedule instead")
    layout, pairs = find_pairs(cfg.data, cfg.layout, sintel_pass=cfg.sintel_pass, kitti_gt=cfg.kitti_gt)
    skipped = [p.name for p in pairs if p.gt is None]
    pairs = [p for p in pairs if p.gt is not None]
    if not pairs:
        raise TVNetError(f"{cfg.data}: no pair has ground-truth flow ({layout} layout)")
    rows, cv_rows = [], []
    with on_device(device, cfg.threads):
        for i, pr in enumerate(predictions(model, pairs)):
            if progress:
                progress(i, len(pairs), pr.pair.name)
            rows.append({"name": pr.pair.name, **pr.metrics})
            if cfg.save_flow:
                path = Path(cfg.save_flow) / f"{pr.pair.name}.flo"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_flo(path, pr.flow)
            if cfg.compare_opencv:
                d = pr.pair
                cv_rows.append({"name": d.name, **flow_errors(_opencv_flow(model.config, d.frame0, d.frame1),
                                                              d.gt, d.valid)})
    if progress:
        progress(len(pairs), len(pairs), "")
    out = {"layout": layout, "data": str(cfg.data), "model": cfg.model, "device": str(device),
           "config": model.config.to_dict(),
           "rows": rows, "mean": mean_errors(rows), "skipped": skipped}
    if cfg.compare_opencv:
        out["opencv_rows"] = cv_rows
        out["opencv_mean"] = mean_errors(cv_rows)
    return out
