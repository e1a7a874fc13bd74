"""`tvnet extract` progress in flow fields: totals, advances and the videos named."""

from __future__ import annotations

from click.testing import CliRunner

from test_extract import write_clip
from tvnet_cli.cli import main
from tvnet_cli.extract import ExtractConfig, extract
from tvnet_cli.extract.progress import expected_fields
from tvnet_cli.io.video import iter_frames

TINY = dict(width=32, height=24, iters=3, torch_threads=1, batch=4, frames=False)


def test_fields_expected_from_the_header_match_a_decode(tmp_path):
    clip = write_clip(tmp_path / "a.avi", 7)
    decoded = sum(1 for _ in iter_frames(clip))  # independent count: every frame decoded
    assert decoded == 7
    assert expected_fields(clip, 1) == decoded - 1 and expected_fields(clip, 3) == decoded - 3
    (tmp_path / "bad.avi").write_bytes(b"no video")
    assert expected_fields(tmp_path / "bad.avi", 1) == 0


def test_progress_events_add_up_to_the_written_fields(tmp_path):
    """Two good videos, one that is no video, one cut short (fails after fields were
    computed): the advances add up to the fields on disk and to the last total."""
    write_clip(tmp_path / "in" / "a.avi", 3)
    write_clip(tmp_path / "in" / "b.avi", 9)
    (tmp_path / "in" / "c.avi").write_bytes(b"not a video")
    cut = write_clip(tmp_path / "in" / "d.avi", 40)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 4 // 5])  # about 20 frames decode
    events: list[tuple[str, object]] = []
    s = extract([tmp_path / "in"], ExtractConfig(out=tmp_path / "o", **TINY),
                lambda kind, value: events.append((kind, value)))
    assert {r.rel: r.status for r in s.results} == {"a": "done", "b": "done", "c": "failed", "d": "failed"}
    on_disk = sum(len(list((tmp_path / "o" / v).glob("flow_x_*.jpg"))) for v in "ab")
    assert on_disk == 2 + 8 == s.flows
    flows = [v for k, v in events if k == "flows"]
    assert sum(flows) == on_disk and min(flows) < 0  # d's fields were taken back
    assert [v for k, v in events if k == "total"][-1] == on_disk
    assert events[0] == ("videos", 4)
    starts = [v for k, v in events if k == "start"]
    assert sorted(starts) == ["a", "b", "d"]  # c never opened as a video
    ends = [v.rel for k, v in events if k == "video"]
    assert sorted(ends) == ["a", "b", "c", "d"]
    assert all(events.index(("start", r)) < [i for i, (k, v) in enumerate(events)
                                             if k == "video" and v.rel == r][0] for r in starts)


def test_cli_summary_names_where_outputs_went(tmp_path):
    write_clip(tmp_path / "in" / "a.avi", 3)
    (tmp_path / "in" / "c.avi").write_bytes(b"not a video")
    r = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--width", "32",
                                  "--height", "24", "--iters", "3", "--threads", "1", "--no-frames",
                                  "--format", "jpeg,h5", "--gpus", ""])
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert f"outputs {tmp_path / 'o'}/" in text and "<video>.h5" in text
    assert "lists ann_flow.txt, ann_h5.txt" in text and "run record tvnet.json" in text
    assert "failures 1 video(s), listed in failures.txt" in text
    assert "2/2" in text  # the bar counted both fields of a
