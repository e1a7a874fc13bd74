"""`tvnet extract` with bad input: one-line messages, others complete, failure list, exit 1/2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from test_extract import VIDEOS, write_clip
from tvnet_cli.cli import main

SMALL = ["--width", "32", "--height", "24", "--iters", "3", "--threads", "1"]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(*args: str):
    return CliRunner().invoke(main, ["extract", *args])


def make_bad_folder(root: Path) -> dict[str, str]:
    """Good and bad videos under `root`; returns {file name: expected message part}."""
    write_clip(root / "good" / "g1.avi", 4)
    write_clip(root / "good" / "g2.avi", 3)
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "empty.mp4").write_bytes(b"")
    (root / "bad" / "text.avi").write_text("this is not a video\n" * 100)
    write_clip(root / "bad" / "one.avi", 1)
    expected = {"empty.mp4": "empty file", "text.avi": "not a readable video",
                "one.avi": "only 1 frame(s) decoded"}
    if VIDEOS.is_dir():
        avi = (VIDEOS / "test.avi").read_bytes()
        (root / "bad" / "cut.avi").write_bytes(avi[: len(avi) // 2])
        mp4 = bytearray((VIDEOS / "test.mp4").read_bytes())
        mid = len(mp4) // 2
        mp4[mid:mid + 20000] = np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes()
        (root / "bad" / "mid.mp4").write_bytes(bytes(mp4))
        (root / "bad" / "half.mp4").write_bytes(bytes(mp4[: len(mp4) // 2]))
        (root / "bad" / "codec.avi").write_bytes(avi.replace(b"xvid", b"qqqq").replace(b"XVID", b"QQQQ"))
        expected.update({"cut.avi": "truncated or corrupt video (decoded", "mid.mp4": "corrupt video",
                         "half.mp4": "not a readable video", "codec.avi": "unreadable codec"})
    return expected


def test_bad_videos_fail_alone(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    expected = make_bad_folder(src)
    # a first run on the good videos only; its output must survive the bad run untouched
    r = run(str(src / "good"), "--out", str(out / "good"), *SMALL)
    assert r.exit_code == 0, r.output
    before = snapshot(out / "good")

    r = run(str(src), "--out", str(out), *SMALL, "--format", "jpeg,h5")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    for name, msg in expected.items():
        lines = [ln for ln in r.output.splitlines() if f"{name}:" in ln]
        assert lines and msg in lines[0], (name, r.output)
    failures = (out / "failures.txt").read_text().splitlines()
    assert sorted(Path(ln.split("\t")[0]).name for ln in failures) == sorted(expected)
    assert all(len(ln.split("\t")) == 2 for ln in failures)
    # the good ones are complete, nothing partial is left, the list has only them
    after = snapshot(out / "good")
    assert {k: after[k] for k in before} == before  # JPEG folders kept byte for byte (only h5 added)
    assert (out / "ann_flow.txt").read_text().splitlines() == ["good/g1 3 1", "good/g2 2 1"]  # classes: bad=0, good=1
    assert (out / "good" / "g1.h5").exists()
    assert not list(out.rglob(".*partial*"))
    # unreadable files fail before any output exists; truncated ones leave at most empty folders
    assert not (out / "bad").exists() or not any(p.is_file() for p in (out / "bad").rglob("*"))

    # a rerun of the good ones clears the stale failure list
    r = run(str(src / "good"), "--out", str(out), *SMALL)
    assert r.exit_code == 0 and not (out / "failures.txt").exists()


def test_output_not_writable(tmp_path):
    clip = write_clip(tmp_path / "c.avi", 3)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    r = run(str(clip), "--out", str(blocker / "sub"), *SMALL)
    assert r.exit_code == 1
    assert r.output.strip().startswith("Error:") and "output folder cannot be written" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_video_output_folder_not_writable(tmp_path):
    """One video's output folder is blocked (a file in its place): it fails, others complete."""
    write_clip(tmp_path / "in" / "A" / "a.avi", 3)
    write_clip(tmp_path / "in" / "B" / "b.avi", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "A").write_text("a file where a folder should be")
    r = run(str(tmp_path / "in"), "--out", str(out), *SMALL)
    assert r.exit_code == 1
    assert f"a.avi: {out / 'A'}: a file where an output folder goes; move it away" in r.output
    assert len(list((out / "B" / "b").glob("flow_x_*.jpg"))) == 2
    assert (out / "failures.txt").read_text().startswith(str(tmp_path / "in" / "A" / "a.avi"))


@pytest.mark.parametrize("args, msg", [
    (["MISSING"], "not found"),
    (["CLIP", "--format", "gif"], "gif"),
    (["CLIP", "--short-side", "10", "--width", "5"], "either --short-side"),
    (["CLIP", "--batch", "0"], "--batch must be > 0"),
    (["CLIP", "--bound", "nan"], "--bound must be > 0 and finite, got nan"),
    (["CLIP", "--bound", "inf"], "--bound must be > 0 and finite, got inf"),
    (["CLIP", "--gpus", "x"], "--gpus"),
    (["CLIP", "--preset", "nope"], "unknown preset"),
])
def test_usage_errors_exit_2(tmp_path, args, msg):
    clip = write_clip(tmp_path / "c.avi", 2)
    args = [str(tmp_path / "missing.avi") if a == "MISSING" else str(clip) if a == "CLIP" else a for a in args]
    r = run(*args, "--out", str(tmp_path / "o"))
    assert r.exit_code == 2, r.output
    assert msg in r.output


def test_list_with_missing_entry(tmp_path):
    clip = write_clip(tmp_path / "v" / "c.avi", 3)
    lst = tmp_path / "list.txt"
    lst.write_text(f"v/{clip.name} 5\n{tmp_path / 'v' / 'gone.avi'}\n\n")  # relative "path label" line
    r = run(f"@{lst}", "--out", str(tmp_path / "o"), *SMALL)
    assert r.exit_code == 1
    assert "gone.avi: file not found" in r.output
    assert (tmp_path / "o" / "c" / "flow_x_00002.jpg").exists()


def test_bad_weights_file_exit_1(tmp_path):
    clip = write_clip(tmp_path / "c.avi", 2)
    bad = tmp_path / "w.pt"
    bad.write_text("not weights")
    r = run(str(clip), "--out", str(tmp_path / "o"), "--weights", str(bad))
    assert r.exit_code == 1 and "w.pt: not a TVNet weights file" in r.output
    assert len(r.output.strip().splitlines()) == 1
