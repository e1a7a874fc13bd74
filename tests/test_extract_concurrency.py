"""`tvnet extract` never loses, destroys or misplaces data (issue 12: items 1, 2, 4, 9, 10).

Real runs on real PyAV-written clips: concurrent processes into one --out, a lock held by a
killed process, paths that lead out of --out, folders and files that are not tvnet's,
colliding output names, Ctrl-C with worker processes, and options that used to end in a
traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from test_video import encode_clip, texture
from tvnet_cli.cli import main
from tvnet_cli.errors import TVNetError
from tvnet_cli.extract import ExtractConfig, OutputBusy, extract, lock_output
from tvnet_cli.io.writers import output_state

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(formats=("jpeg",), preset="tvnet-10", torch_threads=1, decoders=2)
CLI_FAST = ["--preset", "tvnet-10", "--threads", "1", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def clip_at(path: Path, frames: list[np.ndarray], fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_clip(path, frames, fmt)
    return path


def tvnet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvnet_cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=120)


def pyav_count(path: Path) -> int:
    """Frames in `path`, counted by PyAV directly (not by tvnet's reader)."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def error_line(stderr: str) -> str:
    """The one error line of a failed command (and nothing like a traceback around it)."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def check_outputs_true(out: Path, src: Path, foreign: tuple[str, ...] = ()) -> int:
    """Every output under a final name (but the `foreign` ones, relative to `out`) is
    complete and every list line is true; returns the number of list lines checked."""
    counts = {str(v.relative_to(src).with_suffix("")): pyav_count(v) for v in src.rglob("*.mp4")}
    for folder in (p for p in out.rglob("*") if p.is_dir() and not p.name.startswith(".")):
        rel = str(folder.relative_to(out))
        if rel not in counts or rel in foreign:
            continue  # a class folder
        n = counts[rel]
        assert len(list(folder.glob("flow_x_*.jpg"))) == len(list(folder.glob("flow_y_*.jpg"))) == n - 1, rel
        assert len(list(folder.glob("img_*.jpg"))) == n, rel
        for i in range(1, n):
            Image.open(folder / f"flow_x_{i:05d}.jpg").verify()
    for h5 in out.rglob("*.h5"):
        rel = str(h5.relative_to(out).with_suffix(""))
        if str(h5.relative_to(out)) in foreign:
            continue
        with h5py.File(h5) as f:
            assert f["flow"].shape[0] == counts[rel] - 1, rel
            assert np.isfinite(f["flow"][...]).all()
            assert (f.attrs["frames"], f.attrs["flows"]) == (counts[rel], counts[rel] - 1)
            assert f.attrs["source"].endswith(rel + ".mp4") and "parameters" in f.attrs
    checked = 0
    for name, pattern in (("ann_flow.txt", "flow_x_*.jpg"), ("ann_rgb.txt", "img_*.jpg"), ("ann_h5.txt", None)):
        if not (out / name).exists():
            continue
        for line in (out / name).read_text().splitlines():
            rel, n, _ = line.split()
            if pattern is None:
                with h5py.File(out / rel) as f:
                    assert f["flow"].shape[0] == int(n), line
            else:
                assert len(list((out / rel).glob(pattern))) == int(n), line
            checked += 1
    assert not [p for p in out.rglob(".*") if p.name != ".tvnet.lock"]  # nothing temporary left
    return checked


# -- item 1: concurrent runs ---------------------------------------------------------------------------
def test_two_concurrent_runs_leave_only_complete_outputs(tmp_path):
    """Three rounds of two runs started together into one --out: afterwards every output
    under a final name is complete, every list line true; a run that found the folder
    taken exits 2 with one line naming the holder."""
    src = tmp_path / "in"
    for i, n in enumerate((9, 6, 12)):
        clip_at(src / f"c{i % 2}" / f"v{i}.mp4", texture(n), "mp4")
    args = ["extract", str(src), "--format", "jpeg,h5", *CLI_FAST, "--decoders", "1"]
    outcomes = set()
    for r in range(3):
        out = tmp_path / f"out{r}"
        procs = [subprocess.Popen([sys.executable, "-m", "tvnet_cli", *args, "--out", str(out)], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(120), p.stderr.read()) for p in procs]
        codes = sorted(rc for rc, _ in results)
        assert codes in ([0, 0], [0, 2]), results
        for rc, err in results:
            if rc == 2:
                line = error_line(err)
                assert line.startswith(f"Error: {out}: in use by another tvnet extract (pid "), line
                assert f"tvnet extract {src} --format jpeg,h5" in line
        outcomes.add(tuple(codes))
        assert check_outputs_true(out, src) == 3 * 3  # three lists of three videos
    assert outcomes  # whichever way the lock resolved, the outputs are right


def test_lock_names_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    clip = tmp_path / "v.mp4"
    clip_at(clip, texture(5), "mp4")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom tvnet_cli.extract import lock_output\n"
                               f"with lock_output({str(out)!r}, command='held for the test'):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        r = tvnet("extract", str(clip), "--out", str(out), *CLI_FAST)
        assert r.returncode == 2
        assert error_line(r.stderr) == (f"Error: {out}: in use by another tvnet extract (pid {holder.pid} on "
                                        f"{os.uname().nodename}, started {_started(out)}: held for the test); "
                                        f"wait for it to finish or use another --out")
        with pytest.raises(OutputBusy):  # the library refuses too
            extract([clip], ExtractConfig(out=out, **FAST))
    finally:
        holder.kill()  # kill -9: the kernel drops the flock, the file stays
        holder.wait()
    (out / ".v.partial-1-0badc0de").mkdir()  # what the killed run left mid-video
    (out / ".v.partial-1-0badc0de" / "flow_x_00001.jpg").write_bytes(b"half")
    s = extract([clip], ExtractConfig(out=out, **FAST))
    assert s.done == 1 and check_outputs_true(out, tmp_path) == 2
    assert f'"pid": {os.getpid()}' in (out / ".tvnet.lock").read_text()


def _started(out: Path) -> str:
    import json

    return json.loads((out / ".tvnet.lock").read_text())["started"]


def test_lock_is_reentrant_and_released(tmp_path):
    with lock_output(tmp_path):
        with lock_output(tmp_path):  # the CLI holds it around extract(), which takes it again
            pass
        r = tvnet("extract", str(tmp_path / "x.mp4"), "--out", str(tmp_path), *CLI_FAST)
        assert r.returncode == 2  # still held by this process
    with lock_output(tmp_path):  # released: free to take again
        pass


def test_torchrun_ranks_share_the_folder_but_not_a_rank(tmp_path):
    """Ranks of one torchrun job write into one --out together; a plain run or a second
    job's same rank cannot join them."""
    def try_lock(rank: int, world: int) -> str:
        code = ("from tvnet_cli.extract import OutputBusy, lock_output\n"
                f"try:\n    with lock_output({str(tmp_path)!r}, {rank}, {world}, command='rank {rank}'):\n"
                "        print('ok')\nexcept OutputBusy as e:\n    print(e)")
        return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                              timeout=60).stdout.strip()

    with lock_output(tmp_path, 0, 2, command="rank 0"):
        assert try_lock(1, 2) == "ok"
        assert try_lock(0, 2).startswith(f"{tmp_path}: in use by another tvnet extract (pid {os.getpid()} ")
        assert "in use by another tvnet extract" in try_lock(0, 1)
    assert try_lock(0, 1) == "ok"


