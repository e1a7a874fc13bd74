"""Video decoding with PyAV: streaming frames, never the whole file in memory.

Frames are decoded with FFmpeg's threads, resized on the way out of the decoder and
turned upright (rotation metadata, see below). Only regular files are opened: a FIFO,
device or socket with a video name fails at once instead of blocking the reader.

Completeness (`iter_frames(..., check=True)`). A decoder can stop early without raising
(PyAV with `thread_type="AUTO"`, an AVI or MKV cut short), so the end of a video is
checked against evidence that the muxer wrote when it *finished* the file, never against
a frame count guessed from fps x duration (wrong for variable frame rate):

- decode errors (FFmpeg raises) -> corrupt;
- the header's frame count (MP4/MOV sample tables, AVI `dwTotalFrames`): decoded count
  may fall short by max(2, 1%) (edit lists, dropped leading B-frames). A count the file
  cannot hold (more than one frame per 8 bytes, e.g. the 2^30 placeholder of an AVI
  written to a pipe) is no evidence; the durations of that file are then ignored too
  (FFmpeg derives them from the same header or from the bit rate);
- time: the end of the last decoded frame (pts + duration, decoded timestamps, so VFR
  is exact) against the video stream's duration (MP4/AVI header, Matroska DURATION
  tag), else the container's (Matroska Duration, FFmpeg's estimate for MPEG-TS/PS);
  it may fall short by max(3 mean frame intervals, 5%);
- structure, before decoding: a Matroska/WebM file must hold every EBML element it
  starts (a finished file declares its segment size; a live or unfinished one without
  Duration is walked element by element, a cut leaves the last one incomplete); an
  MPEG-TS file must be a whole number of 188/192/204-byte packets.

A cut at a packet/element boundary of a file without header count or duration (live MKV,
MPEG-TS) leaves a valid, shorter video: nothing in the file tells it apart.

Rotation: phones store frames landscape with a display matrix (or, in older files, a
`rotate` tag in degrees clockwise). With `autorotate=True` (the default, as in the
`ffmpeg` tool) frames are rotated by the matrix's counter-clockwise angle (90/180/270)
so they come out as a player shows them, and `probe` reports that (display) size;
`autorotate=False` keeps the stored orientation. Flips in the matrix are ignored.
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
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
MIN_BYTES_PER_FRAME = 8  # no container stores a frame in fewer (AVI chunk header, MKV block header)


def is_video_name(path: str | Path) -> bool:
    """True when the file name has a video extension (used when searching folders)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (not what decodes)."""

    path: str
    width: int  # as decoded frames come out: after rotation when autorotating
    height: int
    fps: float  # 0.0 when unknown
    header_frames: int  # frame count in the header; 0 when the container has none (or a nonsense one)
    duration_s: float  # promised duration of the video; 0.0 when unknown
    codec: str
    rotation: int = 0  # display rotation applied, degrees counter-clockwise (0/90/180/270); 0 without autorotate


def output_size(width: int, height: int, out_width: int | None = None,
                out_height: int | None = None, short_side: int | None = None,
                notice: bool = True) -> tuple[int, int]:
    """Decoded (height, width) for a source of `width` x `height`.

    `out_width`/`out_height` fix a side (one alone keeps the aspect ratio); `short_side`
    scales the shorter side to that length, keeping the aspect ratio, but never up: a
    source whose shorter side is already shorter keeps its size (upscaling adds no motion
    detail, only cost), said once per source size on stderr when `notice`. Sizes are >= 2.
    """
    if short_side is not None and (out_width is not None or out_height is not None):
        raise TVNetError("give either --short-side or --width/--height, not both")
    if short_side is not None:
        if short_side > min(width, height):
            if notice:
                _say_once(f"note: {width}x{height} video is smaller than --short-side {short_side}: "
                          f"kept at {width}x{height} (no upscaling; --width/--height resize exactly)")
            return height, width
        s = short_side / min(width, height)
        return max(2, round(height * s)), max(2, round(width * s))
    if out_width is not None and out_height is not None:
        return out_height, out_width
    if out_width is not None:
        return max(2, round(height * out_width / width)), out_width
    if out_height is not None:
        return out_height, max(2, round(width * out_height / height))
    return height, width


_SAID: set[str] = set()


def _say_once(text: str) -> None:
    """One line on stderr, once per process per text (a dataset of small videos says it once)."""
    if text not in _SAID:
        _SAID.add(text)
        sys.stderr.write(text + "\n")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _open(path: Path):
    """Open a regular file with PyAV. Anything else (FIFO, device, socket, folder) is refused
    before it is opened: opening a FIFO blocks until a writer comes, reading a device may
    never end."""
    import av

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TVNetError(f"{path}: file not found") from None
    except OSError as e:
        raise TVNetError(f"{path}: cannot open ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise TVNetError(f"{path}: not a regular file ({_file_kind(st.st_mode)}); only files are read as videos")
    if st.st_size == 0:
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


def _tag_seconds(text: str | None) -> float:
    """Matroska DURATION tag "HH:MM:SS.nnnnnnnnn" -> seconds (0.0 when absent or odd)."""
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d*)?)", (text or "").strip())
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else 0.0


def _stream_duration(container) -> float:
    """Promised duration (s) of the first video stream: its own, else the container's."""
    s = container.streams.video[0]
    if s.duration is not None and s.time_base is not None and s.duration > 0:
        return float(s.duration * s.time_base)
    tag = _tag_seconds(s.metadata.get("DURATION"))
    if tag > 0:
        return tag
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    return 0.0


