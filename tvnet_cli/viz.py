"""Flow pictures: the Middlebury colour wheel (hue = direction, saturation = speed), as
PNG files or an MP4, with a legend wheel and the speed that maps to full saturation.

Reads .flo files, HDF5 files with a `flow` dataset `(N, 2, H, W)`, and TSN-style JPEG flow
folders (`flow_x_NNNNN.jpg` / `flow_y_NNNNN.jpg`, quantised with a bound).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TVNetError
from .io.flowio import UNKNOWN_FLOW, read_flo
from .io.quantize import DEFAULT_BOUND, dequantize
from .io.video import write_video

# Hue segments of the Middlebury wheel (Baker et al. 2011): red-yellow, yellow-green,
# green-cyan, cyan-blue, blue-magenta, magenta-red; lengths chosen for perceptual balance.
_SEGMENTS = (15, 6, 4, 11, 13, 6)


@dataclass(frozen=True)
class VizConfig:
    """How pictures look: a fixed `max_flow` (pixels) makes pictures comparable; None = per input."""

    max_flow: float | None = None
    bound: float = DEFAULT_BOUND  # quantisation bound of JPEG flow folders
    legend: bool = True
    fps: float = 10.0  # MP4 output

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
    known = np.isfinite(flow).all(axis=2) & (np.abs(flow) < UNKNOWN_FLOW).all(axis=2)
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
    """Picture `(H, W, 3)` with a white side panel: the legend wheel and its scale in pixels."""
    from PIL import Image, ImageDraw

    h, w = picture.shape[:2]
    size = max(32, min(96, h - 20))
    panel = Image.new("RGB", (size + 16, h), "white")
    panel.paste(Image.fromarray(legend_wheel(size)), (8, 4))
    ImageDraw.Draw(panel).text((8, size + 8), f"rim {max_flow:.3g}px", fill="black")
    return np.concatenate([picture, np.asarray(panel)], axis=1)


# -- reading ------------------------------------------------------------------------------------
_FLOW_X = re.compile(r"^flow_x_(\d+)\.jpg$")


def read_flows(path: str | Path, bound: float = DEFAULT_BOUND) -> Iterator[tuple[str, np.ndarray]]:
    """(name, flow `(H, W, 2)` float32) for each flow field in a .flo/.h5 file or a folder
    of .flo files or of flow_x/flow_y JPEGs."""
    path = Path(path)
    if not path.exists():
        raise TVNetError(f"{path}: not found")
    if path.is_file() and path.suffix.lower() == ".flo":
        yield path.stem, read_flo(path)
    elif path.is_file() and path.suffix.lower() in (".h5", ".hdf5"):
        yield from _read_h5(path)
    elif path.is_dir():
        flos = sorted(path.glob("*.flo"))
        xs = sorted(f for f in path.iterdir() if _FLOW_X.match(f.name))
        if flos:
            for f in flos:
                yield f.stem, read_flo(f)
        elif xs:
            yield from _read_jpegs(xs, bound)
        else:
            raise TVNetError(f"{path}: no .flo files or flow_x_NNNNN.jpg files found")
    else:
        raise TVNetError(f"{path}: not a flow file (.flo, .h5) or flow folder")


def _read_h5(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise TVNetError(f"{path}: cannot open HDF5 file ({e})") from None
    with f:
        ds = f.get("flow")
        if not isinstance(ds, h5py.Dataset):
            raise TVNetError(f"{path}: no dataset 'flow' in the HDF5 file"
                             + (" (it is a group)" if isinstance(ds, h5py.Group) else ""))
        if ds.ndim != 4 or ds.shape[1] != 2:
            raise TVNetError(f"{path}: dataset 'flow' must be (N, 2, H, W), got {ds.shape}")
        quantised = ds.dtype == np.uint8
        b = float(ds.attrs.get("bound", f.attrs.get("bound", DEFAULT_BOUND)))
        for i in range(ds.shape[0]):
            x = ds[i]  # (2, H, W)
            x = dequantize(x, b) if quantised else x.astype(np.float32)
            yield f"{path.stem}_{i + 1:05d}", np.moveaxis(x, 0, -1)


def _read_jpegs(xs: list[Path], bound: float) -> Iterator[tuple[str, np.ndarray]]:
    from PIL import Image

    for fx in xs:
        idx = _FLOW_X.match(fx.name).group(1)
        fy = fx.with_name(f"flow_y_{idx}.jpg")
        if not fy.is_file():
            raise TVNetError(f"{fy}: missing (its flow_x file exists)")
        qx, qy = (np.asarray(Image.open(p).convert("L")) for p in (fx, fy))
        if qx.shape != qy.shape:
            raise TVNetError(f"{fy}: size differs from {fx.name}")
        yield f"flow_{idx}", np.dstack([dequantize(qx, bound), dequantize(qy, bound)])


# -- writing ------------------------------------------------------------------------------------
def render(src: str | Path, out: str | Path, cfg: VizConfig = VizConfig(),
           progress: Callable[[int], None] | None = None) -> list[Path]:
    """Colour-code every flow field in `src`; `out` = `*.mp4` (one video), `*.png` (one field)
    or a folder (one PNG per field). Returns the files written."""
    out = Path(out)
    max_flow = cfg.max_flow
    if max_flow is None:  # one scale for all fields of the input, so a video does not flicker
        max_flow = 0.0
        for _, f in read_flows(src, cfg.bound):
            ok = (np.abs(f) < UNKNOWN_FLOW).all(axis=2) & np.isfinite(f).all(axis=2)
            if ok.any():
                max_flow = max(max_flow, float(np.hypot(f[..., 0], f[..., 1])[ok].max()))
        max_flow = max_flow or 1.0

    def pictures() -> Iterator[tuple[str, np.ndarray]]:
        for name, f in read_flows(src, cfg.bound):
            img = flow_to_rgb(f, max_flow)
            yield name, with_legend(img, max_flow) if cfg.legend else img

    if out.suffix.lower() == ".mp4":
        return [_write_mp4(out, pictures(), cfg.fps, progress)]
    from PIL import Image

    written = []
    if out.suffix.lower() == ".png":
        items = list(pictures())
        if len(items) != 1:
            raise TVNetError(f"{out}: {len(items)} flow fields need a folder or .mp4 output, not one PNG")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(items[0][1]).save(out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    for i, (name, img) in enumerate(pictures()):
        p = out / f"{name}.png"
        Image.fromarray(img).save(p)
        written.append(p)
        if progress:
            progress(i + 1)
    return written


def _write_mp4(out: Path, pictures: Iterator[tuple[str, np.ndarray]], fps: float,
               progress: Callable[[int], None] | None) -> Path:
    import fractions

    def frames() -> Iterator[np.ndarray]:
        for i, (_, img) in enumerate(pictures):
            h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2  # yuv420p needs even sizes
            yield img[:h, :w]
            if progress:
                progress(i + 1)

    tmp = out.with_name(out.stem + ".tmp.mp4")
    try:
        write_video(tmp, frames(), "libx264", fractions.Fraction(fps).limit_denominator(1000))
    except TVNetError:
        tmp.unlink(missing_ok=True)
        raise TVNetError(f"{out}: no flow fields to write") from None
    tmp.replace(out)
    return out