# -- item 2: nothing outside --out, nothing foreign --------------------------------------------------
def test_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path, monkeypatch):
    """Issue 12 (2a): `cd data; extract A/B.mp4 --out . --overwrite` used to delete data/B/precious.avi."""
    data = tmp_path / "data"
    clip_at(data / "A" / "B.mp4", texture(2), "mp4")
    clip_at(data / "B" / "precious.avi", texture(3), "avi")
    before = (data / "B" / "precious.avi").read_bytes()
    monkeypatch.chdir(data)
    r = CliRunner().invoke(main, ["extract", "A/B.mp4", "--out", ".", "--overwrite", *CLI_FAST])
    assert r.exit_code == 1, r.output
    assert (data / "B" / "precious.avi").read_bytes() == before and os.listdir(data / "B") == ["precious.avi"]
    assert (data / "failures.txt").read_text() == (
        "A/B.mp4\tA/B.mp4: B: a folder holding files tvnet did not write (precious.avi); tvnet writes nothing "
        "there, move it away or choose another --out\n")


def test_list_entries_with_dotdot_stay_inside_out(tmp_path):
    """Issue 12 (2b): an @list with `a.mp4` and `../data.mp4` wrote `work/data/` beside --out."""
    work = tmp_path / "work"
    clip_at(work / "lst" / "a.mp4", texture(4), "mp4")
    clip_at(work / "data.mp4", texture(3), "mp4")
    (work / "data").mkdir()
    (work / "data" / "keep.txt").write_text("mine")
    (work / "lst" / "list.txt").write_text("a.mp4\n../data.mp4\n")
    out = work / "out"
    for overwrite in (False, True):
        s = extract([f"@{work / 'lst' / 'list.txt'}"], ExtractConfig(out=out, overwrite=overwrite, **FAST))
        assert (s.done, s.failed) == (2, 0)
    assert sorted(os.listdir(work)) == ["data", "data.mp4", "lst", "out"]
    assert os.listdir(work / "data") == ["keep.txt"] and (work / "data" / "keep.txt").read_text() == "mine"
    assert (out / "ann_flow.txt").read_text() == "data 2 0\nlst/a 3 1\n"
    assert check_outputs_true(out, work) == 4