def _tag_rotation(stream) -> int:
    """Old-style `rotate` tag (degrees clockwise) -> counter-clockwise degrees; 0 if none."""
    for key in ("rotate", "ROTATE"):
        try:
            return -int(float(stream.metadata[key]))
        except (KeyError, ValueError):
            pass
    return 0


def _quarter_turns(rotation: float) -> int:
    """Counter-clockwise degrees -> quarter turns 0..3 (odd angles round to the nearest)."""
    return int(round(rotation / 90.0)) % 4


def _info(path: Path, container, rotation: int = 0, autorotate: bool = True) -> VideoInfo:
    s = container.streams.video[0]
    fps = float(s.average_rate or s.guessed_rate or 0.0)
    header_frames, duration = int(s.frames or 0), _stream_duration(container)
    if header_frames * MIN_BYTES_PER_FRAME > os.stat(path).st_size:  # placeholder, not a count
        header_frames, duration = 0, 0.0
    cc = s.codec_context
    w, h = int(cc.width or 0), int(cc.height or 0)
    if autorotate and _quarter_turns(rotation) % 2:
        w, h = h, w
    return VideoInfo(str(path), w, h, fps, header_frames, duration,
                     cc.name if cc is not None else "?", _quarter_turns(rotation) * 90)


def probe(path: str | Path, autorotate: bool = True) -> VideoInfo:
    """Open `path` and read its header. Raises `TVNetError` if it is no video.

    With `autorotate` the first frame is decoded to read its display matrix (PyAV shows
    stream side data only on frames), so width/height are those of upright frames.
    """
    import av

    path = Path(path)
    container = _open(path)
    with container:
        rotation = 0
        if autorotate:
            try:
                rotation = _frame_rotation(next(container.decode(container.streams.video[0]), None),
                                           container.streams.video[0])
            except (av.error.FFmpegError, ValueError, MemoryError):
                pass  # iter_frames reports decode problems with their frame number
        info = _info(path, container, rotation, autorotate)
    if info.width <= 0 or info.height <= 0:
        raise TVNetError(f"{path}: video stream has no frame size (unreadable codec?)")
    return info


def _frame_rotation(frame, stream) -> int:
    """Counter-clockwise display rotation of `frame` (its display matrix), else the stream's tag."""
    rot = getattr(frame, "rotation", 0) if frame is not None else 0
    return int(rot) if rot else _tag_rotation(stream)


def check_frame_count(info: VideoInfo, decoded: int) -> None:
    """Raise `TVNetError` when `decoded` falls clearly short of the header's frame count
    (slack max(2, 1%)); no header count -> no check."""
    expected = info.header_frames
    if expected > 0 and decoded < expected - max(2, math.ceil(0.01 * expected)):
        raise TVNetError(f"{info.path}: truncated or corrupt video (decoded {decoded} of "
                         f"{expected} frames the header promises)")


def check_end_time(info: VideoInfo, decoded: int, end_s: float | None) -> None:
    """Raise `TVNetError` when the decoded frames end clearly before the promised duration.

    `end_s`: end of the last decoded frame (pts + duration) from the stream start, from
    decoded timestamps (None when frames had none; <= 0 when they wrapped, as MPEG-TS
    timestamps do after 26.5 h: no verdict). Slack max(3 mean frame intervals, 5%).
    """
    if end_s is None or end_s <= 0 or info.duration_s <= 0 or decoded <= 0:
        return
    slack = max(3 * end_s / decoded, 0.05 * info.duration_s)
    if end_s < info.duration_s - slack:
        raise TVNetError(f"{info.path}: truncated or corrupt video (decoded {decoded} frames "
                         f"ending at {end_s:.2f} s of the {info.duration_s:.2f} s the container promises)")


# -- container structure (before decoding) ------------------------------------------------
def _ebml_vint(data: bytes, at: int, keep_marker: bool) -> tuple[int, int] | None:
    """EBML variable-length integer at `data[at:]` -> (value, length in bytes); length 0
    when `data` ends inside it; None when it is no valid integer."""
    if at >= len(data):
        return 0, 0
    if data[at] == 0:
        return None
    n = 9 - data[at].bit_length()
    if at + n > len(data):
        return 0, 0
    v = int.from_bytes(data[at:at + n], "big")
    return (v if keep_marker else v & ((1 << (7 * n)) - 1)), n


