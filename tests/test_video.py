"""PyAV decoding: frame counts, resizing, truncation and corruption detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import VIDEOS
from tvnet_cli.errors import TVNetError
from tvnet_cli.io.video import (VideoInfo, check_frame_count, is_video_name, iter_frames, output_size,
                                probe, read_frames, write_video)


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


def test_check_frame_count():
    info = VideoInfo("v.mp4", 8, 8, 25.0, 100, 4.0, "h264")
    check_frame_count(info, 100)
    check_frame_count(info, 98)  # header slack: max(2, 1%)
    with pytest.raises(TVNetError, match="v.mp4: truncated or corrupt.*decoded 90 of 100"):
        check_frame_count(info, 90)
    by_duration = VideoInfo("v.webm", 8, 8, 25.0, 0, 4.0, "vp9")  # 100 frames by duration
    check_frame_count(by_duration, 96)  # duration slack: max(3, 5%)
    with pytest.raises(TVNetError, match="duration"):
        check_frame_count(by_duration, 80)
    check_frame_count(VideoInfo("v.raw", 8, 8, 0.0, 0, 0.0, "raw"), 1)  # no promise, no check


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
    """Matroska has no frame count in its header: the duration x fps estimate catches the cut."""
    clip = write_clip(tmp_path / "full.mkv", 50)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert probe(clip).header_frames == 0 and len(read_frames(clip)) == 50
    with pytest.raises(TVNetError, match="cut.mkv: truncated or corrupt video .* the duration promises"):
        read_frames(cut)
