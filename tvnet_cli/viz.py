"""Flow pictures: the Middlebury colour wheel (hue = direction, saturation = speed), as
PNG files, an MP4 or a GIF, with a legend wheel and the speed that maps to full saturation.

Reads every output of `tvnet extract` through the format registry (`io/formats.py`): a
jpeg, .flo or .npy folder, an .h5 file, or one .flo/.npy/flow_x_NNNNN.jpg file. Videos
play at the source video's frame rate when the output records it (HDF5 attributes,
`OUT/tvnet.json`), else at `DEFAULT_FPS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TVNetError
from .io.flowio import known as flow_known
from .io.formats import iter_flow
from .io.video import is_video_name, write_video

# Hue segments of the Middlebury wheel (Baker et al. 2011): red-yellow, yellow-green,
# green-cyan, cyan-blue, blue-magenta, magenta-red; lengths chosen for perceptual balance.
_SEGMENTS = (15, 6, 4, 11, 13, 6)
DEFAULT_FPS = 25.0  # MP4/GIF frame rate when the source's is not recorded

Progress = Callable[[int, int], None]
"""progress(fields done, fields in all)."""


@dataclass(frozen=True)
class VizConfig:
    """How pictures look: a fixed `max_flow` (pixels) makes pictures comparable; None = per input."""

    max_flow: float | None = None
    bound: float | None = None  # JPEG quantisation bound; None = recorded one (tvnet.json), else 20
    legend: bool = True
    fps: float | None = None  # MP4/GIF; None = the source video's, else DEFAULT_FPS
    format: str | None = None  # input format when a folder holds several (jpeg, flo, npy)

    def __post_init__(self) -> None:
        for name in ("max_flow", "bound", "fps"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise TVNetError(f"--{name.replace('_', '-')} must be > 0 and finite, got {v}")


def colour_wheel() -> np.ndarray:
    """The 55 wheel colours `(55, 3)` float in 0..1, starting at red and turning to magenta."""
    ramps = []
    corners = [(1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1), (1, 0, 1), (1, 0, 0)]
    for n, a, b in zip(_SEGMENTS, corners, corners[1:]):
        t = np.arange(n)[:, None] / n
        ramps.append(np.array(a) * (1 - t) + np.array(b) * t)
    return np.concatenate(ramps).astype(np.float64)


def flow_to_rgb(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Flow `(H, W, 2)` -> colour picture `(H, W, 3)` uint8; unknown pixels are black.

    Speed `max_flow` (default: the largest known speed) is fully saturated; faster is darkened.
    """
    flow = np.asarray(flow, np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise TVNetError(f"flow must be (H, W, 2), got {flow.shape}")
    known = flow_known(flow)
    u = np.where(known, flow[..., 0], 0.0)
    v = np.where(known, flow[..., 1], 0.0)
    rad = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(rad[known].max()) if known.any() else 1.0
    rad = rad / max(max_flow, 1e-9)
    wheel = colour_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # -1..1
    pos = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(pos).astype(int) % n
    k1 = (k0 + 1) % n
    f = (pos - np.floor(pos))[..., None]
    col = (1 - f) * wheel[k0] + f * wheel[k1]  # (H, W, 3)
    r = rad[..., None]
    col = np.where(r <= 1, 1 - r * (1 - col), col * 0.75)  # white at rest, darker beyond max
    col[~known] = 0
    return np.clip(np.round(col * 255), 0, 255).astype(np.uint8)


def legend_wheel(size: int = 96) -> np.ndarray:
    """The key: a disc `(size, size, 3)` whose rim is `max_flow` in every direction."""
    r = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) - r
    flow = np.dstack([x, y]) / r
    img = flow_to_rgb(flow, 1.0)
    img[np.hypot(x, y) > r] = 255
    return img


