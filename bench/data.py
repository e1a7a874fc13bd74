"""Where the benchmarks find their data: ../shared/data beside the checkout, or
$TVNET_SHARED_DATA (e.g. a copy carried to a GPU machine, where ../shared does not travel).

Video benchmarks fall back to the shipped examples/test.avi where the shared data is absent
(a freshly lent GPU machine has only the repository), and decode with OpenCV where PyAV is
not installed (the GPU image has opencv-python-headless but no PyAV).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TVNET_SHARED_DATA") or ROOT.parent / "shared" / "data")
SHARED_VIDEO = DATA / "videos" / "test.mp4"  # 300 frames, 340x256 H.264 (mmaction2's test clip)
EXAMPLE_VIDEO = ROOT / "examples" / "test.avi"  # 164 frames, 320x240 MPEG-4, in the repository
VIDEO = SHARED_VIDEO if SHARED_VIDEO.is_file() else EXAMPLE_VIDEO


def read_frames(video: Path, n: int, size: tuple[int, int]) -> np.ndarray:
    """The first `n` frames of `video` (fewer if it is shorter) as (T, H, W, 3) uint8 RGB,
    resized to `size` = (H, W) with area averaging: PyAV where installed, else OpenCV."""
    try:
        import av  # noqa: F401
    except ImportError:
        return _read_frames_cv2(video, n, size)
    from tvnet_cli.io.video import read_frames as read_av

    return read_av(video, size=size, max_frames=n)


def _read_frames_cv2(video: Path, n: int, size: tuple[int, int]) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        if bgr.shape[:2] != tuple(size):
            bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"{video}: no frames decoded (OpenCV)")
    return np.stack(frames)


def frame_pairs(video: Path, n: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`n` pairs of consecutive frames as two (n, H, W, 3) uint8 arrays (frame t, frame t+1);
    a video with fewer than n + 1 frames is cycled through again (real content, not noise)."""
    frames = read_frames(video, n + 1, size)
    if len(frames) < 2:
        raise SystemExit(f"{video}: at least two frames needed, found {len(frames)}")
    idx = np.arange(n) % (len(frames) - 1)
    return frames[idx], frames[idx + 1]
