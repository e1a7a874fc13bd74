"""Optical-flow pair datasets in their distributed layouts, with layout detection.

Layouts (`LAYOUTS`):
  middlebury  `other-data/<Seq>/frame10.png, frame11.png` + `other-gt-flow/<Seq>/flow10.flo`,
              or flat `<Seq>/frame10.png, frame11.png[, flow10.flo]` (or one `<Seq>` folder)
  sintel      MPI-Sintel training: `training/{clean,final}/<scene>/frame_NNNN.png`
              + `training/flow/<scene>/frame_NNNN.flo` (root may be the folder above `training`)
  kitti       KITTI 2012/2015 training: `training/{image_2|colored_0}/NNNNNN_10.png, _11.png`
              + `training/{flow_occ|flow_noc}/NNNNNN_10.png`
  chairs      FlyingChairs: `NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo`
              (or the flownet2 examples' `NNNNNNN-img0.ppm, -img1.ppm, -gt.flo`)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TVNetError
from .flowio import read_gt_flow

LAYOUTS = ("middlebury", "sintel", "kitti", "chairs")
IMAGE_SUFFIXES = (".png", ".ppm", ".jpg", ".jpeg", ".bmp")  # image files read by `load_image` in folders


@dataclass(frozen=True)
class FlowPair:
    """One frame pair; `gt` is None where no ground truth is distributed."""

    name: str
    frame0: Path
    frame1: Path
    gt: Path | None = None


@dataclass(frozen=True)
class PairData:
    """A loaded pair: frames `(H, W, 3)` uint8; gt `(H, W, 2)` float32 and valid `(H, W)` or None."""

    name: str
    frame0: np.ndarray
    frame1: np.ndarray
    gt: np.ndarray | None
    valid: np.ndarray | None


def load_image(path: Path) -> np.ndarray:
    """Image file -> RGB uint8 `(H, W, 3)` (grey images are repeated on 3 channels)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise TVNetError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise TVNetError(f"{path}: cannot read image ({type(e).__name__})") from None


def load_pair(pair: FlowPair) -> PairData:
    """Read a pair's frames and ground truth; sizes must agree."""
    f0, f1 = load_image(pair.frame0), load_image(pair.frame1)
    if f0.shape != f1.shape:
        raise TVNetError(f"{pair.frame1}: size {f1.shape[1]}x{f1.shape[0]} differs from "
                         f"{pair.frame0.name} ({f0.shape[1]}x{f0.shape[0]})")
    gt = valid = None
    if pair.gt is not None:
        if not pair.gt.is_file():
            raise TVNetError(f"{pair.gt}: ground-truth flow not found")
        gt, valid = read_gt_flow(pair.gt)
        if gt.shape[:2] != f0.shape[:2]:
            raise TVNetError(f"{pair.gt}: flow size {gt.shape[1]}x{gt.shape[0]} differs from "
                             f"the frames ({f0.shape[1]}x{f0.shape[0]})")
    return PairData(pair.name, f0, f1, gt, valid)


# -- layout detection -------------------------------------------------------------------------
def _sintel_root(root: Path) -> Path | None:
    for cand in (root / "training", root):
        if (cand / "flow").is_dir() and ((cand / "clean").is_dir() or (cand / "final").is_dir()):
            return cand
    return None


def _kitti_root(root: Path) -> Path | None:
    for cand in (root / "training", root):
        has_img = (cand / "image_2").is_dir() or (cand / "colored_0").is_dir()
        if has_img and ((cand / "flow_occ").is_dir() or (cand / "flow_noc").is_dir()):
            return cand
    return None


_CHAIRS = (re.compile(r"^(\d+)_img1\.ppm$"), re.compile(r"^(\d+)-img0\.ppm$"))


def _is_chairs(root: Path) -> bool:
    return root.is_dir() and any(p.match(f.name) for f in root.iterdir() for p in _CHAIRS)


def _is_middlebury(root: Path) -> bool:
    if (root / "other-data").is_dir() or (root / "frame10.png").is_file():
        return True
    return root.is_dir() and any((d / "frame10.png").is_file() for d in root.iterdir() if d.is_dir())


def detect_layout(root: str | Path) -> str:
    """Name of the layout of `root` (see `LAYOUTS`); TVNetError if none matches."""
    root = Path(root)
    if not root.is_dir():
        raise TVNetError(f"{root}: dataset folder not found")
    if _sintel_root(root):
        return "sintel"
    if _kitti_root(root):
        return "kitti"
    if _is_chairs(root):
        return "chairs"
    if _is_middlebury(root):
        return "middlebury"
    raise TVNetError(f"{root}: unknown dataset layout (expected one of {', '.join(LAYOUTS)}; "
                     "see `tvnet epe --help`)")