def test_links_out_of_out_and_links_under_output_names_are_refused(tmp_path):
    src, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    clip_at(src / "c" / "v.mp4", texture(3), "mp4")
    clip_at(src / "d" / "w.mp4", texture(3), "mp4")
    clip_at(src / "d" / "z.mp4", texture(3), "mp4")
    (elsewhere / "v").mkdir(parents=True)
    (elsewhere / "v" / "flow_x_00001.jpg").write_bytes(b"theirs")
    (out / "d").mkdir(parents=True)
    (out / "c").symlink_to(elsewhere)  # a class folder that leads out of --out
    (out / "d" / "w").symlink_to(elsewhere / "v")  # a link under an output name
    s = extract([src], ExtractConfig(out=out, overwrite=True, **FAST))
    assert (s.done, s.failed) == (1, 2)
    fails = dict(ln.split("\t") for ln in (out / "failures.txt").read_text().splitlines())
    assert fails[str(src / "c" / "v.mp4")] == (f"{src / 'c' / 'v.mp4'}: output {out / 'c' / 'v'} would lie outside "
                                               f"{out} (at {elsewhere / 'v'}, through a symbolic link)")
    assert fails[str(src / "d" / "w.mp4")].endswith(f"{out / 'd' / 'w'}: a symbolic link; tvnet writes nothing "
                                                    f"there, move it away or choose another --out")
    assert os.listdir(elsewhere) == ["v"] and os.listdir(elsewhere / "v") == ["flow_x_00001.jpg"]
    assert (elsewhere / "v" / "flow_x_00001.jpg").read_bytes() == b"theirs"
    assert (out / "ann_flow.txt").read_text() == "d/z 2 1\n"


def test_foreign_files_under_output_names_fail_that_video_only(tmp_path):
    """A file where an output folder goes, a folder where a class folder should be a
    folder, a foreign HDF5 file: each fails its video with one line; the others complete."""
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("a", "b", "c", "k/d", "m/e"):
        clip_at(src / f"{name}.mp4", texture(3), "mp4")
    out.mkdir()
    (out / "a").write_text("a stray file where a's folder goes")
    (out / "k").write_text("a stray file where a class folder goes")
    with h5py.File(out / "c.h5", "w") as f:
        f.create_group("flow")
    s = extract([src], ExtractConfig(out=out, **{**FAST, "formats": ("jpeg", "h5")}))
    assert (s.done, s.failed) == (2, 3)
    fails = dict(ln.split("\t") for ln in (out / "failures.txt").read_text().splitlines())
    tail = "tvnet writes nothing there, move it away or choose another --out"
    assert fails[str(src / "a.mp4")] == f"{src / 'a.mp4'}: {out / 'a'}: a file, not an output folder; {tail}"
    assert fails[str(src / "k" / "d.mp4")] == (f"{src / 'k' / 'd.mp4'}: {out / 'k'}: a file where an output "
                                               f"folder goes; move it away")
    assert fails[str(src / "c.mp4")] == f"{src / 'c.mp4'}: {out / 'c.h5'}: a file that is not a tvnet HDF5 output; {tail}"
    assert (out / "a").read_text().startswith("a stray") and (out / "k").read_text().startswith("a stray")
    with h5py.File(out / "c.h5") as f:
        assert isinstance(f["flow"], h5py.Group)
    assert check_outputs_true(out, src, foreign=("c.h5",)) == 2 * 3


