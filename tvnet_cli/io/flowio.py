"""Flow file formats: Middlebury .flo (read/write) and KITTI 16-bit flow PNG (read/write).

KITTI flow PNG: 16-bit RGB, u = (R - 2^15) / 64, v = (G - 2^15) / 64, valid = B (0 or 1).
It is read with PyAV's PNG decoder (Pillow truncates 16-bit RGB to 8 bit) and written with a
small zlib encoder here, so neither needs OpenCV.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import TVNetError

FLO_MAGIC = 202021.25
UNKNOWN_FLOW = 1e9  # .flo values above this mean "unknown"
UNKNOWN_WRITTEN = 1e10  # what is written where the flow is unknown (Middlebury's convention)
KITTI_OFFSET = 2**15
KITTI_SCALE = 64.0


def known(flow: np.ndarray, axis: int = -1) -> np.ndarray:
    """Where a flow field (u and v along `axis`) is known: finite and below UNKNOWN_FLOW."""
    return np.isfinite(flow).all(axis=axis) & (np.abs(flow) < UNKNOWN_FLOW).all(axis=axis)


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury .flo file -> float32 array `(H, W, 2)` (u, v)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TVNetError(f"{path}: cannot read flow file ({e.strerror})") from None
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise TVNetError(f"{path}: not a .flo file (bad magic number)")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(data) != 12 + 8 * w * h:
        raise TVNetError(f"{path}: corrupt .flo file (header says {w}x{h}, size is {len(data)} bytes)")
    return np.frombuffer(data[12:], "<f4").reshape(h, w, 2).copy()


def flo_bytes(flow: np.ndarray, name: str | Path = "flow") -> bytes:
    """`(H, W, 2)` float flow -> the bytes of a Middlebury .flo file."""
    flow = np.asarray(flow, dtype="<f4")
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise TVNetError(f"{name}: flow must be (H, W, 2), got {flow.shape}")
    h, w = flow.shape[:2]
    return np.array([FLO_MAGIC], "<f4").tobytes() + np.array([w, h], "<i4").tobytes() + flow.tobytes()


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write `(H, W, 2)` float flow as a Middlebury .flo file (an OSError names `path`)."""
    data = flo_bytes(flow, path)
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None


def read_png16(path: str | Path) -> np.ndarray:
    """Read a 16-bit RGB PNG -> uint16 `(H, W, 3)` (PyAV's decoder keeps all 16 bits)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise TVNetError(f"{path}: file not found")
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            if frame.format.name not in ("rgb48be", "rgb48le", "rgba64be", "rgba64le"):
                raise TVNetError(f"{path}: not a 16-bit RGB PNG (pixel format {frame.format.name})")
            return frame.to_ndarray(format="rgb48le")
    except (av.error.FFmpegError, StopIteration, OSError) as e:
        raise TVNetError(f"{path}: cannot decode PNG ({type(e).__name__})") from None


def write_png16(path: str | Path, rgb: np.ndarray) -> None:
    """Write uint16 `(H, W, 3)` as a 16-bit RGB PNG (filter 0, zlib); for KITTI-style files."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint16:
        raise TVNetError(f"{path}: 16-bit PNG needs uint16 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    rows = rgb.astype(">u2").view(np.uint8).reshape(h, w * 6)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # 16 bit, colour type 2 = RGB
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(data)


def read_kitti_flow(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI flow PNG -> (flow float32 `(H, W, 2)`, valid bool `(H, W)`)."""
    raw = read_png16(path).astype(np.float32)
    flow = (raw[..., :2] - KITTI_OFFSET) / KITTI_SCALE
    valid = raw[..., 2] > 0
    flow[~valid] = 0.0
    return flow, valid


def write_kitti_flow(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write `(H, W, 2)` flow (+ optional bool `(H, W)` valid mask) as a KITTI flow PNG."""
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise TVNetError(f"{path}: flow must be (H, W, 2), got {flow.shape}")
    if valid is None:
        valid = np.ones(flow.shape[:2], bool)
    q = np.clip(np.round(flow * KITTI_SCALE + KITTI_OFFSET), 0, 65535)
    rgb = np.dstack([q[..., 0], q[..., 1], np.asarray(valid, bool)]).astype(np.uint16)
    rgb[~np.asarray(valid, bool), :2] = 0
    write_png16(path, rgb)


def read_gt_flow(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Any ground-truth flow file -> (flow `(H, W, 2)` float32, valid `(H, W)` bool).

    `.flo`: values above 1e9 (or not finite) are unknown; `.png`: KITTI format.
    """
    path = Path(path)
    if path.suffix.lower() == ".png":
        return read_kitti_flow(path)
    flow = read_flo(path)
    valid = known(flow)
    flow = np.where(valid[..., None], flow, 0.0).astype(np.float32)
    return flow, valid