def with_legend(picture: np.ndarray, max_flow: float) -> np.ndarray:
    """Picture `(H, W, 3)` with a white side panel: the legend wheel and its scale in pixels,
    both sized to the picture (text about 1/16 of its height, at least 10 px)."""
    from PIL import Image, ImageDraw, ImageFont

    h = picture.shape[0]
    font = ImageFont.load_default(size=max(10, h // 16))
    text = f"rim = {max_flow:.3g} px"
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(4, h // 40)
    size = max(16, min(h // 3, h - (bottom - top) - 3 * margin))
    panel = Image.new("RGB", (max(size, right - left) + 2 * margin, h), "white")
    panel.paste(Image.fromarray(legend_wheel(size)), (margin, margin))
    ImageDraw.Draw(panel).text((margin - left, size + 2 * margin - top), text, fill="black", font=font)
    return np.concatenate([picture, np.asarray(panel)], axis=1)


# -- writing ------------------------------------------------------------------------------------
def _known_speed(f: np.ndarray) -> float:
    """Largest known speed of a field `(2, H, W)` (0 when none is known)."""
    ok = flow_known(f, axis=0)
    return float(np.hypot(f[0], f[1])[ok].max()) if ok.any() else 0.0


def render(src: str | Path, out: str | Path, cfg: VizConfig = VizConfig(),
           progress: Progress | None = None) -> list[Path]:
    """Colour-code every flow field in `src` by `out`'s name: `*.mp4` or `*.gif` (one video),
    `*.png` (one field), anything else a folder of PNGs. Returns the files written."""
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".mp4", ".gif", ".png") and is_video_name(out):
        raise TVNetError(f"{out}: videos are written as .mp4 or .gif")
    info, _ = iter_flow(src, cfg.format, cfg.bound)
    max_flow = cfg.max_flow
    if max_flow is None:  # one scale for all fields of the input, so a video does not flicker
        max_flow = max((_known_speed(f) for _, f in iter_flow(src, cfg.format, cfg.bound)[1]), default=0.0) or 1.0
    total = info.fields

    def pictures() -> Iterator[tuple[str, np.ndarray]]:
        for i, (name, f) in enumerate(iter_flow(src, cfg.format, cfg.bound)[1]):
            img = flow_to_rgb(np.moveaxis(f, 0, -1), max_flow)
            yield name, with_legend(img, max_flow) if cfg.legend else img
            if progress:
                progress(i + 1, total)

    from PIL import Image

    if kind in (".mp4", ".gif"):
        fps = cfg.fps or info.fps or DEFAULT_FPS
        write = _write_mp4 if kind == ".mp4" else _write_gif
        return [write(out, (img for _, img in pictures()), fps)]
    if kind == ".png":
        if total != 1:
            raise TVNetError(f"{out}: {total} flow fields need a folder, .mp4 or .gif output, not one PNG")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(next(pictures())[1]).save(out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, img in pictures():
        written.append(out / f"{name}.png")
        Image.fromarray(img).save(written[-1])
    return written


def _write_mp4(out: Path, pictures: Iterator[np.ndarray], fps: float) -> Path:
    import fractions

    def even(img: np.ndarray) -> np.ndarray:  # yuv420p needs even sizes
        return img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]

    tmp = out.with_name(out.stem + ".tmp.mp4")
    try:
        write_video(tmp, (even(p) for p in pictures), "libx264", fractions.Fraction(fps).limit_denominator(1000))
    except TVNetError:
        tmp.unlink(missing_ok=True)
        raise TVNetError(f"{out}: no flow fields to write") from None
    tmp.replace(out)
    return out


def _write_gif(out: Path, pictures: Iterator[np.ndarray], fps: float) -> Path:
    """Animated GIF, looping; GIF stores frame times in 1/100 s, so fps is rounded to that."""
    from PIL import Image

    frames = (Image.fromarray(p) for p in pictures)
    first = next(frames, None)
    if first is None:
        raise TVNetError(f"{out}: no flow fields to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.gif")
    first.save(tmp, save_all=True, append_images=frames, duration=round(100 / fps) * 10, loop=0)
    tmp.replace(out)
    return out
