"""`tvnet extract` on real videos (shipped in tests/data/videos): layout, counts, JPEG vs HDF5 values, attributes, lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import VIDEOS
from tvnet_cli.cli import main
from tvnet_cli.errors import TVNetError
from tvnet_cli.extract import ExtractConfig, assign_labels, collect_videos, extract, read_classes, shard
from tvnet_cli.io.quantize import dequantize
from tvnet_cli.io.video import write_video


FAST = dict(width=96, height=72, iters=10, torch_threads=1, batch=8)


def write_clip(path: Path, frames: int, size: tuple[int, int] = (48, 64), shift: int = 1) -> Path:
    """A small clip of a smooth random texture moving `shift` px/frame to the left, written with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    h, w = size
    tw = w + shift * frames
    low = rng.integers(0, 256, (max(2, h // 6), max(2, tw // 6), 3), dtype=np.uint8)
    tex = np.asarray(Image.fromarray(low).resize((tw, h), Image.BICUBIC))  # smooth texture
    return write_video(path, (tex[:, shift * t:shift * t + w] for t in range(frames)), "mpeg4")


def names(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def test_real_avi_jpeg_and_h5_same_run(tmp_path):
    """test.avi (164 frames): 163 flow pairs + 164 frames, 1-based; JPEGs decode to the
    HDF5 float flow of the same run within quantisation + JPEG error; h5 attrs/shape."""
    import h5py

    out = tmp_path / "flows"
    cfg = ExtractConfig(out=out, formats=("jpeg", "h5"), h5_dtype="float32", **FAST)
    s = extract([VIDEOS / "test.avi"], cfg)
    assert (s.done, s.failed, s.flows, s.frames) == (1, 0, 163, 164)
    d = out / "test"
    assert names(d, "flow_x_") == [f"flow_x_{i:05d}.jpg" for i in range(1, 164)]
    assert names(d, "flow_y_") == [f"flow_y_{i:05d}.jpg" for i in range(1, 164)]
    assert names(d, "img_") == [f"img_{i:05d}.jpg" for i in range(1, 165)]
    assert not list(out.glob(".*partial*"))

    with h5py.File(out / "test.h5") as f:
        flow = f["flow"][...]
        attrs = dict(f.attrs)
        assert f["flow"].chunks == (1, 2, 72, 96)
    assert flow.shape == (163, 2, 72, 96) and flow.dtype == np.float32
    assert attrs["frames"] == 164 and attrs["flows"] == 163 and attrs["fps"] == 25.0
    assert attrs["source"] == str(VIDEOS / "test.avi") and attrs["model"] == "tvl1-fast"  # the default preset
    assert json.loads(attrs["parameters"])["iters"] == 10 and attrs["dtype"] == "float32"
    assert np.abs(flow).max() > 0.5  # the video moves

    bound, half_bin = 20.0, 20.0 / 255
    for i in (0, 80, 162):
        for c, axis in enumerate("xy"):
            q = np.asarray(Image.open(d / f"flow_{axis}_{i + 1:05d}.jpg"))
            assert q.shape == (72, 96) and q.dtype == np.uint8
            err = np.abs(dequantize(q, bound) - np.clip(flow[i, c], -bound, bound))
            # quantisation (half a bin) + JPEG q95 error of a few codes on sharp edges
            assert err.mean() < half_bin + 2 * (2 * half_bin), err.mean()
            assert np.percentile(err, 99) < half_bin + 8 * (2 * half_bin)
    rgb = np.asarray(Image.open(d / "img_00001.jpg"))
    assert rgb.shape == (72, 96, 3)

    assert (out / "ann_flow.txt").read_text() == "test 163 0\n"
    assert (out / "ann_rgb.txt").read_text() == "test 164 0\n"
    assert (out / "ann_h5.txt").read_text() == "test.h5 163 0\n"
    assert not (out / "failures.txt").exists()


def test_real_mp4_start_index_0_npy_and_h5_uint8(tmp_path):
    """test.mp4 (300 frames) at 64x48: 299 fields, numbered from 0; npy equals dequantised h5."""
    import h5py

    out = tmp_path / "o"
    cfg = ExtractConfig(out=out, formats=("npy", "h5"), h5_dtype="uint8", start_index=0,
                        **{**FAST, "width": 64, "height": 48, "iters": 5, "batch": 16})
    s = extract([VIDEOS / "test.mp4"], cfg)
    assert (s.done, s.flows, s.frames) == (1, 299, 300)
    got = names(out / "test", "flow_")
    assert got[0] == "flow_00000.npy" and got[-1] == "flow_00298.npy" and len(got) == 299
    field = np.load(out / "test" / "flow_00100.npy")
    assert field.shape == (2, 48, 64) and field.dtype == np.float32
    with h5py.File(out / "test.h5") as f:
        q = f["flow"][100]
        assert f["flow"].shape == (299, 2, 48, 64) and f["flow"].dtype == np.uint8
        assert f.attrs["bound"] == 20.0 and f.attrs["frames"] == 300
    assert np.abs(dequantize(q) - np.clip(field, -20, 20)).max() <= 20.0 / 255 + 1e-5


def test_flo_format_and_step(tmp_path):
    from tvnet_cli.io.flowio import read_flo

    clip = write_clip(tmp_path / "in" / "c.avi", 9, size=(64, 96), shift=2)  # 3 pyramid levels >= 16 px
    cfg = ExtractConfig(out=tmp_path / "o", formats=("flo",), step=2, preset="tvnet-3-1-10",
                        torch_threads=1)
    s = extract([clip], cfg)
    assert s.flows == 7  # 9 frames, pairs (t, t+2)
    assert names(tmp_path / "o" / "c", "flow_") == [f"flow_{i:05d}.flo" for i in range(1, 8)]
    f = read_flo(tmp_path / "o" / "c" / "flow_00003.flo")
    assert f.shape == (64, 96, 2)
    # texture moves 2 px/frame to the left: step 2 -> u about -4 in the interior
    assert abs(np.median(f[8:-8, 8:-8, 0]) + 4.0) < 0.5
    assert abs(np.median(f[8:-8, 8:-8, 1])) < 0.5


def test_layout_mirrors_folders_labels_and_lists(tmp_path):
    root = tmp_path / "UCF"
    write_clip(root / "Jump" / "v_Jump_g01_c01.avi", 4)
    write_clip(root / "Run" / "v_Run_g01_c01.avi", 5)
    write_clip(root / "Run" / "v_Run_g02_c01.avi", 3)
    (root / "Run" / "notes.txt").write_text("not a video, ignored in folders")
    out = tmp_path / "flows"
    cfg = ExtractConfig(out=out, batch=4, **{k: v for k, v in FAST.items() if k != "batch"})
    s = extract([root], cfg)
    assert (s.done, s.failed) == (3, 0)
    assert len(names(out / "Run" / "v_Run_g01_c01", "flow_x_")) == 4
    assert (out / "ann_flow.txt").read_text().splitlines() == [
        "Jump/v_Jump_g01_c01 3 0", "Run/v_Run_g01_c01 4 1", "Run/v_Run_g02_c01 2 1"]
    assert (out / "ann_rgb.txt").read_text().splitlines()[1] == "Run/v_Run_g01_c01 5 1"

    classes = tmp_path / "classInd.txt"
    classes.write_text("1 Run\n2 Walk\n3 Jump\n")  # UCF101 style, 1-based
    s2 = extract([f"@{_list(tmp_path, root)}"], cfg.replace(classes=classes))
    assert s2.skipped == 3 and s2.done == 0  # same outputs: resumed, nothing recomputed
    assert (out / "ann_flow.txt").read_text().splitlines() == [
        "Jump/v_Jump_g01_c01 3 2", "Run/v_Run_g01_c01 4 0", "Run/v_Run_g02_c01 2 0"]


def _list(tmp: Path, root: Path) -> Path:
    lst = tmp / "videos.txt"
    lst.write_text("".join(f"{p}\n" for p in sorted(root.rglob("*.avi"))))
    return lst


def test_collect_labels_and_clashes(tmp_path):
    write_clip(tmp_path / "A" / "x.avi", 2)
    write_clip(tmp_path / "A" / "x.mp4", 2)  # same output name as x.avi
    (tmp_path / "A" / ".hidden.avi").write_bytes(b"")
    pairs, failures = collect_videos([tmp_path])
    assert [str(r) for _, r in pairs] == ["A/x"]
    assert len(failures) == 1 and "already used" in failures[0].message
    jobs = assign_labels(pairs, None)
    assert jobs[0].label == 0 and jobs[0].class_name == "A"
    with pytest.raises(TVNetError, match="input not found"):
        collect_videos([tmp_path / "nope"])
    c = tmp_path / "c.txt"
    c.write_text("B\nA\n")
    assert read_classes(c) == {"B": 0, "A": 1}


def test_shard():
    items = list(range(10))
    shards = [shard(items, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shards, [])) == items
    with pytest.raises(TVNetError):
        shard(items, 3, 3)
    # devices and the torchrun environment: tests/test_runtime.py


def test_torchrun_rank_writes_its_shard_and_lists(tmp_path):
    for i in range(3):
        write_clip(tmp_path / "in" / f"v{i}.avi", 3)
    cfg = ExtractConfig(out=tmp_path / "o", rank=1, world_size=2, frames=False, **FAST)
    s = extract([tmp_path / "in"], cfg)
    assert [r.rel for r in s.results] == ["v1"]
    assert (tmp_path / "o" / "ann_flow.rank1.txt").read_text() == "v1 2 0\n"


@pytest.mark.slow
def test_two_cpu_workers_processes(tmp_path):
    """--gpus with two devices spawns one process each; exercised here with two CPU devices."""
    for i in range(4):
        write_clip(tmp_path / "in" / f"v{i}.avi", 3)
    cfg = ExtractConfig(out=tmp_path / "o", devices=("cpu", "cpu"), frames=False, **FAST)
    events = []
    s = extract([tmp_path / "in"], cfg, lambda k, v: events.append((k, v)))
    assert (s.done, s.failed, s.flows) == (4, 0, 8)
    kinds = [k for k, v in events]
    assert kinds.count("video") == 4 and "flows" in kinds  # merged from both workers
    assert sum(v for k, v in events if k == "flows") == 8 == [v for k, v in events if k == "total"][-1]
    assert sorted(v for k, v in events if k == "start") == ["v0", "v1", "v2", "v3"]
    assert len((tmp_path / "o" / "ann_flow.txt").read_text().splitlines()) == 4


def test_overwrite_redoes_and_keeps_layout(tmp_path):
    clip = write_clip(tmp_path / "c.avi", 3)
    cfg = ExtractConfig(out=tmp_path / "o", **FAST)
    extract([clip], cfg)
    marker = tmp_path / "o" / "c" / "stale.txt"
    marker.write_text("x")
    assert extract([clip], cfg).skipped == 1 and marker.exists()  # a note beside finished output
    s = extract([clip], cfg.replace(overwrite=True))  # --overwrite never deletes what tvnet did not write
    assert s.failed == 1 and marker.exists() and "did not write (stale.txt)" in s.results[0].message
    marker.unlink()
    s = extract([clip], cfg.replace(overwrite=True))
    assert s.done == 1
    assert len(names(tmp_path / "o" / "c", "flow_x_")) == 2
    assert [p.name for p in (tmp_path / "o").glob(".*")] == [".tvnet.lock"]  # no temporary left


def test_cli_help_and_run(tmp_path):
    r = CliRunner().invoke(main, ["extract", "--help"])
    assert r.exit_code == 0 and "--short-side" in r.output and "--gpus" in r.output
    clip = write_clip(tmp_path / "c.avi", 3)
    r = CliRunner().invoke(main, ["extract", str(clip), "--out", str(tmp_path / "o"), "--width", "32",
                                  "--height", "24", "--iters", "3", "--threads", "1", "--no-frames",
                                  "--format", "jpeg,h5", "--gpus", ""])
    assert r.exit_code == 0, r.output
    assert "done" in r.output
    assert not names(tmp_path / "o" / "c", "img_") and len(names(tmp_path / "o" / "c", "flow_y_")) == 2
    import h5py

    with h5py.File(tmp_path / "o" / "c.h5") as f:
        assert f["flow"].dtype == np.float16 and f["flow"].shape == (2, 2, 24, 32)


def test_cli_several_processes_per_device(tmp_path):
    for i in range(3):
        write_clip(tmp_path / "in" / f"v{i}.avi", 3)
    args = ["extract", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--width", "32", "--height", "24",
            "--iters", "3", "--no-frames", "--gpus", ""]
    r = CliRunner().invoke(main, args + ["--procs-per-device", "0"])
    assert r.exit_code == 2 and "--procs-per-device must be >= 1" in r.output
    r = CliRunner().invoke(main, args + ["--procs-per-device", "2"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "o" / "ann_flow.txt").read_text().splitlines()) == 3
    assert all(len(names(tmp_path / "o" / f"v{i}", "flow_x_")) == 2 for i in range(3))


def test_short_side_resize_and_progress_events(tmp_path):
    clip = write_clip(tmp_path / "c.avi", 3, size=(48, 64))
    events: list[tuple[str, object]] = []
    cfg = ExtractConfig(out=tmp_path / "o", formats=("npy",), short_side=24, iters=3, torch_threads=1)
    s = extract([clip], cfg, lambda kind, value: events.append((kind, value)))
    assert np.load(tmp_path / "o" / "c" / "flow_00001.npy").shape == (2, 24, 32)
    assert events[0] == ("videos", 1)
    assert [v for k, v in events if k == "total"][-1] == 2 and ("start", "c") in events
    assert sum(v for k, v in events if k == "flows") == 2
    assert [v.status for k, v in events if k == "video"] == ["done"] and s.done == 1
