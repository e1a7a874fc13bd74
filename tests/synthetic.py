"""Generated frame pairs with exact, analytic optical flow, for tests that need ground truth.

The texture is a sum of random plane waves, so it can be sampled exactly at any real
position. Frame 1 samples it through the inverse of an affine motion (shift, rotation and
zoom about the image centre), so the flow of every pixel of frame 0 is known in closed form:
frame1(x + flow(x)) == frame0(x). Nothing here is copied data, so it ships with the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tvnet_cli.io.flowio import write_flo


@dataclass(frozen=True)
class Motion:
    """Affine motion about the image centre: shift (px), rotation (degrees), zoom (factor)."""

    dx: float = 0.0
    dy: float = 0.0
    degrees: float = 0.0
    zoom: float = 1.0


def texture(x: np.ndarray, y: np.ndarray, seed: int = 0, waves: int = 48) -> np.ndarray:
    """Colour texture at real positions `x`, `y` (pixels, any shape S) -> (*S, 3) float in [0, 255]."""
    rng = np.random.default_rng(seed)
    wavelength = rng.uniform(5.0, 40.0, waves)
    angle = rng.uniform(0.0, 2 * np.pi, waves)
    phase = rng.uniform(0.0, 2 * np.pi, waves)
    colour = rng.uniform(0.2, 1.0, (waves, 3))
    amp = np.sqrt(wavelength)  # more energy at coarse scales, as in natural images
    kx, ky = 2 * np.pi * np.cos(angle) / wavelength, 2 * np.pi * np.sin(angle) / wavelength
    out = np.zeros(x.shape + (3,))
    for k in range(waves):
        out += (amp[k] * np.cos(kx[k] * x + ky[k] * y + phase[k]))[..., None] * colour[k]
    spread = np.sqrt(0.5 * ((amp[:, None] * colour) ** 2).sum(0))  # std of each channel
    return np.clip(127.5 + 50.0 * out / spread, 0, 255)


def flow_pair(h: int, w: int, motion: Motion, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame0 (H, W, 3) uint8, frame1 (H, W, 3) uint8, exact flow (H, W, 2) float32)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a = np.deg2rad(motion.degrees)
    c, s = np.cos(a), np.sin(a)
    # frame-0 pixel x moves to M(x) = centre + zoom * R (x - centre) + shift
    mx = cx + motion.zoom * (c * (x - cx) - s * (y - cy)) + motion.dx
    my = cy + motion.zoom * (s * (x - cx) + c * (y - cy)) + motion.dy
    # frame 1 at pixel p shows the texture at M^-1(p)
    px, py = (x - cx - motion.dx) / motion.zoom, (y - cy - motion.dy) / motion.zoom
    ix, iy = cx + c * px + s * py, cy - s * px + c * py
    f0 = np.round(texture(x, y, seed)).astype(np.uint8)
    f1 = np.round(texture(ix, iy, seed)).astype(np.uint8)
    return f0, f1, np.stack([mx - x, my - y], -1).astype(np.float32)


# Pairs named like the FlyingChairs pairs they stand in for: different motions, so a flow
# learnt on one pair is wrong on another.
PAIRS = {
    "00000": Motion(dx=2.5, dy=-1.0, degrees=3.0),
    "00001": Motion(dx=-1.5, dy=2.0, zoom=1.04),
    "00002": Motion(dx=1.0, dy=1.5, degrees=-4.0),
}


def write_chairs(root: Path, size: tuple[int, int] = (96, 128), names: tuple[str, ...] = tuple(PAIRS)) -> Path:
    """Pairs of `PAIRS` in the FlyingChairs layout (`NNNNN_img1.ppm`, `_img2.ppm`, `_flow.flo`)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        f0, f1, gt = flow_pair(*size, PAIRS[name], seed=i)
        Image.fromarray(f0).save(root / f"{name}_img1.ppm")
        Image.fromarray(f1).save(root / f"{name}_img2.ppm")
        write_flo(root / f"{name}_flow.flo", gt)
    return root


def write_middlebury(root: Path, name: str, size: tuple[int, int] = (96, 128), motion: Motion = Motion(1.5, -0.5, 2.0),
                     gt: bool = True, seed: int = 0) -> Path:
    """One sequence in the flat Middlebury layout (`<name>/frame10.png`, `frame11.png`, `flow10.flo`)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    f0, f1, flow = flow_pair(*size, motion, seed)
    Image.fromarray(f0).save(d / "frame10.png")
    Image.fromarray(f1).save(d / "frame11.png")
    if gt:
        write_flo(d / "flow10.flo", flow)
    return d
