"""Resume: kill `tvnet extract` mid-video, rerun, get exactly what an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from test_extract import write_clip
from test_extract_bad_input import snapshot
from tvnet_cli.extract import ExtractConfig, extract

ARGS = ["--width", "96", "--height", "72", "--iters", "20", "--batch", "4", "--decoders", "1",
        "--threads", "1", "--format", "jpeg,h5"]


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    src = tmp_path / "in"
    write_clip(src / "a.avi", 6, size=(72, 96))  # done before the kill
    write_clip(src / "b.avi", 200, size=(72, 96))  # killed in the middle of this one
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from tvnet_cli.cli import main; main()",
           "extract", str(src), "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if (out / "a").is_dir() and len(list(out.glob(".b.partial-*/flow_x_*"))) >= 8:
                break
            assert proc.poll() is None, "extract ended before it could be interrupted"
            time.sleep(0.05)
        else:
            raise AssertionError("no output appeared in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "b").exists() and not (out / "b.h5").exists()  # killed mid-video
    assert (out / "a").is_dir() and (out / "a.h5").exists()

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 │" in r.stderr  # summary table printed (1 done, 1 skipped)

    ref = tmp_path / "ref"
    cfg = ExtractConfig(out=ref, formats=("jpeg", "h5"), width=96, height=72, iters=20, batch=4,
                        torch_threads=1)
    s = extract([src], cfg)
    assert s.done == 2 and s.flows == 5 + 199
    got, want = snapshot(out), snapshot(ref)
    h5 = [k for k in want if k.endswith(".h5")]
    # HDF5 files embed the source path only; flows are compared below, other bytes exactly
    # (the lock file names its holder)
    skip = [*h5, ".tvnet.lock"]
    assert {k: v for k, v in got.items() if k not in skip} == {k: v for k, v in want.items() if k not in skip}
    import h5py
    import numpy as np

    for k in h5:
        with h5py.File(out / k) as f, h5py.File(ref / k) as g:
            assert np.array_equal(f["flow"][...], g["flow"][...])
            assert dict(f.attrs) == dict(g.attrs)
    assert [p.name for p in out.glob(".*")] == [".tvnet.lock"]  # the killed run's temporaries are gone
