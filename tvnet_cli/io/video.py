"""Video decoding with PyAV: streaming frames, never the whole file in memory.

(Minimal first version; `tvnet extract` work extends it with threaded decode and
truncation detection.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import TVNetError


def iter_frames(path: str | Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield RGB frames `(H, W, 3)` uint8; `size` = (height, width) resizes on decode."""
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise TVNetError(f"{path}: cannot open video ({e})") from None
    with container:
        if not container.streams.video:
            raise TVNetError(f"{path}: no video stream")
        try:
            for frame in container.decode(video=0):
                if size is not None:
                    frame = frame.reformat(width=size[1], height=size[0])
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise TVNetError(f"{path}: decode error ({e})") from None


def read_frames(path: str | Path, size: tuple[int, int] | None = None,
                max_frames: int | None = None) -> np.ndarray:
    """All (or the first `max_frames`) frames as `(T, H, W, 3)` uint8. For short clips only."""
    frames = []
    for f in iter_frames(path, size):
        frames.append(f)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise TVNetError(f"{path}: no frames decoded")
    return np.stack(frames)
