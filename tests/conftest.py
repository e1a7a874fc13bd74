"""Shared fixtures and helpers.

Test data: what the tests need ships in tests/data (openly licensed, see its PROVENANCE.md)
or is generated (tests/synthetic.py). Optional larger data -- research-use-only images with
ground truth, used only for OpenCV-parity and benchmark numbers -- is found by one rule:
$TVNET_SHARED_DATA, else ../shared/data beside the checkout. Tests that need it skip with the
reason shown, except under TVNET_REQUIRE_DATA=1 (CI), where such a skip fails instead."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if not torch.cuda.is_available():  # Triton kernels run on CPU tensors in its interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # (read when triton.jit decorates: set first)

SHIPPED = Path(__file__).resolve().parent / "data"  # small, openly licensed, in the repository
VIDEOS = SHIPPED / "videos"
DATA = Path(os.environ.get("TVNET_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The optional larger data; skips (fails under TVNET_REQUIRE_DATA=1) where it is absent."""
    if not DATA.is_dir():
        reason = f"needs the optional research-use data (Middlebury, FlyingChairs) at {DATA}; set TVNET_SHARED_DATA"
        if os.environ.get("TVNET_REQUIRE_DATA") == "1":
            pytest.fail(f"TVNET_REQUIRE_DATA=1: {reason}")
        pytest.skip(reason)
    return DATA


@pytest.fixture(scope="session")
def splits_dir(tmp_path_factory) -> Path:
    """The official UCF101 / HMDB51 split files (shipped compressed), unpacked once."""
    out = tmp_path_factory.mktemp("splits")
    with tarfile.open(SHIPPED / "splits.tar.xz") as tar:
        tar.extractall(out, filter="data")
    return out


def load_rgb(path: Path) -> np.ndarray:
    """Image file -> (H, W, 3) uint8."""
    return np.array(Image.open(path).convert("RGB"))


def to_batch(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (H, W) uint8 -> (1, C, H, W) uint8 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(img))
    return (t.permute(2, 0, 1) if t.dim() == 3 else t[None])[None]


def gt_pairs(data: Path) -> list[tuple[str, Path, Path, Path]]:
    """Every real pair with ground truth: (name, frame0, frame1, flow .flo)."""
    pairs = [("Grove3", data / "middlebury/Grove3/frame10.png",
              data / "middlebury/Grove3/frame11.png", data / "middlebury/Grove3/flow10.flo")]
    for i in range(3):
        stem = data / f"chairs/{i:07d}"
        pairs.append((f"chairs{i}", Path(f"{stem}-img0.ppm"), Path(f"{stem}-img1.ppm"),
                      Path(f"{stem}-gt.flo")))
    return pairs


def video_frames(path: Path, n: int) -> np.ndarray:
    """The first `n` frames of a video `(n, H, W, 3)` uint8 RGB: PyAV (as tvnet), or OpenCV
    where PyAV is missing (the GPU machines' image has OpenCV but no PyAV)."""
    import importlib.util

    if importlib.util.find_spec("av") is None:
        import cv2

        cap, frames = cv2.VideoCapture(str(path)), []
        while len(frames) < n:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        return np.stack(frames)
    from tvnet_cli.io.video import read_frames

    return read_frames(path, max_frames=n)
