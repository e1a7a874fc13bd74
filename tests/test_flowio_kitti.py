"""KITTI 16-bit flow PNGs and .flo edge cases, checked against OpenCV's PNG reader."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from synthetic import Motion, flow_pair
from tvnet_cli.errors import TVNetError
from tvnet_cli.io.flowio import (read_flo, read_gt_flow, read_kitti_flow, read_png16, write_flo,
                                 write_kitti_flow, write_png16)


def test_kitti_png_roundtrip_matches_opencv(tmp_path: Path) -> None:
    gt = flow_pair(96, 128, Motion(dx=-40.3, dy=7.1, degrees=25.0, zoom=1.3))[2]  # (H, W, 2), up to ~70 px
    rng = np.random.default_rng(0)
    valid = rng.random(gt.shape[:2]) > 0.3
    path = tmp_path / "000000_10.png"
    write_kitti_flow(path, gt, valid)

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.float64)  # BGR -> RGB
    assert raw.dtype == np.float64 and raw.shape == gt.shape[:2] + (3,)
    np.testing.assert_array_equal(raw[..., 2] > 0, valid)
    expect = (raw[..., :2] - 2**15) / 64.0

    flow, v = read_kitti_flow(path)
    np.testing.assert_array_equal(v, valid)
    np.testing.assert_allclose(flow[valid], expect[valid])
    assert np.abs(flow[valid] - gt[valid]).max() <= 0.5 / 64 + 1e-6  # 1/64 px quantisation
    assert (flow[~valid] == 0).all()


def test_png16_roundtrip_exact(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 65536, (7, 9, 3), dtype=np.uint16)
    write_png16(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_png16(tmp_path / "a.png"), rgb)


def test_read_flow_masks_unknown_flo(tmp_path: Path) -> None:
    flow = np.ones((4, 5, 2), np.float32)
    flow[1, 2] = 1e10
    write_flo(tmp_path / "u.flo", flow)
    f, valid = read_gt_flow(tmp_path / "u.flo")
    assert valid.sum() == 19 and not valid[1, 2] and f[1, 2].tolist() == [0.0, 0.0]


def test_8bit_png_is_not_kitti_flow(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "grey.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(TVNetError, match="not a 16-bit RGB PNG"):
        read_kitti_flow(tmp_path / "grey.png")


@pytest.mark.parametrize("content", [b"", b"PIEH", b"not a flow file at all", None])
def test_corrupt_flo(tmp_path: Path, content: bytes | None) -> None:
    p = tmp_path / "bad.flo"
    if content is None:  # right magic, truncated data
        content = np.array([202021.25], "<f4").tobytes() + np.array([10, 10], "<i4").tobytes() + b"\0" * 17
    p.write_bytes(content)
    with pytest.raises(TVNetError, match="bad.flo"):
        read_flo(p)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TVNetError, match="nope.flo"):
        read_flo(tmp_path / "nope.flo")
    with pytest.raises(TVNetError, match="nope.png"):
        read_kitti_flow(tmp_path / "nope.png")
    with pytest.raises(TVNetError, match="garbage.png"):
        (tmp_path / "garbage.png").write_bytes(b"\x89PNG garbage")
        read_kitti_flow(tmp_path / "garbage.png")
