"""Synthetic frame pairs with exact optical flow: textured layers, each moved by its own
homography, composited back to front (so near layers occlude far ones), with an optional
lighting change and sensor noise on the second frame.

A layer is a texture with an alpha mask, placed on the canvas by a homography P (canvas pixel
at time 0 -> texture pixel) and moved by a homography M (canvas at time 0 -> canvas at time 1).
Frame t samples each texture at P x (t = 0) or P M^-1 x (t = 1); the flow at x is
M x - x for the nearest layer covering x in frame 0: exact by construction, occluded pixels
included (as Sintel and KITTI count them); pixels that leave the canvas are not valid.

`scene(kind, textures, size, rng)` draws layers that mimic a data set's motion:
"driving" (KITTI: expansion about a focus of expansion, vehicles, large motion at the
borders), "sintel" (large translations and rotations of several layers, lighting change),
"chairs" (FlyingChairs: affine objects over an affine background) and "small"
(Middlebury: a few pixels). `procedural_texture` makes textures that owe nothing to a data
set (multi-scale noise with sharp-edged shapes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TVNetError
from ..io.datasets import PairData

KINDS = ("driving", "sintel", "chairs", "small")


@dataclass(frozen=True)
class Layer:
    """A texture `(h, w, 3)` float 0..255 with alpha `(h, w)` in 0..1 (None: opaque), placed
    by `place` (3, 3: canvas -> texture) and moved by `motion` (3, 3: canvas t0 -> canvas t1)."""

    texture: np.ndarray
    alpha: np.ndarray | None
    place: np.ndarray
    motion: np.ndarray


def _apply(h: np.ndarray, xy: torch.Tensor) -> torch.Tensor:
    """Homography `h` (3, 3) applied to points `(2, H, W)` (x, y) -> `(2, H, W)`."""
    m = torch.as_tensor(h, dtype=torch.float64)
    x, y = xy[0], xy[1]
    d = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    return torch.stack([(m[0, 0] * x + m[0, 1] * y + m[0, 2]) / d, (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / d])


def _sample(img: torch.Tensor, pos: torch.Tensor, mode: str, padding: str = "reflection") -> torch.Tensor:
    """`img` `(C, h, w)` at texture positions `pos` `(2, H, W)` -> `(C, H, W)`; past the edges
    mirrored (textures) or zero (`padding="zeros"`: alpha, nothing outside an object)."""
    h, w = img.shape[-2:]
    grid = torch.stack([pos[0] * (2.0 / (w - 1)) - 1.0, pos[1] * (2.0 / (h - 1)) - 1.0], dim=-1)
    return F.grid_sample(img[None].float(), grid[None].float(), mode=mode, padding_mode=padding,
                         align_corners=True)[0]


def render(layers: Sequence[Layer], size: tuple[int, int], gain: float = 1.0, bias: float = 0.0,
           noise: float = 0.0, rng: np.random.Generator | None = None, name: str = "synthetic") -> PairData:
    """Frames and exact flow of `layers` (back to front) on a canvas of `size` = (H, W).

    Frame 1 is `gain * frame + bias` (lighting change); both frames get gaussian noise of
    `noise` grey levels (seeded by `rng`), then are rounded to uint8."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    x0 = torch.stack([xs, ys])  # (2, H, W) canvas positions
    frames = [torch.zeros(3, h, w), torch.zeros(3, h, w)]
    flow = torch.zeros(2, h, w, dtype=torch.float64)
    for layer in layers:
        tex = torch.as_tensor(np.asarray(layer.texture, np.float32)).permute(2, 0, 1)  # (3, th, tw)
        alpha = None if layer.alpha is None else torch.as_tensor(np.asarray(layer.alpha, np.float32))[None]
        back = layer.place @ np.linalg.inv(layer.motion)  # canvas at t1 -> texture
        for t, placement in enumerate((layer.place, back)):
            pos = _apply(placement, x0)
            a = torch.ones(1, h, w) if alpha is None else _sample(alpha, pos, "bilinear", "zeros").clamp(0, 1)
            frames[t] = a * _sample(tex, pos, "bicubic") + (1 - a) * frames[t]
            if t == 0:
                flow = torch.where(a >= 0.5, _apply(layer.motion, x0) - x0, flow)
    rng = rng or np.random.default_rng(0)
    frames[1] = gain * frames[1] + bias
    out = []
    for f in frames:
        f = f.permute(1, 2, 0).numpy()
        if noise > 0:
            f = f + rng.normal(0.0, noise, f.shape)
        out.append(np.clip(np.round(f), 0, 255).astype(np.uint8))
    gt = flow.permute(1, 2, 0).numpy()
    end = gt + x0.permute(1, 2, 0).numpy()
    valid = (end[..., 0] >= 0) & (end[..., 0] <= w - 1) & (end[..., 1] >= 0) & (end[..., 1] <= h - 1)
    return PairData(name, out[0], out[1], gt.astype(np.float32), valid)


