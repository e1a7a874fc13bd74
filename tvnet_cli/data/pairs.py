"""Optical-flow pairs as tensors: frames and ground truth `(1, C, H, W)`, the ground-truth
pairs of a dataset (optionally by name), consecutive frame pairs of videos, and the random
crop / flip / transpose augmentation that keeps the flow consistent with the frames.
Finding and reading the files is `io/datasets.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TVNetError
from ..io.datasets import FlowPair, PairData, find_pairs

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


# -- frames to tensors -------------------------------------------------------------------------
def frame_tensor(img: np.ndarray) -> torch.Tensor:
    """`(H, W, 3)` or `(H, W)` uint8 image -> float32 `(1, C, H, W)` with values 0..255."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True)).permute(2, 0, 1)[None]


def pair_tensors(d: PairData, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A pair with ground truth -> f0, f1 `(1, 3, h, w)`, gt `(1, 2, h, w)`, valid `(1, 1, h, w)`
    (0/1), resized by `scale` (area averaging; flow values scaled, partly valid pixels dropped)."""
    if d.gt is None:
        raise TVNetError(f"{d.name}: no ground-truth flow")
    f0, f1 = frame_tensor(d.frame0), frame_tensor(d.frame1)
    gt = torch.from_numpy(np.array(d.gt, dtype=np.float32, copy=True)).permute(2, 0, 1)[None]
    valid = torch.ones(1, 1, *gt.shape[-2:]) if d.valid is None else torch.from_numpy(d.valid)[None, None].float()
    if scale != 1.0:
        h, w = (max(8, round(s * scale)) for s in f0.shape[-2:])
        f0, f1 = (F.interpolate(f, (h, w), mode="area") for f in (f0, f1))
        gt = torch.where(valid > 0, gt, torch.zeros_like(gt))  # unknown gt may be huge or NaN
        gt = F.interpolate(gt * valid, (h, w), mode="area")
        cover = F.interpolate(valid, (h, w), mode="area")
        gt = gt / cover.clamp_min(1e-6) * scale
        valid = (cover > 0.999).float()
    return f0, f1, gt, valid


# -- which pairs -------------------------------------------------------------------------------
def load_gt_pairs(root: str, layout: str | None, names: tuple[str, ...]) -> list[FlowPair]:
    """The pairs of a dataset that have ground truth, optionally only those named.

    Only paths: frames are read when a step or an evaluation needs them, so a large dataset
    (Sintel: 1041 pairs) does not have to fit in memory."""
    _, pairs = find_pairs(root, layout, require_gt=True)
    if names:
        known = {p.name for p in pairs}
        missing = [n for n in names if n not in known]
        if missing:
            raise TVNetError(f"{root}: no ground-truth pair named {', '.join(missing)} "
                             f"(have: {', '.join(sorted(known))})")
        pairs = [p for p in pairs if p.name in names]
    return pairs


def spread(items: list, limit: int) -> list:
    """At most `limit` items, evenly spaced (evaluation subsets of large datasets)."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else items[:1]


def video_pairs(data: str | Path, size: tuple[int, int] | None = None,
                max_frames: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive frame pairs `(1, 3, H, W)` x 2 from a video or every video under a folder
    (decoded at `size`, at most `max_frames` frames a video)."""
    from ..io.video import read_frames

    root = Path(data)
    if root.is_file():
        videos = [root]
    elif root.is_dir():
        videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    else:
        raise TVNetError(f"{root}: video folder not found")
    if not videos:
        raise TVNetError(f"{root}: no videos ({', '.join(VIDEO_SUFFIXES)}) found")
    out = []
    for v in videos:
        frames = read_frames(v, size=size, max_frames=max_frames)  # (T, H, W, 3)
        out += [(frame_tensor(a), frame_tensor(b)) for a, b in zip(frames, frames[1:])]
    if not out:
        raise TVNetError(f"{root}: videos have fewer than 2 frames")
    return out


# -- augmentation ------------------------------------------------------------------------------
def crop_flip(tensors: list[torch.Tensor], gen: torch.Generator, flow_idx: int | None, *,
              crop: tuple[int, int] | None = None, flip: bool = False,
              transpose: bool = False) -> list[torch.Tensor]:
    """Same random crop / flips / transpose for all tensors `(1, C, H, W)`; the flow (index
    `flow_idx`) changes sign with a flip and swaps u and v with a transpose. Draws come from
    `gen` in a fixed order, so a seeded run (and a resumed one) is reproducible."""
    h, w = tensors[0].shape[-2:]
    if crop is not None:
        ch, cw = min(crop[0], h), min(crop[1], w)
        y = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
        tensors = [t[..., y:y + ch, x:x + cw] for t in tensors]
    if flip:
        for dim, ch in ((3, 0), (2, 1)):  # horizontal flip negates u, vertical negates v
            if float(torch.rand(1, generator=gen)) < 0.5:
                tensors = [t.flip(dim) for t in tensors]
                if flow_idx is not None:
                    f = tensors[flow_idx].clone()
                    f[:, ch] = -f[:, ch]
                    tensors[flow_idx] = f
    if transpose and float(torch.rand(1, generator=gen)) < 0.5:
        tensors = [t.transpose(2, 3) for t in tensors]
        if flow_idx is not None:
            tensors[flow_idx] = tensors[flow_idx].flip(1)  # (u, v) -> (v, u)
    return tensors
