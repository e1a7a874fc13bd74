"""Shared fixtures: the real data beside the checkout (../shared/data) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if not torch.cuda.is_available():  # Triton kernels run on CPU tensors in its interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # (read when triton.jit decorates: set first)

DATA = Path(os.environ.get("TVNET_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA}")
    return DATA


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