def test_output_state(tmp_path):
    """What counts as tvnet's: only field files (at least one flow field); an HDF5 file with a
    4-d `flow` (finished once it has its attributes). Anything else raises, naming it."""
    d = tmp_path / "v"
    assert output_state(d, "dir") == "absent"
    d.mkdir()
    assert output_state(d, "dir") == "stale"  # empty: may be replaced, not complete
    (d / "img_00001.jpg").write_bytes(b"")
    assert output_state(d, "dir") == "stale"  # no flow field
    (d / "flow_x_00001.jpg").write_bytes(b"")
    assert output_state(d, "dir") == output_state(d, "dir", replace=True) == "ours"
    (d / "notes.txt").write_text("x")
    assert output_state(d, "dir") == "ours"  # finished; a rerun skips it ...
    with pytest.raises(TVNetError, match=r"v: a folder holding files tvnet did not write \(notes.txt\)"):
        output_state(d, "dir", replace=True)  # ... but never deletes the note
    (d / "notes.txt").unlink()
    (d / "flow_y_00001.jpg").symlink_to(tmp_path / "x")  # a link named like a field is not one
    with pytest.raises(TVNetError, match=r"did not write \(flow_y_00001.jpg\)"):
        output_state(d, "dir", replace=True)
    h5 = tmp_path / "v.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("flow", (2, 2, 4, 4), "f2")
    assert output_state(h5, "h5") == "stale"  # no attributes: an unfinished tvnet file
    with h5py.File(h5, "a") as f:
        f.attrs["frames"], f.attrs["flows"] = 3, 2
    assert output_state(h5, "h5") == "ours"
    with pytest.raises(TVNetError, match="w: a file, not an output folder"):
        output_state(h5.rename(tmp_path / "w"), "dir")


# -- item 4: colliding outputs ----------------------------------------------------------------------
def test_video_beside_a_folder_of_the_same_name_fails_alone(tmp_path):
    """`a.mp4` beside `a/x.mp4`: the folder out/a/ would mix a's flow files with x's output
    folder; a fails with one line (it was listed as "a 119 0" with no flow files), x completes.
    HDF5 alone does not collide (a.h5 beside a/x.h5)."""
    src, out = tmp_path / "in", tmp_path / "out"
    clip_at(src / "a.mp4", texture(4), "mp4")
    clip_at(src / "a" / "x.mp4", texture(3), "mp4")
    s = extract([src], ExtractConfig(out=out, **FAST))
    assert (s.done, s.failed) == (1, 1)
    assert (out / "failures.txt").read_text() == (
        f"{src / 'a.mp4'}\t{src / 'a.mp4'}: its output folder {out / 'a'} would also hold the outputs of "
        f"{src / 'a' / 'x.mp4'}; rename the video or the folder\n")
    assert (out / "ann_flow.txt").read_text() == "a/x 2 1\n"  # classes: "" (a.mp4) and "a"
    assert sorted(os.listdir(out / "a")) == ["x"] and check_outputs_true(out, src, foreign=("a",)) == 2
    s = extract([src], ExtractConfig(out=tmp_path / "h5", **{**FAST, "formats": ("h5",)}))
    assert (s.done, s.failed) == (2, 0)
    assert (tmp_path / "h5" / "ann_h5.txt").read_text() == "a.h5 3 0\na/x.h5 2 1\n"