# -- homographies ---------------------------------------------------------------------------
def similarity(scale: float = 1.0, angle: float = 0.0, tx: float = 0.0, ty: float = 0.0,
               center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Scale by `scale` and rotate by `angle` (radians) about `center`, then translate."""
    cx, cy = center
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty], [0, 0, 1.0]])


# -- textures and shapes ----------------------------------------------------------------------
def procedural_texture(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """`(H, W, 3)` float texture: colour noise at several scales plus flat shapes with sharp
    edges (so both fine texture and strong edges exist, as in real scenes)."""
    h, w = size
    img = torch.zeros(3, h, w)
    for octave in range(1, 7):
        cells = (max(2, h >> (7 - octave)), max(2, w >> (7 - octave)))
        noise = torch.as_tensor(rng.normal(0, 1, (1, 3, *cells)), dtype=torch.float32)
        img += F.interpolate(noise, (h, w), mode="bicubic", align_corners=False)[0] * (0.8 ** octave)
    img = (img - img.mean()) / img.std().clamp_min(1e-6) * 30 + 128
    ys, xs = np.mgrid[0:h, 0:w]
    out = img.permute(1, 2, 0).numpy()
    for _ in range(rng.integers(4, 12)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, min(h, w) / 4)
        inside = shape_mask(xs - cx, ys - cy, r, rng)
        out[inside] = rng.uniform(20, 235, 3) + rng.normal(0, 6, (int(inside.sum()), 3))
    return np.clip(out, 0, 255)


def shape_mask(dx: np.ndarray, dy: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a random ellipse, rectangle or star-like blob of radius ~`r` centred at
    offsets (0, 0) of the coordinate arrays `dx`, `dy`."""
    kind = rng.integers(3)
    a = rng.uniform(0, math.pi)
    u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    e = rng.uniform(0.4, 1.0)
    if kind == 0:
        return (u / r) ** 2 + (v / (e * r)) ** 2 <= 1
    if kind == 1:
        return (np.abs(u) <= r) & (np.abs(v) <= e * r)
    lobes, depth = rng.integers(3, 7), rng.uniform(0.2, 0.5)
    return np.hypot(u, v / e) <= r * (1 - depth * (0.5 + 0.5 * np.cos(lobes * np.arctan2(v, u))))


def _object(textures: Sequence[np.ndarray], size: tuple[int, int], r: float, rng: np.random.Generator,
            rect: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """A foreground object: a texture crop, its alpha (a shape of radius `r` at the crop's
    centre), a placement putting that centre at a random canvas point, and that point."""
    tex = textures[rng.integers(len(textures))]
    th, tw = tex.shape[:2]
    side = int(min(th, tw, 2 * r + 8))
    y0, x0 = rng.integers(0, th - side + 1), rng.integers(0, tw - side + 1)
    crop = tex[y0:y0 + side, x0:x0 + side]
    ys, xs = np.mgrid[0:side, 0:side] - (side - 1) / 2
    if rect:  # a vehicle: an axis-aligned box, wider than tall
        mask = (np.abs(xs) <= r) & (np.abs(ys) <= r * rng.uniform(0.5, 0.8))
    else:
        mask = shape_mask(xs, ys, r, rng)
    h, w = size
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.15 * h, 0.9 * h)
    place = similarity(1.0, 0.0, (side - 1) / 2 - cx, (side - 1) / 2 - cy)
    return crop, mask.astype(np.float32), place, (cx, cy)


def _flying(textures: Sequence[np.ndarray], size: tuple[int, int], rng: np.random.Generator, count: int,
            extent: tuple[float, float], shift: float, zoom: tuple[float, float], turn: tuple[float, float]
            ) -> list[Layer]:
    """`count` objects (radius `extent` x the diagonal) each moving by up to `shift` x the
    diagonal in a random direction, scaled by `zoom` and turned by `turn` (uniform ranges)
    about its own centre."""
    u, diag = rng.uniform, math.hypot(*size)
    layers = []
    for _ in range(count):
        crop, mask, p, centre = _object(textures, size, u(*extent) * diag, rng)
        mag, ang = u(0.0, shift) * diag, u(0, 2 * math.pi)
        layers.append(Layer(crop, mask, p, similarity(u(*zoom), u(*turn), mag * math.cos(ang),
                                                      mag * math.sin(ang), center=centre)))
    return layers


def _background(textures: Sequence[np.ndarray], size: tuple[int, int], rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A texture and a placement that shows a random window of it (texture pixel = canvas pixel)."""
    tex = textures[rng.integers(len(textures))]
    th, tw = tex.shape[:2]
    h, w = size
    ox, oy = rng.uniform(0, max(0, tw - w)), rng.uniform(0, max(0, th - h))
    return tex, similarity(1.0, 0.0, ox, oy)


def scene(kind: str, textures: Sequence[np.ndarray], size: tuple[int, int], rng: np.random.Generator
          ) -> tuple[list[Layer], dict]:
    """Layers (back to front) of a random scene of `kind` (one of KINDS) and the lighting and
    noise to render it with (keyword arguments of `render`)."""
    h, w = size
    diag = math.hypot(h, w)
    u = rng.uniform
    tex, place = _background(textures, size, rng)
    layers: list[Layer] = []
    if kind == "driving":  # camera moving forward: expansion about a focus near the horizon
        foe = (u(0.35, 0.65) * w, u(0.3, 0.5) * h)
        layers.append(Layer(tex, None, place, similarity(u(1.04, 1.18), u(-0.01, 0.01), center=foe)))
        for _ in range(rng.integers(1, 4)):  # vehicles: boxes approaching or receding, sliding sideways
            crop, mask, p, c = _object(textures, size, u(0.06, 0.16) * w, rng, rect=True)
            layers.append(Layer(crop, mask, p, similarity(u(0.92, 1.15), 0.0, u(-0.06, 0.06) * w, u(-0.01, 0.02) * h,
                                                          center=c)))
        lighting = dict(gain=u(0.93, 1.07), bias=u(-4, 4), noise=u(0.5, 2.5))
    elif kind == "sintel":  # large motion of several layers, rotation, lighting change
        layers.append(Layer(tex, None, place, similarity(u(0.96, 1.05), u(-0.03, 0.03), u(-0.04, 0.04) * w,
                                                         u(-0.04, 0.04) * h, center=(w / 2, h / 2))))
        layers += _flying(textures, size, rng, rng.integers(2, 5), (0.06, 0.2), 0.1, (0.9, 1.12), (-0.15, 0.15))
        lighting = dict(gain=u(0.9, 1.1), bias=u(-8, 8), noise=u(0.0, 2.0))
    elif kind == "chairs":  # FlyingChairs: affine objects over an affine background
        layers.append(Layer(tex, None, place, similarity(u(0.93, 1.07), u(-0.1, 0.1), u(-0.04, 0.04) * w,
                                                         u(-0.04, 0.04) * h, center=(w / 2, h / 2))))
        layers += _flying(textures, size, rng, rng.integers(3, 7), (0.05, 0.15), 0.08, (0.9, 1.1), (-0.2, 0.2))
        lighting = dict(gain=1.0, bias=0.0, noise=u(0.0, 1.5))
    elif kind == "small":  # Middlebury: a few pixels, smooth, sub-pixel detail matters
        layers.append(Layer(tex, None, place, similarity(u(0.99, 1.01), u(-0.01, 0.01), u(-3, 3), u(-3, 3),
                                                         center=(w / 2, h / 2))))
        for _ in range(rng.integers(1, 3)):
            crop, mask, p, c = _object(textures, size, u(0.08, 0.2) * diag, rng)
            layers.append(Layer(crop, mask, p, similarity(u(0.98, 1.02), u(-0.03, 0.03), u(-6, 6), u(-6, 6),
                                                          center=c)))
        lighting = dict(gain=1.0, bias=0.0, noise=u(0.0, 1.0))
    else:
        raise ValueError(f"scene kind must be one of {KINDS}, not {kind!r}")
    return layers, lighting


def scenes(kind: str, textures: Sequence[np.ndarray], size: tuple[int, int] = (256, 340),
           seed: int = 0) -> Iterator[PairData]:
    """Rendered pairs of `kind`, without end, reproducible from `seed`, named `<kind>-<i>`."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    for i in itertools.count():
        layers, lighting = scene(kind, textures, size, rng)
        yield render(layers, size, rng=rng, name=f"{kind}-{i}", **lighting)


def make_pairs(kind: str, textures: Sequence[np.ndarray], n: int, size: tuple[int, int] = (256, 340),
               seed: int = 0) -> list[PairData]:
    """The first `n` pairs of `scenes(kind, ...)`."""
    return list(itertools.islice(scenes(kind, textures, size, seed), n))


def training_textures(sources: Sequence[str | Path] = (), procedural: int = 8, frames_per_video: int = 4,
                      seed: int = 0) -> list[np.ndarray]:
    """Textures for generated training data: `procedural` procedural ones (they owe nothing to
    any data set) plus images and evenly spaced video frames from `sources` (files or
    folders), as `(H, W, 3)` float 0..255. Whoever ships weights trained on them must be
    allowed to by the sources' licences (the procedural ones always are)."""
    from ..io.datasets import IMAGE_SUFFIXES, load_image
    from ..io.video import VIDEO_EXTENSIONS, read_frames

    rng = np.random.default_rng(seed)
    tex = [procedural_texture((320, 440), rng) for _ in range(procedural)]
    files = []
    for src in map(Path, sources):
        if not src.exists():
            raise TVNetError(f"{src}: texture source not found")
        files += sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    for f in files:
        if f.suffix.lower() in VIDEO_EXTENSIONS:
            frames = read_frames(f, max_frames=300)  # a long video: its first 300 frames
            tex += [frames[i].astype(np.float32)
                    for i in np.linspace(0, len(frames) - 1, frames_per_video).round().astype(int)]
        elif f.suffix.lower() in IMAGE_SUFFIXES:
            tex.append(load_image(f).astype(np.float32))
    return tex


def write_dataset(out: str | Path, textures: Sequence[np.ndarray], per_kind: int, kinds: Sequence[str] = KINDS,
                  size: tuple[int, int] = (256, 340), seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Render `per_kind` pairs of each of `kinds` into `out` in the FlyingChairs layout
    (`NNNNN_img1.ppm`, `NNNNN_img2.ppm`, `NNNNN_flow.flo`; pixels whose flow leaves the frame
    are written as unknown), readable by `tvnet epe` and `tvnet train`. Returns the count.
    The same seed gives the same files; kinds are interleaved so any prefix is balanced."""
    from PIL import Image

    from ..io.flowio import UNKNOWN_WRITTEN, write_flo

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    streams = [scenes(kind, textures, size, seed) for kind in kinds]
    total, n = per_kind * len(kinds), 0
    for _ in range(per_kind):
        for pair in map(next, streams):
            stem = out / f"{n:05d}"
            Image.fromarray(pair.frame0).save(f"{stem}_img1.ppm")
            Image.fromarray(pair.frame1).save(f"{stem}_img2.ppm")
            write_flo(f"{stem}_flow.flo", np.where(pair.valid[..., None], pair.gt, np.float32(UNKNOWN_WRITTEN)))
            n += 1
            if progress is not None:
                progress(n, total)
    return n
