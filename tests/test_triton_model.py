"""The whole model on the Triton backend equals the PyTorch reference (issue 11 must-show 1).

Here (no GPU) Triton runs the same kernels on CPU tensors in its interpreter
(`TRITON_INTERPRET=1`, set by conftest); on a GPU machine the `cuda` tests in
test_fastpath.py and test_kernel_triton.py run them compiled.
Real frames: the shipped example video (and the FlyingChairs pair where the data is there).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import video_frames
from tvnet_cli import TVNet

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test.avi"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: the interpreter


@pytest.fixture(scope="module")
def video_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three real pairs (t, t + 8) `(3, 3, H, W)` uint8 from the shipped video (a person
    moving by about 2 px around x 160-260, y 40-200)."""
    f = torch.from_numpy(video_frames(EXAMPLE, 11)).permute(0, 3, 1, 2)
    return f[:3], f[8:11]


def _both(model: TVNet, f0: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Triton flow, PyTorch flow) on DEVICE, returned on the CPU."""
    model, f0, f1 = model.to(DEVICE), f0.to(DEVICE), f1.to(DEVICE)
    model.backend = "torch"
    reference = model.predict(f0, f1)
    model.backend = "triton"
    fast = model.predict(f0, f1)
    assert model.last_backend == "triton"
    return fast.cpu(), reference.cpu()


# (preset, crop (top, left, height, width)): odd sizes. tvl1 runs 1250 iterations with 25
# warps: on some small crops float32 rounding alone moves its flow by 1e-3 to 5e-3 px (the
# PyTorch step in float32 against float64; the C kernel likewise), so its crop is one where
# float32 itself is stable (there C, PyTorch and float64 agree within 1e-4).
CASES = [("tvnet-50", (40, 150, 61, 87)), ("tvnet-3-1-10", (60, 170, 75, 53)),
         ("tvl1", (110, 200, 45, 61)), ("tvnet-50-trained", (90, 180, 37, 45)),
         ("tvl1-half-trained", (70, 160, 57, 83))]  # per-level trained scalars, median, half size


@pytest.mark.parametrize("preset, crop", CASES)
def test_triton_model_matches_torch_on_real_frames(video_batch, preset, crop):
    top, left, h, w = crop
    f0, f1 = (f[..., top:top + h, left:left + w] for f in video_batch)  # batch 3, odd size
    model = TVNet.from_preset(preset)
    fast, reference = _both(model, f0, f1)
    assert fast.shape == reference.shape == (3, 2, h, w)
    assert reference.abs().mean() > 0.3  # a real motion field, not zeros
    assert (fast - reference).abs().mean().item() < 1e-3
    assert (fast - reference).abs().max().item() < 5e-2


@pytest.mark.parametrize("size", [(1, 1), (1, 6), (5, 1), (2, 3), (3, 2)])
def test_triton_model_on_tiny_images(size):
    """Down to 1x1: the output has the input's size and equals the reference."""
    g = torch.Generator().manual_seed(sum(size))
    f0 = torch.randint(0, 256, (3, 1, *size), generator=g, dtype=torch.uint8)
    f1 = torch.randint(0, 256, (3, 1, *size), generator=g, dtype=torch.uint8)
    fast, reference = _both(TVNet.from_preset("tvnet-3-1-10"), f0, f1)
    assert fast.shape == (3, 2, *size)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)


def test_triton_model_with_trained_taps_u0_and_scalars(video_batch):
    """Every trainable part away from its default, so a kernel that assumes default taps,
    zero u0 or config scalars fails."""
    f0, f1 = (f[..., 60:109, 150:221] for f in video_batch)
    model = TVNet.from_preset("tvnet-3-1-10")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.filter_parameters():
            p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))
        model.u0.add_(0.3 * torch.randn(model.u0.shape, generator=g))
        model.log_scalars["theta"].add_(0.2)
    model.set_trainable("none")
    fast, reference = _both(model, f0, f1)
    assert (fast - reference).abs().mean().item() < 1e-3


def test_triton_model_on_chairs(data_dir):
    """A FlyingChairs pair with large motion, both directions (where the data is there)."""
    from conftest import load_rgb, to_batch

    a = to_batch(load_rgb(data_dir / "chairs/0000001-img0.ppm")[:96, :128])
    b = to_batch(load_rgb(data_dir / "chairs/0000001-img1.ppm")[:96, :128])
    fast, reference = _both(TVNet.from_preset("tvnet-4-1-12"), torch.cat([a, b]), torch.cat([b, a]))
    assert (fast - reference).abs().mean().item() < 1e-3