def test_one_output_path_for_two_videos_fails_the_second(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    clip_at(src / "a.mp4", texture(3), "mp4")
    clip_at(src / "a.h5.mp4", texture(4), "mp4")  # its folder would be a.mp4's a.h5
    s = extract([src], ExtractConfig(out=out, **{**FAST, "formats": ("jpeg", "h5")}))
    assert (s.done, s.failed) == (1, 1)
    (line,) = (out / "failures.txt").read_text().splitlines()
    assert line == (f"{src / 'a.h5.mp4'}\t{src / 'a.h5.mp4'}: output {out / 'a.h5'} is also the output of "
                    f"{src / 'a.mp4'}; rename one of them")
    with h5py.File(out / "a.h5") as f:
        assert f["flow"].shape[0] == 2  # a.mp4's
    assert sorted(os.listdir(out / "a")) == ["flow_x_00001.jpg", "flow_x_00002.jpg", "flow_y_00001.jpg",
                                             "flow_y_00002.jpg", "img_00001.jpg", "img_00002.jpg", "img_00003.jpg"]


# -- item 9: one line instead of a traceback ----------------------------------------------------------
def test_non_utf8_list_and_classes_are_one_line(tmp_path):
    clip = tmp_path / "v.mp4"
    clip_at(clip, texture(3), "mp4")
    (tmp_path / "list.txt").write_bytes(b"v.mp4\n\xff\xfebad\n")
    (tmp_path / "classes.txt").write_bytes(b"walk\nr\xe9n\n")
    r = tvnet("extract", f"@{tmp_path / 'list.txt'}", "--out", str(tmp_path / "o"), *CLI_FAST)
    assert r.returncode == 1
    assert error_line(r.stderr) == f"Error: {tmp_path / 'list.txt'}: list is not UTF-8 text (byte 0xff at offset 6)"
    r = tvnet("extract", str(clip), "--out", str(tmp_path / "o"), "--classes", str(tmp_path / "classes.txt"), *CLI_FAST)
    assert r.returncode == 1
    assert error_line(r.stderr) == (f"Error: {tmp_path / 'classes.txt'}: classes file is not UTF-8 text (byte 0xe9 "
                                    f"at offset 6)")


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--crop", "0x0"], "--crop must be HxW with both sides >= 1, got 0x0"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1, got 0"),
    (["--val-every", "0"], "--val-every must be >= 1, got 0"),
])
def test_train_options_are_one_line(tmp_path, args, message):
    r = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "w.pt"), *args])
    assert r.exit_code == 1 and r.output == f"Error: {message}\n" and r.exception.__class__ is SystemExit


def test_viz_bad_fps_and_h5_group_are_one_line(tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_group("flow")
    r = CliRunner().invoke(main, ["viz", str(path), "--out", str(tmp_path / "v.mp4"), "--fps", "-5"])
    assert r.exit_code == 1 and r.output == "Error: --fps must be > 0 and finite, got -5.0\n"
    r = CliRunner().invoke(main, ["viz", str(path), "--out", str(tmp_path / "v.mp4")])
    assert r.exit_code == 1 and r.output == f"Error: {path}: no dataset 'flow' in the HDF5 file (it is a group)\n"


def test_bad_weights_reach_validation(tmp_path):
    """Weights with version "abc" or a list for a config: one line from `validate_weights`."""
    import torch

    from tvnet_cli.model import TVNet

    clip = tmp_path / "v.mp4"
    clip_at(clip, texture(3), "mp4")
    TVNet.from_preset("tvnet-10").save(tmp_path / "good.pt")
    good = torch.load(tmp_path / "good.pt", weights_only=True)
    for name, change, why in (("abc.pt", {"version": "abc"}, "version 'abc' is not an integer"),
                              ("cfg.pt", {"config": [1, 2]}, "config is a list, not a dict")):
        torch.save({**good, **change}, tmp_path / name)
        r = tvnet("extract", str(clip), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / name), *CLI_FAST)
        assert r.returncode == 1
        assert error_line(r.stderr) == f"Error: {tmp_path / name}: not usable TVNet weights ({why})"


