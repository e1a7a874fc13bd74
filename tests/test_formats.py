"""Every output of `tvnet extract` is readable: the format registry (io/formats.py),
`tvnet_cli.read_flow`, `tvnet viz` of each format, OUT/tvnet.json, HDF5 attributes, and no
silent upscaling. One extraction of a 40-frame clip of the shipped examples/test.avi."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import tvnet_cli
from tvnet_cli.cli import main
from tvnet_cli.errors import TVNetError
from tvnet_cli.extract import ExtractConfig, extract
from tvnet_cli.io.formats import FORMATS, REGISTRY, detect
from tvnet_cli.io.video import iter_frames, output_size, write_video

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test.avi"
BOUND = 10.0  # fits this clip (largest speed ~8 px at 128 px): a quantisation step of 0.08 px
FPS = 20  # the clip's frame rate: not viz's default (25), so a video at 20 fps proves it was read


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """OUT of one extract run: Walk/clip/ (jpeg, flo, npy), Walk/clip.h5, tvnet.json."""
    root = tmp_path_factory.mktemp("formats")
    clip = root / "videos" / "Walk" / "clip.mkv"
    write_video(clip, islice(iter_frames(EXAMPLE), 40), "ffv1", FPS)  # 320x240 source
    out = root / "out"
    cfg = ExtractConfig(out=out, formats=FORMATS, preset="tvnet-10", short_side=128, bound=BOUND)
    summary = extract([root / "videos"], cfg)
    assert summary.done == 1 and summary.flows == 39
    return out


def paths(out: Path) -> dict[str, Path]:
    return {"jpeg": out / "Walk" / "clip", "h5": out / "Walk" / "clip.h5",
            "flo": out / "Walk" / "clip", "npy": out / "Walk" / "clip"}


def test_viz_of_every_format_agrees(run: Path, tmp_path: Path) -> None:
    """Must-show 2: `tvnet viz` turns each format into PNGs within 1 grey level on average."""
    pngs = {}
    for fmt, src in paths(run).items():
        res = CliRunner().invoke(main, ["viz", str(src), "--format", fmt, "--out", str(tmp_path / fmt)])
        assert res.exit_code == 0, res.output
        files = sorted((tmp_path / fmt).glob("*.png"))
        assert len(files) == 39
        pngs[fmt] = np.stack([np.asarray(Image.open(f), np.float64) for f in files])
    ref = pngs["npy"]
    assert ref.shape[1] == 128 and ref.shape[2] > 171  # picture + legend panel
    assert ref[:, :, :171].std() > 1  # the pictures show motion, not a blank page
    diff = {fmt: float(np.abs(p - ref).mean()) for fmt, p in pngs.items()}
    assert diff["flo"] == 0.0 and diff["h5"] < 0.05  # float32 and float16 copies of one flow
    print("mean grey-level difference to npy:", diff)
    assert diff["jpeg"] < 1.0, diff  # quantised (step 2 * 10 / 255 px) and JPEG-compressed


def test_read_flow_every_format(run: Path) -> None:
    p = paths(run)
    npy = tvnet_cli.read_flow(p["npy"], fmt="npy")
    assert npy.flow.shape == (39, 2, 128, 171) and npy.flow.dtype == np.float32
    assert npy.names[0] == "flow_00001" and npy.names[-1] == "flow_00039"
    assert (tvnet_cli.read_flow(p["flo"], fmt="flo").flow == npy.flow).all()
    h5 = tvnet_cli.read_flow(p["h5"]).flow
    np.testing.assert_allclose(h5, npy.flow, atol=np.abs(npy.flow).max() * 2**-11)  # float16
    jpeg = tvnet_cli.read_flow(p["jpeg"], fmt="jpeg")
    assert jpeg.info.bound == BOUND  # from tvnet.json, not typed again
    # independently: the JPEG codes against the float flow quantised by hand
    qx = np.asarray(Image.open(p["jpeg"] / "flow_x_00007.jpg"), np.float64)
    hand = np.clip(np.round((npy.flow[6, 0] + BOUND) * 255 / (2 * BOUND)), 0, 255)
    assert np.abs(qx - hand).mean() < 0.5  # JPEG quality 95 moves few codes
    assert np.abs(jpeg.flow[6, 0] - (qx * 2 * BOUND / 255 - BOUND)).max() < 1e-5
    step = 2 * BOUND / 255
    assert np.abs(jpeg.flow - npy.flow).mean() < step  # within the quantisation error
    # one file of a folder: its field alone
    for one, i in ((p["jpeg"] / "flow_x_00005.jpg", 4), (p["npy"] / "flow_00005.npy", 4),
                   (p["flo"] / "flow_00039.flo", 38)):
        single = tvnet_cli.read_flow(one)
        assert single.flow.shape == (1, 2, 128, 171)
        ref = jpeg.flow if one.suffix == ".jpg" else npy.flow
        assert (single.flow[0] == ref[i]).all() and single.info.fps == FPS


def test_bound_and_sizes_recorded(run: Path) -> None:
    rec = json.loads((run / "tvnet.json").read_text())
    assert rec["bound"] == BOUND and rec["model"] == "tvnet-10" and rec["step"] == 1
    v = rec["videos"]["Walk/clip"]
    assert v["fps"] == FPS and v["source_size"] == [240, 320] and v["output_size"] == [128, 171]
    info = tvnet_cli.read_flow(paths(run)["jpeg"], fmt="jpeg").info
    assert (info.fps, info.source_size, info.output_size, info.resized) == (FPS, (240, 320), (128, 171), True)
    # an explicit bound wins over the recorded one: codes scale linearly
    a = tvnet_cli.read_flow(paths(run)["jpeg"] / "flow_x_00003.jpg").flow
    b = tvnet_cli.read_flow(paths(run)["jpeg"] / "flow_x_00003.jpg", bound=20.0).flow
    np.testing.assert_allclose(b, 2 * a, atol=1e-5)
    with h5py.File(paths(run)["h5"]) as f:  # the dataset carries its own description
        attrs = f["flow"].attrs
        assert attrs["class_name"] == "Walk" and attrs["fps"] == FPS and bool(attrs["resized"])
        assert json.loads(attrs["source_size"]) == [240, 320] and json.loads(attrs["output_size"]) == [128, 171]
        assert f["flow"].compression == "lzf" and attrs["compression"] == "lzf"


def test_gif_and_mp4_by_extension_at_source_fps(run: Path, tmp_path: Path) -> None:
    gif, mp4 = tmp_path / "x.gif", tmp_path / "x.mp4"
    for out, src in ((gif, paths(run)["h5"]), (mp4, paths(run)["jpeg"])):
        res = CliRunner().invoke(main, ["viz", str(src), "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert out.is_file()  # a file, not a folder of PNGs
    with Image.open(gif) as im:
        assert im.n_frames == 39 and im.info["duration"] == 1000 / FPS and im.size[1] == 128
    with av.open(str(mp4)) as c:
        s = c.streams.video[0]
        assert float(s.average_rate) == FPS and sum(1 for _ in c.decode(video=0)) == 39


def test_registry_detects_and_counts(run: Path, tmp_path: Path) -> None:
    p = paths(run)
    assert detect(p["h5"]).name == "h5" and detect(p["jpeg"]).name == "npy"  # exact floats first
    assert {f: REGISTRY[f].count(p[f]) for f in FORMATS} == {f: 39 for f in FORMATS}
    (tmp_path / "empty").mkdir()
    with pytest.raises(TVNetError, match="not a flow output"):
        detect(tmp_path / "empty")
    with pytest.raises(TVNetError, match="no flo flow"):
        detect(p["h5"], "flo")


def test_short_side_never_upscales(capsys) -> None:
    assert output_size(176, 144, short_side=256) == (144, 176)  # kept, said once
    assert output_size(176, 144, short_side=256) == (144, 176)
    err = capsys.readouterr().err
    assert err.count("no upscaling") == 1 and "176x144" in err
    assert output_size(176, 144, short_side=72) == (72, 88)  # shrinking still works
    assert output_size(176, 144, out_width=352) == (288, 352)  # an exact size is obeyed
