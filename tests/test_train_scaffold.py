"""What both trainers share (tvnet_cli.train.scaffold, tvnet_cli.train.chart): the resume
policy, checkpoint checks, strict state loading, the CSV log and the line chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tvnet_cli.errors import TVNetError
from tvnet_cli.train.chart import Panel, Series, line_chart
from tvnet_cli.train.scaffold import (CHECKPOINT_VERSION, CsvLog, check_resume, load_checkpoint, load_state,
                                      resume_differs, save_checkpoint)


def test_resume_policy_every_field_matches_unless_listed(tmp_path: Path) -> None:
    saved = {"lr": 0.1, "crop": [24, 32], "steps": 5, "old": 1}
    now = {"lr": 0.1, "crop": (24, 32), "steps": 9, "new": 2}  # a stored list equals a tuple
    assert resume_differs(saved, now, ("steps",)) == ["new", "old"]  # fields only one side has differ too
    assert resume_differs(saved, now, ("steps", "old", "new")) == []
    assert resume_differs(saved, {**now, "lr": 0.2}, ("steps", "old", "new")) == ["lr"]
    with pytest.raises(TVNetError, match=r"different settings \(lr, steps\)"):
        check_resume(tmp_path / "c.pt", saved, {**now, "lr": 0.2}, ("old", "new"))


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "run" / "c.pt"
    save_checkpoint(path, {"step": 3, "w": torch.arange(4.0)})
    state = load_checkpoint(path, "test checkpoint", ("step", "w"))
    assert state["version"] == CHECKPOINT_VERSION and state["step"] == 3 and not (tmp_path / "run/c.pt.tmp").exists()
    torch.testing.assert_close(state["w"], torch.arange(4.0))
    with pytest.raises(TVNetError, match=r"not a test checkpoint \(missing \['rng'\]\)"):
        load_checkpoint(path, "test checkpoint", ("step", "rng"))
    torch.save({"version": CHECKPOINT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(TVNetError, match="newer than this tvnet"):
        load_checkpoint(tmp_path / "new.pt", "test checkpoint")
    torch.save({"step": 1}, tmp_path / "old.pt")
    with pytest.raises(TVNetError, match="not a test checkpoint of this tvnet version"):
        load_checkpoint(tmp_path / "old.pt", "test checkpoint")
    with pytest.raises(TVNetError, match="test checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt", "test checkpoint")


def test_load_state_is_strict(tmp_path: Path) -> None:
    a, b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    load_state(b, a.state_dict(), tmp_path / "c.pt")
    torch.testing.assert_close(b.weight, a.weight)
    with pytest.raises(TVNetError, match="c.pt: checkpoint does not match the model"):
        load_state(torch.nn.Linear(2, 4), a.state_dict(), tmp_path / "c.pt")
    with pytest.raises(TVNetError, match="does not match"):
        load_state(b, {"weight": a.weight}, tmp_path / "c.pt")  # a missing key is refused too


def test_csv_log_keeps_rows_up_to_a_step(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "log.csv", ("step", "loss"))
    assert log.read(10) == []
    log.write([{"step": s, "loss": s / 10} for s in (1, 2, 3, 4)])
    assert log.read(2) == [{"step": "1", "loss": "0.1"}, {"step": "2", "loss": "0.2"}]
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "step,loss"


def test_line_chart_places_points_on_the_axes(tmp_path: Path) -> None:
    """Panel k spans x in [k*w + 60, (k+1)*w - 20] for x = 0..max and y in [h - 40, 30] for
    y = low..high: a dot at (max, high) sits at the frame's top-right corner, one at (0, low)
    at its bottom-left, in the second panel as well as the first."""
    red, green = (210, 40, 40), (20, 140, 20)
    panels = [Panel("a", (Series([0, 10], [0.0, 2.0], red, "dots"),)),
              Panel("b", (Series([0, 4], [0.0, 1.0], green, "dots"),), (0.0, 1.0))]
    line_chart(tmp_path / "c.png", panels, (300, 200))
    img = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    assert img.shape == (200, 600, 3)
    for (x, y), colour in (((280, 30), red), ((60, 160), red), ((580, 30), green), ((360, 160), green)):
        assert tuple(img[y + 1, x - 1]) == colour, (x, y)
    assert tuple(img[100, 170]) == (255, 255, 255)  # and nothing between them


def test_one_rule_for_an_existing_checkpoint(tmp_path):
    """--resume continues an existing checkpoint and starts afresh without one; without
    --resume an existing checkpoint is a one-line error (never overwritten by accident)."""
    from tvnet_cli.errors import TVNetError
    from tvnet_cli.train.scaffold import will_resume

    path = tmp_path / "run.ckpt"
    assert will_resume(path, resume=True) is False
    assert will_resume(path, resume=False) is False
    path.write_bytes(b"x")
    assert will_resume(path, resume=True) is True
    with pytest.raises(TVNetError, match="a checkpoint exists; pass --resume"):
        will_resume(path, resume=False)
