"""`tvnet extract` on odd input files and failing writes (issue 12: items 3, 5, 6, 7, 8).

Real files only: a real FIFO, PyAV-written VFR / rotated / cut videos, a real file size
limit (`ulimit -f`, SIGXFSZ ignored as Python does) and a real full tmpfs.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_video import PipeWriter, encode_clip, texture
from tvnet_cli.checkpoint import load_dict, validate_weights
from tvnet_cli.errors import TVNetError
from tvnet_cli.extract import ExtractConfig, extract, write_lists
from tvnet_cli.extract.config import VideoResult
from tvnet_cli.model import TVNet

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(formats=("jpeg",), preset="tvnet-10", torch_threads=1, decoders=2)


def _extract_within(inputs, config: ExtractConfig, timeout: float = 60.0):
    """extract() in a daemon thread: a blocked open fails the test instead of hanging it."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(extract(inputs, config)), daemon=True)
    t.start()
    t.join(timeout)
    assert out, f"extract still running after {timeout} s (blocked?)"
    return out[0]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_fifo_fails_alone(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    encode_clip(src / "a.mp4", texture(6), "mp4")
    os.mkfifo(src / "b.mp4")  # nobody ever writes to it
    encode_clip(src / "c.avi", texture(5), "avi")
    s = _extract_within([src], ExtractConfig(out=out, **FAST))
    assert (s.done, s.failed) == (2, 1)
    assert _lines(out / "failures.txt") == [
        f"{src / 'b.mp4'}\t{src / 'b.mp4'}: not a regular file (a FIFO); only files are read as videos"]
    assert _lines(out / "ann_flow.txt") == ["a 5 0", "c 4 0"]
    assert len(list((out / "a").glob("flow_x_*.jpg"))) == 5 and not (out / "b").exists()


def test_vfr_rotated_and_cut_videos(tmp_path):
    """One run: a VFR mkv and a rotated mp4 complete (upright frames), a cut .ts and an
    unfinished mkv without duration fail as truncated and stay out of the lists."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    gaps = np.random.default_rng(1).choice([20, 40, 120], 11)
    encode_clip(src / "vfr.mkv", texture(12), "matroska", pts=[0, *np.cumsum(gaps).tolist()])
    encode_clip(src / "phone.mp4", texture(4), "mp4", rotation=-90)  # shown turned clockwise
    encode_clip(tmp_path / "full.ts", texture(60), "mpegts")
    data = (tmp_path / "full.ts").read_bytes()
    (src / "cut.ts").write_bytes(data[: int(len(data) * 0.4)])
    pipe = PipeWriter()
    encode_clip(pipe, texture(60), "matroska")
    (src / "unfinished.mkv").write_bytes(pipe.data[: int(len(pipe.data) * 0.4)])

    s = _extract_within([src], ExtractConfig(out=out, **FAST))
    assert (s.done, s.failed) == (2, 2)
    fails = dict(ln.split("\t") for ln in _lines(out / "failures.txt"))
    assert fails[str(src / "cut.ts")] == (f"{src / 'cut.ts'}: truncated video (file ends inside a "
                                          f"188-byte transport packet ({int(len(data) * 0.4)} bytes))")
    assert fails[str(src / "unfinished.mkv")].startswith(
        f"{src / 'unfinished.mkv'}: truncated video (file ends inside a Matroska element")
    assert sorted(ln.split()[0] for ln in _lines(out / "ann_flow.txt")) == ["phone", "vfr"]
    assert len(list((out / "vfr").glob("flow_x_*.jpg"))) == 11
    # stored 64 wide x 48 high; a -90 degree display matrix makes the frames 48 x 64
    assert Image.open(out / "phone" / "img_00001.jpg").size == (48, 64)
    assert Image.open(out / "phone" / "flow_x_00001.jpg").size == (48, 64)
    assert not list(out.rglob(".*partial*"))


# -- full disks ---------------------------------------------------------------------------
def _clips(src: Path) -> None:
    """Two small clips (32x24) and one big one (320x240 noise) that cannot fit."""
    encode_clip(src / "a.avi", texture(8, 24, 32), "avi")
    rng = np.random.default_rng(2)
    encode_clip(src / "m.avi", [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(8)],
                "avi", codec="mpeg4")
    encode_clip(src / "b.avi", texture(6, 24, 32), "avi")  # sorts before the big m.avi


def _cli(args: list[str], fsize: int | None = None) -> subprocess.CompletedProcess:
    """`python -m tvnet_cli extract ...` in a subprocess, optionally under a file size limit
    (SIGXFSZ ignored, as the Python interpreter does: writes fail with EFBIG)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tvnet_cli", "extract", *args, "--preset", "tvnet-10",
                           "--threads", "1"], capture_output=True, text=True, env=env,
                          preexec_fn=limit, timeout=120)


