"""PyAV decoding: frame counts, resizing, truncation and corruption detection."""

from __future__ import annotations

import io
import os
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import VIDEOS
from tvnet_cli.errors import TVNetError
from tvnet_cli.io.video import (VideoInfo, check_end_time, check_frame_count, is_video_name, iter_frames,
                                output_size, probe, read_frames, write_video)


def write_clip(path: Path, frames: int, size: tuple[int, int] = (48, 64), codec: str = "mpeg4") -> Path:
    """A small moving-texture clip `(frames, H, W)` written with PyAV."""
    rng = np.random.default_rng(0)
    h, w = size
    tex = rng.integers(0, 256, (h, w + frames, 3), dtype=np.uint8)
    return write_video(path, (tex[:, t:t + w] for t in range(frames)), codec)


def test_output_size():
    assert output_size(340, 256) == (256, 340)
    assert output_size(340, 256, 96, 72) == (72, 96)
    assert output_size(340, 256, short_side=128) == (128, 170)
    assert output_size(256, 340, short_side=128) == (170, 128)
    assert output_size(320, 240, out_width=160) == (120, 160)
    assert output_size(320, 240, out_height=60) == (60, 80)
    with pytest.raises(TVNetError):
        output_size(320, 240, 100, None, short_side=10)


def test_is_video_name():
    assert is_video_name("a/b.AVI") and is_video_name("x.mp4") and not is_video_name("x.txt")


def test_check_frame_count_and_end_time():
    info = VideoInfo("v.mp4", 8, 8, 25.0, 100, 4.0, "h264")
    check_frame_count(info, 100)
    check_frame_count(info, 98)  # header slack: max(2, 1%)
    with pytest.raises(TVNetError, match="v.mp4: truncated or corrupt.*decoded 90 of 100"):
        check_frame_count(info, 90)
    by_time = VideoInfo("v.webm", 8, 8, 25.0, 0, 4.0, "vp9")  # no header count: time decides
    check_frame_count(by_time, 10)  # a count alone promises nothing without a header count
    check_end_time(by_time, 96, 3.84)  # 4.0 - 3.84 = 0.16 s < slack max(3 * 0.04, 5% of 4 s = 0.2 s)
    check_end_time(by_time, 15, 3.95)  # 15 VFR frames that reach the end: complete
    with pytest.raises(TVNetError, match=r"v.webm: truncated or corrupt.*ending at 3.20 s of the 4.00 s"):
        check_end_time(by_time, 80, 3.2)
    check_end_time(VideoInfo("v.raw", 8, 8, 0.0, 0, 0.0, "raw"), 1, 0.04)  # no promise, no check
    check_end_time(by_time, 5, None)  # no timestamps, no check


def test_real_videos_decode_all_frames():
    assert sum(1 for _ in iter_frames(VIDEOS / "test.avi", (72, 96))) == 164
    info = probe(VIDEOS / "test.mp4")
    assert (info.width, info.height, info.header_frames, info.codec) == (340, 256, 300, "h264")
    frames = read_frames(VIDEOS / "test.mp4", max_frames=3)
    assert frames.shape == (3, 256, 340, 3) and frames.dtype == np.uint8
    small = read_frames(VIDEOS / "test.avi", size=(60, 80), max_frames=2)
    assert small.shape == (2, 60, 80, 3)


def test_generated_clip_roundtrip(tmp_path):
    clip = write_clip(tmp_path / "c.avi", 7)
    frames = read_frames(clip)
    assert frames.shape == (7, 48, 64, 3)