# -- pair lists per layout --------------------------------------------------------------------
def _middlebury(root: Path) -> list[FlowPair]:
    if (root / "other-data").is_dir():
        gt_dir = root / "other-gt-flow"
        seqs = sorted(d for d in (root / "other-data").iterdir() if (d / "frame10.png").is_file())
        return [FlowPair(d.name, d / "frame10.png", d / "frame11.png",
                         gt_dir / d.name / "flow10.flo" if (gt_dir / d.name / "flow10.flo").is_file() else None)
                for d in seqs]
    seqs = [root] if (root / "frame10.png").is_file() else sorted(
        d for d in root.iterdir() if d.is_dir() and (d / "frame10.png").is_file())
    return [FlowPair(d.name, d / "frame10.png", d / "frame11.png",
                     d / "flow10.flo" if (d / "flow10.flo").is_file() else None) for d in seqs]


def _sintel(root: Path, sintel_pass: str) -> list[FlowPair]:
    base = _sintel_root(root)
    assert base is not None
    img_root = base / sintel_pass
    if not img_root.is_dir():
        raise TVNetError(f"{img_root}: Sintel pass {sintel_pass!r} not found")
    pairs = []
    for scene in sorted(d for d in img_root.iterdir() if d.is_dir()):
        frames = sorted(scene.glob("frame_*.png"))
        for a, b in zip(frames, frames[1:]):
            gt = base / "flow" / scene.name / (a.stem + ".flo")
            pairs.append(FlowPair(f"{scene.name}/{a.stem}", a, b, gt if gt.is_file() else None))
    return pairs


def _kitti(root: Path, kitti_gt: str) -> list[FlowPair]:
    base = _kitti_root(root)
    assert base is not None
    img = base / "image_2" if (base / "image_2").is_dir() else base / "colored_0"
    gt_dir = base / kitti_gt
    if not gt_dir.is_dir():
        raise TVNetError(f"{gt_dir}: KITTI ground-truth folder {kitti_gt!r} not found")
    pairs = []
    for f0 in sorted(img.glob("*_10.png")):
        stem = f0.name[: -len("_10.png")]
        gt = gt_dir / f0.name
        pairs.append(FlowPair(stem, f0, img / f"{stem}_11.png", gt if gt.is_file() else None))
    return pairs


def _chairs(root: Path) -> list[FlowPair]:
    pairs = []
    for f in sorted(root.iterdir()):
        m = _CHAIRS[0].match(f.name)
        if m:
            i = m.group(1)
            pairs.append(FlowPair(i, f, root / f"{i}_img2.ppm", root / f"{i}_flow.flo"))
        m = _CHAIRS[1].match(f.name)
        if m:
            i = m.group(1)
            pairs.append(FlowPair(i, f, root / f"{i}-img1.ppm", root / f"{i}-gt.flo"))
    return [p if p.gt.is_file() else FlowPair(p.name, p.frame0, p.frame1, None) for p in pairs]


def find_pairs(root: str | Path, layout: str | None = None, *, sintel_pass: str = "clean",
               kitti_gt: str = "flow_occ", require_gt: bool = False) -> tuple[str, list[FlowPair]]:
    """(layout, pairs) of a dataset folder; `layout=None` detects it.

    `require_gt` drops pairs without ground truth (and fails if none is left).
    """
    root = Path(root)
    if not root.is_dir():
        raise TVNetError(f"{root}: dataset folder not found")
    if layout is None:
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise TVNetError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if layout == "sintel" and _sintel_root(root) is None or layout == "kitti" and _kitti_root(root) is None:
        raise TVNetError(f"{root}: does not look like a {layout} dataset")
    pairs = {"middlebury": lambda: _middlebury(root), "sintel": lambda: _sintel(root, sintel_pass),
             "kitti": lambda: _kitti(root, kitti_gt), "chairs": lambda: _chairs(root)}[layout]()
    if require_gt:
        pairs = [p for p in pairs if p.gt is not None]
    if not pairs:
        what = "frame pairs with ground truth" if require_gt else "frame pairs"
        raise TVNetError(f"{root}: no {what} found in the {layout} layout")
    return layout, pairs
