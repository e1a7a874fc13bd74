"""Video decoding with PyAV: streaming frames, never the whole file in memory.

Frames are decoded with FFmpeg's threads and resized on the way out of the decoder.
Truncation is checked, because a decoder can stop early without raising (PyAV with
`thread_type="AUTO"`, or an AVI cut short): `iter_frames(..., check=True)` compares the
number of frames it decoded with what the container's header (or duration x fps) promises
and raises `TVNetError` when it falls clearly short.
"""

from __future__ import annotations

import math
from fractions import Fraction
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TVNetError

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
    ".3gp", ".ogv", ".ts", ".mts", ".m2ts", ".vob", ".asf", ".mxf",
})


def is_video_name(path: str | Path) -> bool:
    """True when the file name has a video extension (used when searching folders)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (not what decodes)."""

    path: str
    width: int
    height: int
    fps: float  # 0.0 when unknown
    header_frames: int  # frame count in the header; 0 when the container has none
    duration_s: float  # 0.0 when unknown
    codec: str

    @property
    def expected_frames(self) -> tuple[int, str]:
        """(frames the container promises, where that came from: "header"/"duration"/"")."""
        if self.header_frames > 0:
            return self.header_frames, "header"
        if self.duration_s > 0 and self.fps > 0:
            return int(round(self.duration_s * self.fps)), "duration"
        return 0, ""


def output_size(width: int, height: int, out_width: int | None = None,
                out_height: int | None = None, short_side: int | None = None) -> tuple[int, int]:
    """Decoded (height, width) for a source of `width` x `height`.

    `out_width`/`out_height` fix a side (one alone keeps the aspect ratio); `short_side`
    scales the shorter side to that length, keeping the aspect ratio. Sizes are >= 2.
    """
    if short_side is not None and (out_width is not None or out_height is not None):
        raise TVNetError("give either --short-side or --width/--height, not both")
    if short_side is not None:
        s = short_side / min(width, height)
        return max(2, round(height * s)), max(2, round(width * s))
    if out_width is not None and out_height is not None:
        return out_height, out_width
    if out_width is not None:
        return max(2, round(height * out_width / width)), out_width
    if out_height is not None:
        return out_height, max(2, round(width * out_height / height))
    return height, width


def _open(path: Path):
    import av

    if not path.exists():
        raise TVNetError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise TVNetError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise TVNetError(f"{path}: not a readable video ({_reason(e)})") from None
    except OSError as e:
        raise TVNetError(f"{path}: cannot open ({e.strerror or e})") from None
    if not container.streams.video:
        container.close()
        raise TVNetError(f"{path}: no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise TVNetError(f"{path}: unreadable codec (this FFmpeg has no decoder for it)")
    return container


def _reason(e: Exception) -> str:
    """FFmpeg error -> short text without the file name PyAV appends."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).splitlines()[0]


def _info(path: Path, container) -> VideoInfo:
    s = container.streams.video[0]
    fps = float(s.average_rate or s.guessed_rate or 0.0)
    if s.duration is not None and s.time_base is not None:
        duration = float(s.duration * s.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    cc = s.codec_context
    return VideoInfo(str(path), int(cc.width or 0), int(cc.height or 0), fps,
                     int(s.frames or 0), duration, cc.name if cc is not None else "?")


def probe(path: str | Path) -> VideoInfo:
    """Open `path` and read its header (no decoding). Raises `TVNetError` if it is no video."""
    path = Path(path)
    container = _open(path)
    with container:
        info = _info(path, container)
    if info.width <= 0 or info.height <= 0:
        raise TVNetError(f"{path}: video stream has no frame size (unreadable codec?)")
    return info


def check_frame_count(info: VideoInfo, decoded: int) -> None:
    """Raise `TVNetError` when `decoded` falls clearly short of what the container promises.

    A header count allows max(2, 1%) missing frames (edit lists, dropped leading B-frames);
    a duration estimate is rougher and allows max(3, 5%). No promise -> no check.
    """
    expected, source = info.expected_frames
    if not source:
        return
    slack = max(2, math.ceil(0.01 * expected)) if source == "header" else max(3, math.ceil(0.05 * expected))
    if decoded < expected - slack:
        raise TVNetError(f"{info.path}: truncated or corrupt video (decoded {decoded} of "
                         f"{expected} frames the {source} promises)")


def iter_frames(path: str | Path, size: tuple[int, int] | None = None, *,
                threads: int = 0, check: bool = True,
                info_out: list | None = None) -> Iterator[np.ndarray]:
    """Yield RGB frames `(H, W, 3)` uint8; `size` = (height, width) resizes on decode.

    `threads`: FFmpeg decoder threads (0 = FFmpeg's choice). `check`: after the last frame,
    raise `TVNetError` if decoding fell clearly short of the header (see
    `check_frame_count`). Decode errors raise `TVNetError` naming the file. If `info_out`
    is a list, the `VideoInfo` is appended to it before the first frame.
    """
    import av

    path = Path(path)
    container = _open(path)
    with container:
        info = _info(path, container)
        if info_out is not None:
            info_out.append(info)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads; early stops are caught below
        stream.thread_count = threads
        n = 0
        try:
            for frame in container.decode(stream):
                if size is not None and (frame.height, frame.width) != tuple(size):
                    frame = frame.reformat(width=size[1], height=size[0], format="rgb24",
                                           interpolation="AREA")
                yield frame.to_ndarray(format="rgb24")
                n += 1
        except av.error.FFmpegError as e:
            raise TVNetError(f"{path}: corrupt video, decode error after {n} frames "
                             f"({_reason(e)})") from None
        except (ValueError, MemoryError) as e:  # unreadable codec parameters
            raise TVNetError(f"{path}: cannot decode ({e})") from None
    if n == 0:
        raise TVNetError(f"{path}: no frames decoded (unreadable codec or empty stream)")
    if check:
        check_frame_count(info, n)


def read_frames(path: str | Path, size: tuple[int, int] | None = None,
                max_frames: int | None = None) -> np.ndarray:
    """All (or the first `max_frames`) frames as `(T, H, W, 3)` uint8. For short clips only.

    With `max_frames` the truncation check is skipped (the file is not read to its end).
    """
    frames = []
    for f in iter_frames(path, size, check=max_frames is None):
        frames.append(f)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise TVNetError(f"{path}: no frames decoded")
    return np.stack(frames)


def read_frames_at(path: str | Path, indices: Sequence[int],
                   size: tuple[int, int] | None = None) -> np.ndarray | None:
    """The frames at `indices` (any order, repeats allowed) as `(len(indices), H, W, 3)`
    uint8, decoding only up to the largest index and keeping only the frames asked for;
    None when the video ends before that index."""
    want, last, got = set(indices), max(indices), {}
    for n, frame in enumerate(iter_frames(path, size, check=False)):
        if n in want:
            got[n] = frame
        if n >= last:
            break
    if last not in got:
        return None
    return np.stack([got[i] for i in indices])


def write_video(path: str | Path, frames: Iterable[np.ndarray], codec: str = "ffv1",
                fps: int | Fraction = 25,
                options: dict[str, str] | None = None) -> Path:
    """Encode RGB frames `(H, W, 3)` uint8 (any iterable: streamed, not held) with PyAV.

    FFV1 keeps full chroma (yuv444p, lossless); other codecs use yuv420p. Used for toy
    datasets, test clips, benchmarks and `tvnet viz` MP4s.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for f in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height = f.shape[1], f.shape[0]
                stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
                if options:
                    stream.options = dict(options)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise TVNetError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return path
