"""Official UCF101 / HMDB51 split files (shipped in tests/data) parse to the official counts; lists; missing videos."""

import numpy as np
import pytest

from tvnet_cli.data.clips import batch_plan, segment_starts, stack_indices
from tvnet_cli.errors import TVNetError
from tvnet_cli.io.splits import UCF101_COUNTS, VideoItem, check_videos, parse_hmdb51, parse_list, parse_ucf101


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_official_counts(splits_dir, split):
    s = parse_ucf101(splits_dir / "ucf101", split)
    assert len(s.classes) == 101
    assert (len(s.train), len(s.test)) == UCF101_COUNTS[split]
    assert s.classes[0] == "ApplyEyeMakeup" and s.classes[-1] == "YoYo"
    if split == 1:
        assert s.train[0] == VideoItem("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0)
    assert {it.label for it in s.test} == set(range(101))
    # official protocol: groups 1-7 / 8-14 / 15-21 are the test groups of splits 1 / 2 / 3
    groups = {int(it.path.split("_g")[1][:2]) for it in s.test}
    assert groups == set(range(7 * split - 6, 7 * split + 1))
    assert not {it.path for it in s.train} & {it.path for it in s.test}


def test_hmdb51_official_counts(splits_dir):
    s = parse_hmdb51(splits_dir / "hmdb51", 1)
    assert len(s.classes) == 51
    assert (len(s.train), len(s.test)) == (3570, 1530)
    assert s.classes[0] == "brush_hair"
    assert s.train[0].path == "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"
    assert all(sum(it.label == c for it in s.test) == 30 for c in range(51))
    for split in (2, 3):
        t = parse_hmdb51(splits_dir / "hmdb51", split)
        assert (len(t.train), len(t.test)) == (3570, 1530)


def test_annotations_found_beside_root(splits_dir, tmp_path):
    ann = tmp_path / "ucfTrainTestlist"
    ann.mkdir()
    for f in (splits_dir / "ucf101").iterdir():
        (ann / f.name).write_bytes(f.read_bytes())
    root = tmp_path / "UCF-101"
    root.mkdir()
    s = parse_ucf101(None, 1, root)
    assert len(s.train) == 9537
    with pytest.raises(TVNetError, match="pass --annotations"):
        parse_ucf101(None, 1, tmp_path / "a" / "nowhere")


def test_missing_videos_are_named(splits_dir, tmp_path):
    s = parse_ucf101(splits_dir / "ucf101", 1)
    (tmp_path / "ApplyEyeMakeup").mkdir()
    (tmp_path / s.train[0].path).write_bytes(b"x")
    with pytest.raises(TVNetError, match=r"9536 listed videos missing: ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi"):
        check_videos(s.train, tmp_path)
    check_videos(s.train[:1], tmp_path)


def test_mismatched_label_and_bad_lines(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "classInd.txt").write_text("1 A\r\n2 B\r\n")
    (ann / "trainlist01.txt").write_text("A/v_A_g01_c01.avi 2\n")
    (ann / "testlist01.txt").write_text("B/v_B_g01_c01.avi\n")
    with pytest.raises(TVNetError, match=r"trainlist01.txt:1: label 2 does not match class 'A'"):
        parse_ucf101(ann, 1)
    (ann / "trainlist01.txt").write_text("C/v_C_g01_c01.avi 1\n")
    with pytest.raises(TVNetError, match="class folder 'C' is not in classInd.txt"):
        parse_ucf101(ann, 1)


def test_generic_list(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("a/x.avi 0\nb/y y.avi 2\n\n")
    items, classes = parse_list(lst)
    assert items == (VideoItem("a/x.avi", 0), VideoItem("b/y y.avi", 2)) and classes == ("0", "1", "2")
    lst.write_text("a/x.avi walk\nb/y.avi run\n")
    items, classes = parse_list(lst)
    assert classes == ("run", "walk") and items[0].label == 1
    lst.write_text("a/x.avi\n")
    with pytest.raises(TVNetError, match=r"train.txt:1: expected"):
        parse_list(lst)


def test_tsn_sampling():
    assert segment_starts(100, 25, 6, None)[:3] == [1, 5, 9]
    starts = segment_starts(100, 3, 6, np.random.default_rng(0))
    assert all(0 <= s <= 94 for s in starts) and starts == sorted(starts)
    assert segment_starts(4, 2, 6, None) == [0, 0]
    assert stack_indices([0], 6, 4).tolist() == [[0, 1, 2, 3, 3, 3]]
    # a step's batch is a pure function of (seed, step): resumable
    assert batch_plan(10, 4, 7, 0) == batch_plan(10, 4, 7, 0)
    assert batch_plan(10, 4, 7, 0) != batch_plan(10, 4, 8, 0)
    first_epoch = [i for s in range(3) for i, _ in batch_plan(12, 4, s, 0)]
    assert sorted(first_epoch) == list(range(12))
