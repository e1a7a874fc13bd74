"""Every fast path gives the reference path's flow (issue 7: within 1e-3 px mean)."""

from __future__ import annotations

import pytest
import torch

from conftest import load_rgb, to_batch
from tvnet_cli import TVNet


@pytest.mark.parametrize("preset", ["tvnet-50", "tvnet-3-1-10"])
def test_fused_step_matches_eager(data_dir, preset):
    f0 = to_batch(load_rgb(data_dir / "chairs/0000001-img0.ppm")[:128, :192])
    f1 = to_batch(load_rgb(data_dir / "chairs/0000001-img1.ppm")[:128, :192])
    f0, f1 = torch.cat([f0, f1]), torch.cat([f1, f0])  # a batch of 2, both directions
    model = TVNet.from_preset(preset)
    reference = model.predict(f0, f1)
    model.fused = True
    fast = model.predict(f0, f1)
    assert fast.shape == reference.shape
    assert (fast - reference).abs().mean().item() < 1e-3
    assert (fast - reference).abs().max().item() < 5e-2


def test_fused_flag_leaves_training_on_eager_step():
    model = TVNet.from_preset("tvnet-10")
    model.fused = True
    x = torch.rand(1, 1, 16, 20, requires_grad=True)
    model(x, torch.roll(x.detach(), 1, 3)).sum().backward()
    assert x.grad is not None


def test_frozen_model_takes_the_inference_path_under_autograd():
    model = TVNet.from_preset("tvnet-10")
    model.set_trainable("none")
    x = torch.rand(2, 1, 16, 20) * 255
    y = torch.roll(x, 1, 3)
    out = model(x, y)  # grad mode on, but nothing needs a gradient: no graph, no checkpoints
    assert not out.requires_grad
    torch.testing.assert_close(out, model.predict(x, y))
