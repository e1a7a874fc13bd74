"""Optical-flow error metrics (numpy, pure functions returning dicts).

EPE (paper Eq. 14): mean over valid pixels of |flow - gt|. AAE: Middlebury angular error,
the angle between (u, v, 1) and (u_gt, v_gt, 1), in degrees. Outliers: EPE > 3 px, and the
KITTI Fl rule, EPE > 3 px and > 5 % of |gt|. Pixels whose ground truth is unknown are masked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import TVNetError


def flow_errors(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of predicted `(H, W, 2)` flow against ground truth `(H, W, 2)`, valid `(H, W)`.

    Returns {"epe", "aae", "out3", "fl", "valid", "pixels"}: out3 / fl are fractions (0..1)
    of valid pixels; valid is the number of pixels counted.
    """
    flow = np.asarray(flow, np.float64)
    gt = np.asarray(gt, np.float64)
    if flow.shape != gt.shape or flow.ndim != 3 or flow.shape[2] != 2:
        raise TVNetError(f"flow {flow.shape} and ground truth {gt.shape} differ (need equal (H, W, 2))")
    if valid is None:
        valid = np.ones(gt.shape[:2], bool)
    valid = np.asarray(valid, bool) & np.isfinite(gt).all(axis=2)
    n = int(valid.sum())
    if n == 0:
        return {"epe": float("nan"), "aae": float("nan"), "out3": float("nan"), "fl": float("nan"),
                "valid": 0, "pixels": int(valid.size)}
    f, g = flow[valid], gt[valid]  # (N, 2)
    err = np.linalg.norm(f - g, axis=1)
    mag = np.linalg.norm(g, axis=1)
    cos = (f * g).sum(axis=1) + 1.0
    cos /= np.sqrt((f * f).sum(axis=1) + 1.0) * np.sqrt((g * g).sum(axis=1) + 1.0)
    aae = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return {
        "epe": float(err.mean()),
        "aae": float(aae.mean()),
        "out3": float((err > 3.0).mean()),
        "fl": float(((err > 3.0) & (err > 0.05 * mag)).mean()),
        "valid": n,
        "pixels": int(valid.size),
    }


def mean_errors(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average of per-sequence metrics (each sequence counts once, as Middlebury/Table 1 do)."""
    keys = ("epe", "aae", "out3", "fl")
    ok = [r for r in rows if r["valid"] > 0]
    out: dict[str, float] = {k: float(np.mean([r[k] for r in ok])) if ok else float("nan") for k in keys}
    out["valid"] = int(sum(r["valid"] for r in rows))
    out["pixels"] = int(sum(r["pixels"] for r in rows))
    return out


# -- evaluating a model on a dataset (the one non-pure part: it runs the model) ----------------
@dataclass(frozen=True)
class EpeConfig:
    """What `tvnet epe` evaluates: a dataset folder, its layout and the model to run."""

    data: str
    layout: str | None = None  # None = detect
    model: str = "tvnet-50"  # preset name or weights file (.pt)
    sintel_pass: str = "clean"
    kitti_gt: str = "flow_occ"
    save_flow: str | None = None  # folder for the predicted .flo files
    compare_opencv: bool = False
    threads: int = 2


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


def load_model(spec: str):
    """A TVNet from a preset name or a weights file path."""
    from pathlib import Path

    from .model import TVNet

    p = Path(spec)
    if p.suffix == ".pt" or p.is_file():
        return TVNet.from_file(p)
    return TVNet.from_preset(spec)


def evaluate_dataset(cfg: EpeConfig, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """EPE/AAE/outliers of a model (and optionally OpenCV TV-L1) on every ground-truth pair.

    Returns {"layout", "model", "config", "rows": [{"name", metrics...}], "mean": {...},
    "skipped": [names without ground truth], and with OpenCV "opencv_rows", "opencv_mean"}.
    """
    from pathlib import Path

    import torch

    from .io.datasets import find_pairs, load_pair
    from .io.flowio import write_flo

    torch.set_num_threads(max(1, cfg.threads))
    model = load_model(cfg.model)
    layout, pairs = find_pairs(cfg.data, cfg.layout, sintel_pass=cfg.sintel_pass, kitti_gt=cfg.kitti_gt)
    skipped = [p.name for p in pairs if p.gt is None]
    pairs = [p for p in pairs if p.gt is not None]
    if not pairs:
        raise TVNetError(f"{cfg.data}: no pair has ground-truth flow ({layout} layout)")
    rows, cv_rows = [], []
    for i, pair in enumerate(pairs):
        if progress:
            progress(i, len(pairs), pair.name)
        d = load_pair(pair)
        t0, t1 = (torch.from_numpy(np.array(f, copy=True)).permute(2, 0, 1)[None] for f in (d.frame0, d.frame1))
        flow = model.predict(t0, t1)[0].permute(1, 2, 0).numpy()  # (H, W, 2)
        rows.append({"name": pair.name, **flow_errors(flow, d.gt, d.valid)})
        if cfg.save_flow:
            path = Path(cfg.save_flow) / f"{pair.name}.flo"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_flo(path, flow)
        if cfg.compare_opencv:
            cv_rows.append({"name": pair.name, **flow_errors(_opencv_flow(model.config, d.frame0, d.frame1),
                                                             d.gt, d.valid)})
    if progress:
        progress(len(pairs), len(pairs), "")
    out = {"layout": layout, "data": str(cfg.data), "model": cfg.model, "config": model.config.to_dict(),
           "rows": rows, "mean": mean_errors(rows), "skipped": skipped}
    if cfg.compare_opencv:
        out["opencv_rows"] = cv_rows
        out["opencv_mean"] = mean_errors(cv_rows)
    return out
