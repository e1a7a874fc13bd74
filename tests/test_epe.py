"""`tvnet epe` on every layout: its numbers equal EPE computed here with numpy from the flow
it saved and the ground truth. Fixtures are generated pairs with exact flow (tests/synthetic.py),
laid out as each dataset is distributed; one test checks the real Grove3 number."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthetic import Motion, flow_pair, write_middlebury
from tvnet_cli.cli import main
from tvnet_cli.io.flowio import write_flo, write_kitti_flow

SIZE = (128, 160)  # small enough to be quick
MOTIONS = {"a": Motion(dx=1.5, dy=-0.5, degrees=2.0), "b": Motion(dx=-2.0, dy=1.0, zoom=1.03)}


def np_read_flo(path: Path) -> np.ndarray:
    """Independent .flo reader: (H, W, 2)."""
    raw = np.fromfile(path, np.float32)
    w, h = raw[1:3].view(np.int32)
    return raw[3:].reshape(h, w, 2)


def np_epe(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    return float(np.sqrt(((flow - gt) ** 2).sum(-1))[valid].mean())


def pair(which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generated frames (H, W, 3) uint8 x 2 and their exact flow (H, W, 2)."""
    return flow_pair(*SIZE, MOTIONS[which], seed=ord(which))


def run_epe(root: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "res.json"
    res = CliRunner().invoke(main, ["epe", str(root), "--save-flow", str(tmp_path / "pred"),
                                    "--json", str(out), *extra])
    assert res.exit_code == 0, res.output
    assert "mean" in res.output
    return json.loads(out.read_text())


def check(res: dict, tmp_path: Path, gts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Tool's per-pair EPE and valid count == numpy on the saved flow; mean == mean of rows."""
    assert [r["name"] for r in res["rows"]] == list(gts)
    for row in res["rows"]:
        gt, valid = gts[row["name"]]
        flow = np_read_flo(tmp_path / "pred" / f"{row['name']}.flo")
        assert row["valid"] == int(valid.sum())
        assert row["epe"] == pytest.approx(np_epe(flow, gt, valid), rel=1e-5)
        assert 0 < row["epe"] < 20
    assert res["mean"]["epe"] == pytest.approx(np.mean([r["epe"] for r in res["rows"]]))


def test_middlebury_flat_layout(tmp_path: Path) -> None:
    """The flat Middlebury layout: a sequence without ground truth is skipped and named."""
    root = tmp_path / "mb"
    write_middlebury(root, "Grove3", SIZE, MOTIONS["a"])
    write_middlebury(root, "Venus", SIZE, gt=False)
    res = run_epe(root, tmp_path)
    assert res["layout"] == "middlebury" and res["skipped"] == ["Venus"]
    gt = np_read_flo(root / "Grove3/flow10.flo")
    check(res, tmp_path, {"Grove3": (gt, np.ones(gt.shape[:2], bool))})


def test_middlebury_real_grove3(data_dir: Path, tmp_path: Path) -> None:
    """The number BENCHMARKS.md reports: untrained TVNet-50 on the real Grove3 (optional data)."""
    root = tmp_path / "mb"
    shutil.copytree(data_dir / "middlebury/Grove3", root / "Grove3")
    res = run_epe(root, tmp_path)
    gt = np_read_flo(data_dir / "middlebury/Grove3/flow10.flo")
    check(res, tmp_path, {"Grove3": (gt, np.ones(gt.shape[:2], bool))})
    assert 3.0 < res["rows"][0]["epe"] < 3.7


def test_middlebury_distributed_layout_with_unknown(tmp_path: Path) -> None:
    f0, f1, gt = pair("a")
    root = tmp_path / "middlebury"
    (root / "other-data/Grove3").mkdir(parents=True)
    (root / "other-gt-flow/Grove3").mkdir(parents=True)
    Image.fromarray(f0).save(root / "other-data/Grove3/frame10.png")
    Image.fromarray(f1).save(root / "other-data/Grove3/frame11.png")
    gt_file = gt.copy()
    gt_file[:20, :30] = 1.6e9  # unknown ground truth
    write_flo(root / "other-gt-flow/Grove3/flow10.flo", gt_file)
    res = run_epe(root, tmp_path)
    valid = np.ones(gt.shape[:2], bool)
    valid[:20, :30] = False
    check(res, tmp_path, {"Grove3": (gt, valid)})


def test_sintel_layout(tmp_path: Path) -> None:
    f0, f1, gt = pair("b")
    g0, g1, ggt = pair("a")
    base = tmp_path / "MPI-Sintel/training"
    for pass_ in ("clean", "final"):
        for scene, frames in (("alley_1", (f0, f1)), ("grove_3", (g0, g1, g0))):
            d = base / pass_ / scene
            d.mkdir(parents=True)
            for i, fr in enumerate(frames):
                Image.fromarray(fr if pass_ == "clean" else fr // 2).save(d / f"frame_{i + 1:04d}.png")
    (base / "flow/alley_1").mkdir(parents=True)
    (base / "flow/grove_3").mkdir(parents=True)
    write_flo(base / "flow/alley_1/frame_0001.flo", gt)
    write_flo(base / "flow/grove_3/frame_0001.flo", ggt)  # frame_0002 -> 0003 has no flow file
    res = run_epe(tmp_path / "MPI-Sintel", tmp_path, "--pass", "final")
    assert res["layout"] == "sintel" and res["skipped"] == ["grove_3/frame_0002"]
    ones = np.ones(gt.shape[:2], bool)
    check(res, tmp_path, {"alley_1/frame_0001": (gt, ones), "grove_3/frame_0001": (ggt, ones)})


@pytest.mark.parametrize("images, gt_dir", [("image_2", "flow_occ"), ("colored_0", "flow_noc")])
def test_kitti_layout_masks_invalid(tmp_path: Path, images: str, gt_dir: str) -> None:
    f0, f1, gt = pair("b")
    base = tmp_path / "kitti/training"
    (base / images).mkdir(parents=True)
    (base / gt_dir).mkdir(parents=True)
    Image.fromarray(f0).save(base / images / "000007_10.png")
    Image.fromarray(f1).save(base / images / "000007_11.png")
    valid = np.random.default_rng(3).random(gt.shape[:2]) > 0.4
    write_kitti_flow(base / gt_dir / "000007_10.png", gt, valid)
    extra = ["--kitti-gt", gt_dir] if gt_dir != "flow_occ" else []
    res = run_epe(tmp_path / "kitti", tmp_path, *extra)
    assert res["layout"] == "kitti"
    # ground truth as KITTI stores it (1/64 px steps), read here with OpenCV
    raw = cv2.imread(str(base / gt_dir / "000007_10.png"), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.float64)
    gt64 = (raw[..., :2] - 2**15) / 64
    check(res, tmp_path, {"000007": (gt64, raw[..., 2] > 0)})
    flow = np_read_flo(tmp_path / "pred/000007.flo")
    err = np.sqrt(((flow - gt64) ** 2).sum(-1))[valid]
    mag = np.sqrt((gt64 ** 2).sum(-1))[valid]
    row = res["rows"][0]
    assert row["out3"] == pytest.approx((err > 3).mean())
    assert row["fl"] == pytest.approx(((err > 3) & (err > 0.05 * mag)).mean())


def test_chairs_layout_and_opencv_compare(tmp_path: Path) -> None:
    f0, f1, gt = pair("b")
    root = tmp_path / "FlyingChairs_release/data"
    root.mkdir(parents=True)
    Image.fromarray(f0).save(root / "00001_img1.ppm")
    Image.fromarray(f1).save(root / "00001_img2.ppm")
    write_flo(root / "00001_flow.flo", gt)
    res = run_epe(root, tmp_path, "--compare", "opencv", "--preset", "tvnet-3-1-10")
    assert res["layout"] == "chairs"
    check(res, tmp_path, {"00001": (gt, np.ones(gt.shape[:2], bool))})
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=0.25, lambda_=0.15, theta=0.3, nscales=3, warps=1, epsilon=0.0, innnerIterations=10,
        outerIterations=1, scaleStep=0.5, gamma=0.0, medianFiltering=1)
    cv_flow = tvl1.calc(cv2.cvtColor(f0, cv2.COLOR_RGB2GRAY), cv2.cvtColor(f1, cv2.COLOR_RGB2GRAY), None)
    ocv = res["opencv_rows"][0]
    assert ocv["epe"] == pytest.approx(np_epe(cv_flow, gt, np.ones(gt.shape[:2], bool)), rel=1e-5)
    # same settings -> the two TV-L1 implementations agree closely: within a quarter pixel of each
    # other on average, where the motion is about 2.5 px
    ours = np_read_flo(tmp_path / "pred/00001.flo")
    assert np_epe(ours, cv_flow, np.ones(gt.shape[:2], bool)) < 0.25
    assert abs(ocv["epe"] - res["rows"][0]["epe"]) < 0.1 and ocv["epe"] < 0.5


def test_evaluate_dataset_restores_thread_count(tmp_path: Path) -> None:
    """`evaluate_dataset` runs with `threads` and leaves torch's setting as it found it."""
    import torch

    from tvnet_cli.evaluate import EpeConfig, evaluate_dataset

    f0, f1, gt = pair("b")
    root = tmp_path / "chairs"
    root.mkdir()
    Image.fromarray(f0[::4, ::4]).save(root / "00001_img1.ppm")
    Image.fromarray(f1[::4, ::4]).save(root / "00001_img2.ppm")
    write_flo(root / "00001_flow.flo", gt[::4, ::4] / 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        res = evaluate_dataset(EpeConfig(data=str(root), threads=1))
        assert torch.get_num_threads() == 3 and res["rows"][0]["valid"] == 32 * 40
    finally:
        torch.set_num_threads(before)


# -- clear errors ----------------------------------------------------------------------------
def run_fail(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    return res.output


def test_errors(tmp_path: Path) -> None:
    assert "not found" in run_fail("epe", str(tmp_path / "missing"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/readme.txt").write_text("hello")
    assert "unknown dataset layout" in run_fail("epe", str(tmp_path / "junk"))
    seq = write_middlebury(tmp_path / "ok", "Grove3", SIZE, MOTIONS["a"])
    assert "does not look like a kitti" in run_fail("epe", str(seq), "--layout", "kitti")

    f0, f1, gt = pair("a")
    seq = tmp_path / "mb/Grove3"
    seq.mkdir(parents=True)
    Image.fromarray(f0).save(seq / "frame10.png")
    Image.fromarray(f1[:-8]).save(seq / "frame11.png")  # mismatched size
    write_flo(seq / "flow10.flo", gt)
    assert "frame11.png" in run_fail("epe", str(tmp_path / "mb")) and "differs" in run_fail("epe", str(tmp_path / "mb"))

    Image.fromarray(f1).save(seq / "frame11.png")
    write_flo(seq / "flow10.flo", gt[:-8])  # ground truth of another size
    assert "flow10.flo" in run_fail("epe", str(tmp_path / "mb"))

    (seq / "flow10.flo").write_bytes(b"PIEH" + b"\0" * 10)  # corrupt .flo
    assert "flow10.flo" in run_fail("epe", str(tmp_path / "mb"))

    (seq / "frame11.png").unlink()  # missing frame
    assert "frame11.png" in run_fail("epe", str(tmp_path / "mb"))
    assert "weights file not found" in run_fail("epe", str(tmp_path / "mb"), "--weights", str(tmp_path / "w.pt"))


@pytest.mark.parametrize("command", ["epe", "train", "viz"])
def test_help(command: str) -> None:
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0 and "Usage:" in res.output


def test_opencv_compare_refuses_a_per_level_schedule(tmp_path: Path) -> None:
    """OpenCV's DualTVL1 has one warps/iterations for all levels: comparing it with a per-level
    schedule (tvl1-fast) would compare different solvers, so it is a one-line error."""
    f0, f1, gt = pair("b")
    root = tmp_path / "chairs"
    root.mkdir()
    Image.fromarray(f0).save(root / "00001_img1.ppm")
    Image.fromarray(f1).save(root / "00001_img2.ppm")
    write_flo(root / "00001_flow.flo", gt)
    res = CliRunner().invoke(main, ["epe", str(root), "--compare", "opencv", "--preset", "tvl1-fast"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert "per-level schedule" in res.output and "tvnet-5-1.1.2.3.5-10.20.30.50.50" in res.output
