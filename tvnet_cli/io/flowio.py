"""Flow file formats: Middlebury .flo (read/write)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TVNetError

FLO_MAGIC = 202021.25
UNKNOWN_FLOW = 1e9  # .flo values above this mean "unknown"


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


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write `(H, W, 2)` float flow as a Middlebury .flo file."""
    flow = np.asarray(flow, dtype="<f4")
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise TVNetError(f"{path}: flow must be (H, W, 2), got {flow.shape}")
    h, w = flow.shape[:2]
    with open(path, "wb") as f:
        f.write(np.array([FLO_MAGIC], "<f4").tobytes())
        f.write(np.array([w, h], "<i4").tobytes())
        f.write(flow.tobytes())