def _check_failed_alone(r: subprocess.CompletedProcess, src: Path, out: Path, cause: str,
                        lists: tuple[str, ...]) -> None:
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    lines = _lines(out / "failures.txt")
    assert len(lines) == 1, lines
    (line,) = lines
    video, msg = line.split("\t")
    assert video == str(src / "m.avi")
    assert msg.startswith(f"{src / 'm.avi'}: cannot write output ({cause}: {out}/"), msg
    assert "\n" not in msg
    for name in lists:
        assert [ln.split()[0] for ln in _lines(out / name)] in (["a", "b"], ["a.h5", "b.h5"])
    assert not (out / "m").exists() and not (out / "m.h5").exists()
    assert not list(out.rglob(".*partial*")) and not list(out.rglob(".*.old"))


@pytest.mark.parametrize("fmt", ["jpeg", "npy", "h5"])
def test_file_size_limit_fails_one_video(tmp_path, fmt):
    """ulimit -f 64 KiB: every file of the big clip is too large (a 320x240 noise JPEG, a
    614 kB .npy field, the growing .h5); the small clips complete, no crash of HDF5."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _clips(src)
    r = _cli([str(src), "--out", str(out), "--format", fmt], fsize=64 * 1024)
    lists = ("ann_h5.txt",) if fmt == "h5" else ("ann_flow.txt",)
    _check_failed_alone(r, src, out, "File too large [EFBIG]", lists)
    if fmt == "h5":
        import h5py

        with h5py.File(out / "a.h5") as f:  # complete: every field and the attributes
            assert f["flow"].shape == (7, 2, 24, 32) and f.attrs["frames"] == 8
    else:
        suffix = {"jpeg": "flow_x_*.jpg", "npy": "flow_*.npy"}[fmt]
        assert len(list((out / "a").glob(suffix))) == 7 and len(list((out / "b").glob(suffix))) == 5


@pytest.fixture
def tmpfs(tmp_path):
    """A real 3 MiB tmpfs (needs root / CAP_SYS_ADMIN; skipped otherwise); unmounted after."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int = 0) -> None:
    """Fill the file system at `mnt` with real files until `leave` bytes are free (0: full)."""
    st = os.statvfs(mnt)
    with open(mnt / f"filler{leave}.bin", "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    if leave == 0:
        try:
            with open(mnt / "filler-rest.bin", "wb") as f:
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
        except OSError:
            pass
        assert os.statvfs(mnt).f_bavail == 0


def test_full_tmpfs(tmpfs, tmp_path):
    """No space left: the big clip fails with ENOSPC naming the file, the small ones complete
    in every format; then, on a completely full disk, the lists fail with one line
    (exit 1) and no partial list; on a read-only file system the run stops with one line."""
    src, out = tmp_path / "in", tmpfs / "out"
    src.mkdir()
    _clips(src)
    _fill(tmpfs, 1024 * 1024)
    # one video at a time, the big one last (by name): the space is shared, so a small clip
    # written while the big one fills the disk would fail too (correctly, but not the point here)
    r = _cli([str(src), "--out", str(out), "--format", "jpeg,flo,npy,h5", "--decoders", "1", "--batch", "1"])
    _check_failed_alone(r, src, out, "No space left on device [ENOSPC]", ("ann_flow.txt", "ann_h5.txt"))
    assert len(list((out / "a").glob("flow_*.flo"))) == 7

    before = {p: p.read_bytes() for p in out.glob("ann_*.txt")}
    _fill(tmpfs)  # now nothing is left at all
    r = _cli([str(src / "a.avi"), str(src / "b.avi"), "--out", str(out), "--format", "jpeg,flo,npy,h5"])
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text, text
    err = [ln for ln in text.splitlines() if "cannot write list" in ln]
    assert len(err) == 1 and "No space left on device [ENOSPC]" in err[0] and f"{out}/ann_" in err[0], text
    assert {p: p.read_bytes() for p in out.glob("ann_*.txt")} == before  # old lists kept whole
    assert not (out / "failures.txt").exists()  # nothing failed in this run (removing needs no space)
    assert not list(out.glob(".*partial*"))

    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    r = _cli([str(src), "--out", str(out)])
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text, text
    assert f"{out}: output folder cannot be written (Read-only file system [EROFS])" in text


def test_write_lists_on_full_disk(tmpfs):
    """write_lists itself: a TVNetError naming the first list and the cause, nothing partial."""
    out = tmpfs / "out"
    out.mkdir()
    _fill(tmpfs)
    results = [VideoResult("/v/a.avi", "a", "done", 8, 7, 0),
               VideoResult("/v/b.avi", "b", "failed", message="/v/b.avi: bad")]
    with pytest.raises(TVNetError) as e:
        write_lists(results, ExtractConfig(out=out, formats=("jpeg", "h5")))
    assert str(e.value).startswith(f"{out / 'ann_flow.txt'}: cannot write list (No space left on device [ENOSPC])"
                                   " (and 3 more list(s))")
    assert list(out.iterdir()) == []


# -- weights ------------------------------------------------------------------------------
def _saved(tmp_path: Path) -> dict:
    path = tmp_path / "w.pt"
    TVNet.from_preset("tvnet-10").save(path)
    return load_dict(path, "TVNet weights file")


@pytest.mark.parametrize("spoil, msg", [
    (lambda c: c["state_dict"].__setitem__("centred_taps", c["state_dict"]["centred_taps"] * math.nan),
     "state_dict['centred_taps'] holds NaN or infinite values"),
    (lambda c: c["config"].__setitem__("tau", math.inf), "config tau is inf, not a finite number"),
    (lambda c: c["config"].__setitem__("lam", math.nan), "config lam is nan, not a finite number"),
    (lambda c: c.__setitem__("version", "abc"), "version 'abc' is not an integer"),
    (lambda c: c.__setitem__("config", [1, 2]), "config is a list, not a dict"),
])
def test_weights_validated(tmp_path, spoil, msg):
    ckpt = _saved(tmp_path)
    validate_weights(tmp_path / "w.pt", ckpt)  # the real file is fine
    spoil(ckpt)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(TVNetError) as e:
        validate_weights(bad, load_dict(bad, "TVNet weights file"))
    assert str(e.value) == f"{bad}: not usable TVNet weights ({msg})"


def test_foreign_h5_under_a_final_name(tmp_path):
    """An HDF5 file whose `flow` is a group (not tvnet's): one line, no traceback."""
    import h5py

    from tvnet_cli.io.writers import h5_counts

    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_group("flow")
    with pytest.raises(TVNetError, match=r"a.h5: no dataset 'flow' in the HDF5 file \(it is a group\); remove it or use --overwrite"):
        h5_counts(path)
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(TVNetError, match=r"a.h5: cannot open HDF5 file \(.*\); remove it or use --overwrite"):
        h5_counts(path)