def test_sizes_too_large_read_as_size_problems(tmp_path):
    clip = tmp_path / "v.mp4"
    clip_at(clip, texture(3), "mp4")  # 64x48
    r = CliRunner().invoke(main, ["extract", str(clip), "--out", str(tmp_path / "o"), "--width", "100000", *CLI_FAST])
    assert r.exit_code == 2 and r.output == "Error: --width 100000 is larger than the largest frame side 16384\n"
    s = extract([clip], ExtractConfig(out=tmp_path / "o", height=16000, **FAST))  # -> 21333 wide
    assert s.failed == 1 and s.results[0].message == (
        f"{clip}: frames of 64x48 resized to 21333x16000: larger than the largest frame side 16384; "
        f"choose a smaller size")


def test_ctrl_c_with_two_workers_is_one_line_and_the_rerun_cleans_up(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("x", "y"):
        clip_at(src / f"{name}.mp4", texture(150, 96, 128), "mp4")
    cmd = [sys.executable, "-m", "tvnet_cli", "extract", str(src), "--out", str(out), "--procs-per-device", "2",
           *CLI_FAST, "--decoders", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's job
    deadline = time.monotonic() + 90
    while not list(out.glob(".*.partial-*/flow_x_00002.jpg")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the parent and both workers
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.splitlines()[-1] == ("interrupted: finished videos are kept; a rerun removes the unfinished ones' "
                                    "temporary files and continues")
    assert list(out.glob(".*.partial-*"))  # unfinished videos stay under temporary names ...
    assert not ((out / "x").exists() and (out / "y").exists())  # ... never under final ones
    s = extract([src], ExtractConfig(out=out, frames=True, **FAST))
    assert s.failed == 0 and check_outputs_true(out, src) == 4


def test_interrupted_overwrite_leaves_nothing_hidden_forever(tmp_path):
    """Temporaries of killed runs (new and legacy names, folders, h5 and list files) are
    removed by the next run, which never touches other hidden names or foreign files."""
    clip, out = tmp_path / "v.mp4", tmp_path / "out"
    clip_at(clip, texture(3), "mp4")
    cfg = ExtractConfig(out=out, **{**FAST, "formats": ("jpeg", "h5")})
    assert extract([clip], cfg).done == 1
    for name in (".v.partial-4242-0123abcd", ".v.old-4242-0123abcd", ".v.partial"):
        (out / name).mkdir()
        (out / name / "flow_x_00001.jpg").write_bytes(b"x")
    (out / ".v.h5.partial-4242-0123abcd").write_bytes(b"x")
    (out / ".ann_flow.txt.partial-4242-0123abcd").write_text("x")
    (out / ".w.partial-4242-0123abcd").mkdir()  # not a video of this run: not ours to judge
    (out / ".notes").write_text("mine")
    (out / ".v.partial-1-00000000").mkdir()
    (out / ".v.partial-1-00000000" / "mine.txt").write_text("mine")  # foreign file in a temp: kept
    assert extract([clip], cfg).skipped == 1
    assert sorted(p.name for p in out.glob(".*")) == [".notes", ".tvnet.lock", ".v.partial-1-00000000",
                                                     ".w.partial-4242-0123abcd"]
    assert os.listdir(out / ".v.partial-1-00000000") == ["mine.txt"]


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state, ppid, ...); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc)."""
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and (st := _stat(int(d.name))) and int(st[1]) == pid and st[0] != "Z"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_kill_9_of_the_parent_ends_its_workers_and_frees_the_folder(tmp_path):
    """A run killed with kill -9 leaves no worker writing on (they die with the parent,
    seconds before they could have finished their videos) and its lock is free at once."""
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("x", "y"):
        clip_at(src / f"{name}.mp4", texture(400, 48, 64), "mp4")
    cmd = [sys.executable, "-m", "tvnet_cli", "extract", str(src), "--out", str(out), "--procs-per-device", "2",
           *CLI_FAST, "--decoders", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not list(out.glob(".*.partial-*/flow_x_00002.jpg")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    workers = [k for k in _children(proc.pid) if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 2
    while any(_alive(w) for w in workers):
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.05)
    written = sorted(str(p) for p in out.rglob("*"))
    time.sleep(0.5)
    assert sorted(str(p) for p in out.rglob("*")) == written  # nobody writes on
    assert not (out / "x").exists() and not (out / "y").exists()
    with lock_output(out):  # free at once
        pass