def _matroska_cut(path: Path, size: int) -> str:
    """Why a Matroska/WebM file is cut short ("" when every element it starts is whole).

    Elements of known size are skipped whole; unknown-size ones (a live Segment or Cluster)
    are entered, so a live file is walked block by block. Bytes that are no EBML end the
    walk without a verdict (FFmpeg resyncs over junk)."""
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(12)
            eid = _ebml_vint(head, 0, True)
            length = _ebml_vint(head, eid[1], False) if eid is not None and eid[1] else eid
            if eid is None or length is None:
                return ""
            if not length[1]:
                return f"file ends inside a Matroska element header at byte {pos} of {size}"
            start = pos + eid[1] + length[1]
            if length[0] == (1 << (7 * length[1])) - 1:
                pos = start  # unknown size: walk its children
                continue
            if start + length[0] > size:
                return (f"file ends inside a Matroska element: {start + length[0]} bytes "
                        f"needed, {size} present")
            pos = start + length[0]
    return ""


def _ts_cut(path: Path, size: int) -> str:
    """Why an MPEG-TS file is cut short: not a whole number of its 188/192/204-byte packets."""
    with open(path, "rb") as f:
        head = f.read(4 + 2 * 204 + 1)
    for psize, off in ((188, 0), (192, 4), (204, 0)):
        if len(head) > off + psize and head[off] == head[off + psize] == 0x47:
            if size % psize:
                return f"file ends inside a {psize}-byte transport packet ({size} bytes)"
            return ""
    return ""


def check_structure(path: str | Path, format_name: str) -> None:
    """Raise `TVNetError` when the container structure shows a cut (see the module doc)."""
    path = Path(path)
    size = os.stat(path).st_size
    names = set(format_name.split(","))
    why = ""
    if names & {"matroska", "webm"}:
        why = _matroska_cut(path, size)
    elif "mpegts" in names:
        why = _ts_cut(path, size)
    if why:
        raise TVNetError(f"{path}: truncated video ({why})")


def _upright(frame, turns: int, size: tuple[int, int] | None) -> np.ndarray:
    """Decoded frame -> RGB `(H, W, 3)` uint8, resized to `size` (upright height, width)
    and turned `turns` quarter turns counter-clockwise."""
    if size is not None:
        h, w = (size[1], size[0]) if turns % 2 else size  # size before the turn
        if (frame.height, frame.width) != (h, w):
            frame = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
    rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def iter_frames(path: str | Path, size: tuple[int, int] | None = None, *,
                threads: int = 0, check: bool = True, autorotate: bool = True,
                info_out: list | None = None) -> Iterator[np.ndarray]:
    """Yield RGB frames `(H, W, 3)` uint8; `size` = (height, width) resizes on decode.

    `threads`: FFmpeg decoder threads (0 = FFmpeg's choice). `check`: check the container
    structure before decoding and, after the last frame, the count and end time against
    the header (see the module doc); raise `TVNetError` when the video is cut short.
    `autorotate`: turn frames upright by their rotation metadata (`size` is then the
    upright size). Decode errors raise `TVNetError` naming the file. If `info_out` is a
    list, the `VideoInfo` is appended to it before the first frame.
    """
    import av

    path = Path(path)
    container = _open(path)
    with container:
        stream = container.streams.video[0]
        if check:
            check_structure(path, container.format.name)
        stream.thread_type = "AUTO"  # frame + slice threads; early stops are caught below
        stream.thread_count = threads
        n, turns, info = 0, 0, None
        end = None  # end of the latest frame, in stream time_base units
        tb = stream.time_base
        try:
            for frame in container.decode(stream):
                if info is None:
                    rotation = _frame_rotation(frame, stream) if autorotate else 0
                    turns = _quarter_turns(rotation)
                    info = _info(path, container, rotation, autorotate)
                    if info_out is not None:
                        info_out.append(info)
                if frame.pts is not None:  # frame.duration is 0 when unknown
                    end = max(end if end is not None else frame.pts, frame.pts + (frame.duration or 0))
                yield _upright(frame, turns, size)
                n += 1
        except av.error.FFmpegError as e:
            raise TVNetError(f"{path}: corrupt video, decode error after {n} frames "
                             f"({_reason(e)})") from None
        except (ValueError, MemoryError) as e:  # unreadable codec parameters
            raise TVNetError(f"{path}: cannot decode ({e})") from None
        start = stream.start_time or 0
    if n == 0 or info is None:
        raise TVNetError(f"{path}: no frames decoded (unreadable codec or empty stream)")
    if check:
        check_frame_count(info, n)
        end_s = float((end - start) * tb) if end is not None and tb is not None else None
        check_end_time(info, n, end_s)


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
