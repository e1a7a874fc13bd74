"""`tvnet viz`: colour-wheel pictures from .flo, HDF5 and JPEG flow folders, PNG and MP4."""

from __future__ import annotations

from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthetic import PAIRS, Motion, flow_pair
from tvnet_cli.cli import main
from tvnet_cli.errors import TVNetError
from tvnet_cli.io.flowio import read_flo, write_flo
from tvnet_cli.viz import VizConfig, colour_wheel, flow_to_rgb, legend_wheel, render, with_legend


def test_wheel_colours_by_direction() -> None:
    assert colour_wheel().shape == (55, 3)
    dirs = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0], [1e10, 0.0]]])
    rgb = flow_to_rgb(dirs, max_flow=1.0)[0].astype(int)
    # Middlebury convention: left = cyan-ish (blue+green), right = red, down = yellow-green...
    assert rgb[1, 0] < 60 and rgb[1, 2] > 200  # moving left: little red, much blue
    assert rgb[0, 0] > 200  # moving right: red
    assert len({tuple(c) for c in rgb[:4]}) == 4  # four directions, four colours
    assert rgb[4].tolist() == [255, 255, 255]  # no motion = white
    assert rgb[5].tolist() == [0, 0, 0]  # unknown = black


def test_max_flow_fixes_the_scale() -> None:
    flow = np.zeros((1, 2, 2))
    flow[0, 0] = (2.0, 0.0)
    flow[0, 1] = (4.0, 0.0)
    auto = flow_to_rgb(flow).astype(int)
    fixed = flow_to_rgb(flow, max_flow=8.0).astype(int)
    assert (auto[0, 1] == flow_to_rgb(flow, max_flow=4.0)[0, 1]).all()
    # with a larger fixed scale the same motion is paler (closer to white)
    assert fixed[0, 1].sum() > auto[0, 1].sum()
    assert (flow_to_rgb(flow * 2, max_flow=8.0)[0, 0] == fixed[0, 1]).all()  # comparable pictures


def test_legend_rim_is_saturated() -> None:
    wheel = legend_wheel(64)
    assert wheel.shape == (64, 64, 3)
    assert wheel[32, 32].min() > 240 and wheel[0, 0].tolist() == [255, 255, 255]
    assert wheel[32, 1].min() < 60  # rim: a fully saturated colour


def test_flo_to_png_with_legend(tmp_path: Path) -> None:
    write_flo(tmp_path / "f.flo", flow_pair(240, 320, Motion(dx=3.0, dy=-2.0, degrees=6.0, zoom=1.05))[2])
    out = tmp_path / "f.png"
    res = CliRunner().invoke(main, ["viz", str(tmp_path / "f.flo"), "--out", str(out), "--max-flow", "15"])
    assert res.exit_code == 0, res.output
    img = np.array(Image.open(out))
    assert img.shape[0] == 240 and img.shape[1] > 320  # picture + legend panel
    expect = flow_to_rgb(read_flo(tmp_path / "f.flo"), 15.0)
    assert (img[:, :320] == expect).all()


def test_h5_to_mp4(tmp_path: Path) -> None:
    gt = flow_pair(96, 128, PAIRS["00002"])[2]  # (96, 128, 2)
    stack = np.stack([gt * s for s in (0.5, 1.0, 1.5)]).transpose(0, 3, 1, 2)  # (N, 2, H, W)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("flow", data=stack.astype(np.float32))
    out = tmp_path / "v.mp4"
    res = CliRunner().invoke(main, ["viz", str(tmp_path / "v.h5"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape[0] == 96


def test_jpeg_folder_to_pngs(tmp_path: Path) -> None:
    from tvnet_cli.io.quantize import quantize
    import torch

    d = tmp_path / "flows"
    d.mkdir()
    flow = np.zeros((2, 24, 32), np.float32)
    flow[0, :, 16:] = 10.0
    for i in (1, 2):
        q = quantize(torch.from_numpy(flow * i), 20.0).numpy()
        Image.fromarray(q[0]).save(d / f"flow_x_{i:05d}.jpg", quality=100)
        Image.fromarray(q[1]).save(d / f"flow_y_{i:05d}.jpg", quality=100)
    written = render(d, tmp_path / "png")
    assert [p.name for p in written] == ["flow_00001.png", "flow_00002.png"]
    img = np.array(Image.open(written[1]))
    assert img[12, 4].min() > 240  # left half: no motion -> white
    assert img[12, 28, 0] > 200 and img[12, 28, 2] < 200  # right half moves right: reddish


def test_viz_errors(tmp_path: Path) -> None:
    (tmp_path / "flow_x_00001.jpg").write_bytes(b"")
    with pytest.raises(TVNetError, match="flow_y_00001.jpg"):
        render(tmp_path, tmp_path / "out")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("flow", data=np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(TVNetError, match="must be"):
        render(tmp_path / "bad.h5", tmp_path / "out")
    write_flo(tmp_path / "a.flo", np.zeros((4, 4, 2)))
    res = CliRunner().invoke(main, ["viz", str(tmp_path / "nope.flo"), "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "nope.flo" in res.output


def test_video_default_fps_and_out_kinds(tmp_path: Path) -> None:
    """No recorded fps: MP4/GIF at the documented default; other video names are refused."""
    from tvnet_cli.viz import DEFAULT_FPS

    gt = flow_pair(32, 48, PAIRS["00002"])[2]
    stack = np.stack([gt * s for s in (0.5, 1.0, 1.5)]).transpose(0, 3, 1, 2)  # (3, 2, H, W)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("flow", data=stack.astype(np.float32))
    render(tmp_path / "v.h5", tmp_path / "v.gif")
    with Image.open(tmp_path / "v.gif") as im:
        assert im.n_frames == 3 and im.info["duration"] == 1000 / DEFAULT_FPS
    render(tmp_path / "v.h5", tmp_path / "v.mp4", VizConfig(fps=12))  # --fps wins
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == 12
    with pytest.raises(TVNetError, match=r"\.mp4 or \.gif"):
        render(tmp_path / "v.h5", tmp_path / "v.avi")


def test_single_npy_and_legend_scales(tmp_path: Path) -> None:
    flow = flow_pair(64, 80, Motion(dx=2.0, dy=1.0))[2]  # (H, W, 2)
    np.save(tmp_path / "flow_00001.npy", np.moveaxis(flow, -1, 0).astype(np.float32))  # as extract writes
    (written,) = render(tmp_path / "flow_00001.npy", tmp_path / "one.png", VizConfig(max_flow=4.0))
    img = np.array(Image.open(written))
    assert (img[:, :80] == flow_to_rgb(flow, 4.0)).all()

    def text_rows(h: int) -> int:
        """Rows of the legend panel below the wheel that hold dark (text) pixels."""
        pic = with_legend(np.full((h, h, 3), 255, np.uint8), 4.0)[:, h:]
        return int((pic.min(axis=(1, 2)) < 100)[h // 3 + 2:].sum())

    small, large = text_rows(96), text_rows(768)
    assert small >= 5 and large >= 4 * small  # the text grows with the picture