def test_truncated_avi_is_reported(tmp_path):
    data = (VIDEOS / "test.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])  # AVI decoders stop quietly here
    with pytest.raises(TVNetError, match=r"cut.avi: truncated or corrupt video \(decoded \d+ of 164"):
        read_frames(cut)


def test_corrupt_middle_mp4_is_reported(tmp_path):
    data = bytearray((VIDEOS / "test.mp4").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 20000] = np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    bad = tmp_path / "mid.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(TVNetError, match="mid.mp4: (corrupt|truncated)"):
        for _ in iter_frames(bad, (36, 48)):
            pass


def test_not_a_video_and_empty(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello, not a video\n" * 50)
    with pytest.raises(TVNetError, match="empty.mp4: empty file"):
        probe(tmp_path / "empty.mp4")
    with pytest.raises(TVNetError, match="text.mp4: not a readable video"):
        read_frames(tmp_path / "text.mp4")
    with pytest.raises(TVNetError, match="missing.mp4: file not found"):
        probe(tmp_path / "missing.mp4")


def test_unknown_codec_is_reported(tmp_path):
    data = (VIDEOS / "test.avi").read_bytes().replace(b"xvid", b"qqqq").replace(b"XVID", b"QQQQ")
    bad = tmp_path / "codec.avi"
    bad.write_bytes(data)
    with pytest.raises(TVNetError, match="codec.avi: unreadable codec"):
        probe(bad)
    with pytest.raises(TVNetError, match="codec.avi: unreadable codec"):
        next(iter_frames(bad))


def test_truncated_mkv_without_frame_count_is_reported(tmp_path):
    """Matroska has no frame count in its header: the segment size the muxer wrote at the end
    (more bytes than the cut file holds) catches the cut."""
    clip = write_clip(tmp_path / "full.mkv", 50)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert probe(clip).header_frames == 0 and len(read_frames(clip)) == 50
    with pytest.raises(TVNetError, match=r"cut.mkv: truncated video \(file ends inside a Matroska element"):
        read_frames(cut)


# -- odd files, VFR, cuts without header counts, rotation (issue 12: items 5, 6, 7) --------
def encode_clip(target, frames, fmt: str, codec: str = "mpeg4", pts: list[int] | None = None,
            rotation: int | None = None) -> None:
    """Real PyAV encode of RGB frames into `target` (a path or a non-seekable writer)."""
    import av

    with av.open(target, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        if pts is not None:  # irregular timestamps in milliseconds: variable frame rate
            s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)  # display matrix, degrees counter-clockwise
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if pts is not None:
                vf.pts, vf.time_base = pts[i], Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def texture(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    tex = np.random.default_rng(0).integers(0, 256, (h, w + n, 3), dtype=np.uint8)
    return [tex[:, t:t + w] for t in range(n)]


class PipeWriter(io.RawIOBase):
    """A non-seekable output, like a pipe: the muxer cannot go back to fill in its header."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)


def _in_thread(fn, timeout: float = 10.0):
    """fn() in a daemon thread; fails the test instead of hanging when it blocks."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(_catch(fn)), daemon=True)
    t.start()
    t.join(timeout)
    assert out, f"blocked for more than {timeout} s"
    return out[0]


def _catch(fn):
    try:
        return fn()
    except TVNetError as e:
        return e


def test_fifo_and_device_fail_at_once(tmp_path):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)  # no writer: open() would block forever
    dev = tmp_path / "zero.avi"
    dev.symlink_to("/dev/zero")  # reading would never end
    for path, kind in ((fifo, "a FIFO"), (dev, "a character device")):
        for fn in (lambda: probe(path), lambda: next(iter_frames(path))):
            err = _in_thread(fn)
            assert isinstance(err, TVNetError) and str(err) == (
                f"{path}: not a regular file ({kind}); only files are read as videos")


def test_vfr_mkv_is_complete(tmp_path):
    """35 frames with gaps of 20/40/120 ms: 2.1 s, which fps x duration would call 52 frames."""
    gaps = np.random.default_rng(1).choice([20, 40, 120], 34)
    pts = [0, *np.cumsum(gaps).tolist()]
    vfr = tmp_path / "vfr.mkv"
    encode_clip(vfr, texture(35), "matroska", pts=pts)
    info = probe(vfr)
    assert info.header_frames == 0 and info.duration_s == pytest.approx((pts[-1] + 40) / 1000, abs=0.002)
    assert info.duration_s * info.fps > 45  # the old count estimate would reject it
    assert len(read_frames(vfr)) == 35


def test_cut_ts_is_rejected(tmp_path):
    """MPEG-TS has no count or duration in a header; FFmpeg's duration comes from the last
    timestamps of the (cut) file itself, so the 188-byte packet grid is the evidence."""
    full = tmp_path / "full.ts"
    encode_clip(full, texture(100), "mpegts")
    data = full.read_bytes()
    assert len(data) % 188 == 0 and len(read_frames(full)) == 100
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    assert len(cut.read_bytes()) % 188  # a cut at 40 % lands inside a packet here
    with pytest.raises(TVNetError, match=r"cut.ts: truncated video \(file ends inside a 188-byte transport packet"):
        read_frames(cut)


def test_unfinished_mkv_without_duration(tmp_path):
    """Matroska written to a pipe (no Duration, no segment size, like a live recording):
    whole it is accepted, cut at 40 % the walk over its elements finds the cut block."""
    pipe = PipeWriter()
    encode_clip(pipe, texture(100), "matroska")
    live = tmp_path / "live.mkv"
    live.write_bytes(pipe.data)
    assert probe(live).duration_s == 0 and len(read_frames(live)) == 100
    cut = tmp_path / "unfinished.mkv"
    cut.write_bytes(pipe.data[: int(len(pipe.data) * 0.4)])
    assert probe(cut).duration_s == 0  # no duration to compare with
    assert len(read_frames(cut, max_frames=1000)) < 40  # FFmpeg itself stops quietly
    with pytest.raises(TVNetError, match=r"unfinished.mkv: truncated video \(file ends inside a Matroska element"):
        read_frames(cut)


def test_avi_written_to_a_pipe_is_complete(tmp_path):
    """A non-seekable AVI keeps the 2^30 frame-count placeholder in its header."""
    pipe = PipeWriter()
    encode_clip(pipe, texture(40), "avi")
    avi = tmp_path / "pipe.avi"
    avi.write_bytes(pipe.data)
    import av

    with av.open(str(avi)) as c:
        assert c.streams.video[0].frames == 1 << 30  # what the header says
    assert probe(avi).header_frames == 0  # no evidence: a 9 kB file cannot hold 2^30 frames
    assert len(read_frames(avi)) == 40


@pytest.mark.parametrize("ccw, block", [(-90, (slice(0, 16), slice(40, 48))),  # phone: turn clockwise
                                        (90, (slice(48, 64), slice(0, 8))),
                                        (180, (slice(40, 48), slice(48, 64)))])
def test_rotation_applied(tmp_path, ccw, block):
    """A white 8x16 block at the top left of a 48x64 frame, display matrix `ccw` degrees:
    upright frames put it where a player shows it (worked out by hand per angle)."""
    img = np.zeros((48, 64, 3), np.uint8)
    img[:8, :16] = 255
    clip = tmp_path / f"rot{ccw}.mkv"
    encode_clip(clip, [img] * 3, "matroska", codec="ffv1", rotation=ccw)
    info = probe(clip)
    upright = read_frames(clip)
    stored = np.stack(list(iter_frames(clip, autorotate=False)))
    assert np.array_equal(stored[0], img)  # lossless, stored orientation kept on request
    shape = (48, 64) if ccw == 180 else (64, 48)
    assert upright.shape == (3, *shape, 3) and (info.height, info.width) == shape
    kept = probe(clip, autorotate=False)
    assert (kept.height, kept.width, kept.rotation) == (48, 64, 0)
    expect = np.zeros((*shape, 3), np.uint8)
    expect[block] = 255
    assert np.array_equal(upright[0], expect)
    # resizing gives the upright size asked for
    small = read_frames(clip, size=(shape[0] // 2, shape[1] // 2))
    assert small.shape == (3, shape[0] // 2, shape[1] // 2, 3)


def test_rotate_tag_without_display_matrix(tmp_path):
    """Older files carry `rotate` = degrees clockwise as a tag (PyAV writes it into Matroska
    as ROTATE; FFmpeg makes no display matrix of it): read as the same -90 rotation."""
    import av

    img = np.zeros((48, 64, 3), np.uint8)
    img[:8, :16] = 255
    clip = tmp_path / "tag.mkv"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv444p"
        s.metadata["rotate"] = "90"
        for p in [*s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")), *s.encode()]:
            c.mux(p)
    frame = read_frames(clip)[0]
    expect = np.zeros((64, 48, 3), np.uint8)
    expect[:16, 40:] = 255  # turned clockwise: the top-left block goes to the top right
    assert probe(clip).rotation == 270 and np.array_equal(frame, expect)
