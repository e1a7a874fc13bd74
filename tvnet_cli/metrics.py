"""Optical-flow error metrics (numpy, pure functions returning dicts).

EPE (paper Eq. 14): mean over valid pixels of |flow - gt|. AAE: Middlebury angular error,
the angle between (u, v, 1) and (u_gt, v_gt, 1), in degrees. Outliers: EPE > 3 px, and the
KITTI Fl rule, EPE > 3 px and > 5 % of |gt|. Pixels whose ground truth is unknown are masked.
Running a model over a dataset is `evaluate.py`.
"""

from __future__ import annotations

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
