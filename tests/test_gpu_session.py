"""`bash bench/gpu_session.sh --dry-run` passes from a fresh clone of HEAD (issue 11, must-show 4):
only committed files, nothing carried, no ../shared beside it, nothing installed outside it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = {"install.txt", "versions.txt", "cuda_tests.txt", "engine.json", "engine.txt",
         "extract.json", "extract.txt", "summary.txt"}  # what comes back from a device call (<= 8)


def _head() -> str | None:
    if shutil.which("git") is None:
        return None
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.mark.slow
def test_dry_run_from_fresh_clone(tmp_path):
    head = _head()
    if head is None:
        pytest.skip("not a git checkout")
    clone, out = tmp_path / "repo", tmp_path / "out"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", head], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TVNET_SHARED_DATA", "TVNET_BACKEND")}
    env |= {"OUT": str(out), "TMPDIR": str(tmp_path),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}  # this python3
    r = subprocess.run(["bash", "bench/gpu_session.sh", "--dry-run"], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=420)
    log = r.stdout[-6000:] + r.stderr[-2000:]
    assert r.returncode == 0, log

    summary = r.stdout[r.stdout.index("=== summary (dry run)"):]
    status = {line[:22].strip(): line[22:].split()[0] for line in summary.splitlines()[2:-1]}
    for step in ("install", "versions", "CUDA tests", "engine torch", "extract procs=1", "extract procs=2"):
        assert status.get(step) == "pass", log
    assert status.get("engine triton") in ("pass", "skip"), log  # skip: no triton backend in this version
    assert (out / "summary.txt").read_text().strip() == summary.strip()
    assert set(os.listdir(out)) == FILES

    # the package ran from its temporary install, not from the clone's sources, which stay clean
    versions = (out / "versions.txt").read_text()
    assert f"from {tmp_path}/tvnet-gpu-session." in versions and "/site/tvnet_cli" in versions, versions
    dirty = subprocess.run(["git", "-C", str(clone), "status", "--porcelain", "--ignored"],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    assert [x for x in dirty if x and "__pycache__" not in x] == []
    assert not list(tmp_path.glob("tvnet-gpu-session.*"))  # its work folder is removed

    engine = json.loads((out / "engine.json").read_text())["backends"]["torch"]
    rows = engine["rows"].values()
    assert {(x["preset"], x["batch"]) for x in rows} == {(p, b) for p in ("tvnet-10", "tvnet-2-2-5") for b in (1, 2)}
    assert all(x["device"] == "cpu" and x["backend"] == "torch" and x["pairs_per_s"] > 0 for x in rows)
    assert engine["size"] == "64x48" and engine["video"].endswith("examples/test.avi")

    # 2 videos of 24 frames (the dry run's cut of examples/test.avi): 23 flow fields each
    runs = json.loads((out / "extract.json").read_text())["runs"]
    assert [x["run"] for x in runs] == ["extract procs=1", "extract procs=2"]
    for x in runs:
        assert x["flows"] == 2 * 23
        assert x["flows_per_s"] == pytest.approx(x["flows"] / x["seconds"], rel=0.01)
        # first to last flow file lies within the command's wall time
        assert x["steady_flows_per_s"] >= (x["flows"] - 1) / x["seconds"] * 0.99


def _bench_data():
    """bench/data.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "bench" / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_frames_without_pyav_match_pyav():
    """The GPU image has no PyAV: bench/data.py decodes examples/test.avi with OpenCV there,
    and gets the frames PyAV gets (both FFmpeg: equal here; allow colour-conversion rounding)."""
    data = _bench_data()
    with_av = data.read_frames(data.EXAMPLE_VIDEO, 6, (240, 320))
    with_cv2 = data._read_frames_cv2(data.EXAMPLE_VIDEO, 6, (240, 320))
    assert with_av.shape == with_cv2.shape == (6, 240, 320, 3)
    assert np.abs(with_av.astype(np.int16) - with_cv2).mean() < 0.5  # next frame: 1.3


def test_bench_pairs_cycle_a_short_video():
    """256 pairs from a 164-frame video: consecutive frames, starting over after pair 163."""
    data = _bench_data()
    frames = data.read_frames(data.EXAMPLE_VIDEO, 1000, (24, 32))
    assert len(frames) == 164  # examples/README.md
    a, b = data.frame_pairs(data.EXAMPLE_VIDEO, 256, (24, 32))
    assert a.shape == b.shape == (256, 24, 32, 3)
    for i in (0, 100, 162, 163, 200, 255):
        k = i % 163
        np.testing.assert_array_equal(a[i], frames[k])
        np.testing.assert_array_equal(b[i], frames[k + 1])
