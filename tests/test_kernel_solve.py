"""The whole coarse-to-fine solve in C (`kernels.cpu.solve`) equals the per-op PyTorch path.

Building blocks against the ops.py functions they replace (area / bilinear resize, flow
resize, centred gradient, bicubic / bilinear warp), then the model on real frames of the
shipped video for presets, schedules and every option, odd and tiny sizes, batch 3, a
non-zero u0 and trained-looking taps and scalars.
"""

from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import video_frames
from tvnet_cli import TVNet, TVNetConfig
from tvnet_cli.kernels import cpu
from tvnet_cli.model import ops

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test.avi"


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    lib = cpu.library()
    assert lib is not None, "the CPU kernel must build where the tests run"
    return lib


@pytest.fixture(scope="module")
def video_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three real pairs (t, t + 8) `(3, 3, 240, 320)` uint8 (a person moving by ~2 px)."""
    f = torch.from_numpy(video_frames(EXAMPLE, 11)).permute(0, 3, 1, 2).contiguous()
    return f[:3], f[8:11]


def _ptr(t: torch.Tensor) -> int:
    assert t.is_contiguous() and t.dtype == torch.float32
    return t.data_ptr()


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# -- building blocks -----------------------------------------------------------------------
@pytest.mark.parametrize("src,dst", [((256, 340), (128, 170)), ((256, 340), (43, 32)), ((37, 53), (9, 13)),
                                     ((5, 4), (2, 3)), ((7, 9), (7, 9)), ((9, 13), (37, 53)), ((2, 5), (2, 10))])
def test_resize_matches_ops(lib, src, dst):
    """Area averaging when shrinking (windows of uneven size too), bilinear when growing."""
    x = _rand(*src, seed=1, scale=50)
    out = torch.empty(dst)
    lib.tvl1_resize(*src, _ptr(x), *dst, _ptr(out))
    # within an ulp or two: ATen's vectorised bilinear loop may fuse multiply-adds
    torch.testing.assert_close(out, ops.resize(x[None, None], dst)[0, 0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("src,dst", [((16, 21), (32, 43)), ((4, 5), (8, 11)), ((2, 5), (2, 10)), ((9, 9), (9, 9))])
def test_resize_flow_matches_ops(lib, src, dst):
    u = _rand(2, *src, seed=2, scale=3)
    out = torch.empty(2, *dst)
    lib.tvl1_resize_flow(*src, _ptr(u), *dst, _ptr(out))
    torch.testing.assert_close(out, ops.resize_flow(u[None], dst)[0], rtol=1e-5, atol=1e-4)


TAPS = ((-0.45, 0.05, 0.55), (-0.6, -0.02, 0.48))  # off the defaults: no hard-coded [-.5, 0, .5]


@pytest.mark.parametrize("border", ["zero", "replicate"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (3, 2), (37, 53)])
def test_centred_gradient_matches_ops(lib, border, size):
    x = _rand(*size, seed=3, scale=40)
    gx, gy = torch.empty(size), torch.empty(size)
    taps = torch.tensor(TAPS)
    lib.tvl1_centred_gradient(*size, _ptr(x), _ptr(taps), border == "replicate", _ptr(gx), _ptr(gy))
    rx, ry = ops.centred_gradient(x[None, None], taps, border)
    torch.testing.assert_close(gx, rx[0, 0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(gy, ry[0, 0], rtol=1e-6, atol=1e-5)
    if border == "replicate" and size[1] > 1:  # one-sided at the border: not zero
        assert gx[:, 0].abs().sum() > 0


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (37, 53)])
def test_warp_matches_grid_sample(lib, mode, size):
    """Flows up to ~4 px: many samples near and beyond the border, where bicubic clamps
    each tap (not the position) and bilinear clamps the position."""
    x = _rand(3, *size, seed=4, scale=30)
    u = _rand(2, *size, seed=5, scale=2)
    out = torch.empty(3, *size)
    lib.tvl1_warp(*size, 3, _ptr(x), _ptr(u), mode == "bilinear", _ptr(out))
    torch.testing.assert_close(out, ops.warp(x[None], u[None], mode)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (6, 5), (37, 53), (9, 300)])
def test_median_filter_matches_numpy(lib, k, size):
    """C and PyTorch k x k median (border replicated) against numpy's median of each window;
    values on a half-pixel grid, so windows hold ties; 300 columns: two chunks of a row."""
    u = (_rand(2, *size, seed=6, scale=3) * 2).round() / 2
    r = k // 2
    padded = np.pad(u.numpy(), ((0, 0), (r, r), (r, r)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))  # (2, H, W, k, k)
    expected = torch.from_numpy(np.median(windows.reshape(*windows.shape[:3], -1), axis=-1).astype(np.float32))
    out = torch.empty_like(u)
    assert lib.tvl1_median(*size, k, _ptr(u), _ptr(out)) == 0
    assert torch.equal(out, expected)
    assert torch.equal(ops.median_filter(u[None], k)[0], expected)


def test_median_filter_in_chunks_equals_whole(monkeypatch):
    """A batch too large for one set of window copies is filtered a few images at a time."""
    u = _rand(5, 2, 9, 11, seed=7, scale=3)
    whole = ops.median_filter(u, 5)
    monkeypatch.setattr(ops, "MEDIAN_CHUNK_BYTES", 2 * 25 * 9 * 11 * 4 * 2)  # two images a chunk
    assert torch.equal(ops.median_filter(u, 5), whole)


# -- the whole model -----------------------------------------------------------------------
def _both(model: TVNet, f0: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C flow, PyTorch flow)."""
    model.backend = "torch"
    reference = model.predict(f0, f1)
    model.backend = "c"
    fast = model.predict(f0, f1)
    assert model.last_backend == "c"
    return fast, reference


def _close(fast: torch.Tensor, reference: torch.Tensor, moving: bool = True) -> None:
    assert fast.shape == reference.shape
    if moving:
        assert reference.abs().mean() > 0.1  # a real motion field, not zeros
    diff = (fast - reference).abs()
    assert diff.mean().item() <= 1e-3, diff.mean().item()
    assert diff.max().item() < 5e-2, diff.max().item()


# (preset or config, crop (top, left, height, width)); tvl1 on a crop where float32 itself is
# stable (see test_triton_model.py), the others at full size or odd crops.
CASES = [
    ("tvnet-50", None),
    ("tvl1-fast", None),
    ("tvl1-medium", (40, 150, 96, 128)),
    ("tvl1", (110, 200, 45, 61)),
    ("tvnet-3-2.1.3-5.10.15", (30, 140, 101, 131)),  # per-level schedule (finest first)
    (TVNetConfig(3, 2, 10, warp="bilinear"), (40, 150, 64, 96)),
    (TVNetConfig(3, 2, 10, grad_border="replicate"), (40, 150, 64, 96)),
    (TVNetConfig(3, 2, 10, data_outside="border"), (40, 150, 64, 96)),
    (TVNetConfig(3, 2, 10, warp="bilinear", grad_border="replicate", data_outside="border", smooth_sigma=0.0),
     (40, 150, 64, 96)),
    (TVNetConfig(5, 2, 10), (100, 190, 37, 53)),  # odd size
    ("tvl1-half", None),  # finest_level=1 (upsampled at the end), brightness="bias"
    (TVNetConfig(3, 2, 10, brightness="bias", data_outside="border"), (40, 150, 64, 96)),
]


@pytest.mark.parametrize("spec, crop", CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_c_solve_matches_torch_on_real_frames(video_batch, spec, crop):
    f0, f1 = video_batch
    if crop is not None:
        top, left, h, w = crop
        f0, f1 = (f[..., top:top + h, left:left + w] for f in (f0, f1))
    model = TVNet.from_preset(spec) if isinstance(spec, str) else TVNet(spec)
    _close(*_both(model, f0[:1], f1[:1]))


def test_c_solve_batch_on_threads_equals_one_by_one(video_batch):
    """Batch 3 on a 3-thread pool: each image as when solved alone, and as PyTorch."""
    f0, f1 = (f[..., 60:160, 150:280] for f in video_batch)
    model = TVNet.from_preset("tvl1-fast")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        fast, reference = _both(model, f0, f1)
    finally:
        torch.set_num_threads(threads)
    _close(fast, reference)
    alone = torch.cat([model.predict(f0[i:i + 1], f1[i:i + 1]) for i in range(3)])
    assert torch.equal(fast, alone)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (3, 40)])
def test_c_solve_tiny_images(size):
    """Fewer levels than configured (one, for most), 1- and 2-pixel sides."""
    g = torch.Generator().manual_seed(6)
    f0 = torch.randint(0, 256, (2, 1, *size), generator=g, dtype=torch.uint8)
    f1 = torch.roll(f0, 1, 3)
    model = TVNet(TVNetConfig(5, 2, 10))
    _close(*_both(model, f0, f1), moving=False)


def test_c_solve_with_trained_looking_parameters(video_batch):
    """Taps, scalars and u0 off their defaults (u0 small and random: no identity warp)."""
    f0, f1 = (f[:2, :, 50:150, 140:270] for f in video_batch)
    model = TVNet.from_preset("tvl1-fast")
    with torch.no_grad():
        model.centred_taps.copy_(torch.tensor(TAPS))
        model.forward_taps.mul_(torch.tensor([[1.1, 0.9], [1.0, 1.05]]))
        model.backward_taps.mul_(torch.tensor([[0.95, 1.0], [1.02, 0.97]]))
        model.log_scalars["tau"].fill_(-0.1)
        model.log_scalars["lam"].fill_(0.2)
        model.log_scalars["theta"].fill_(0.1)
        model.u0.copy_(_rand(*model.u0.shape, seed=7, scale=0.3))
    assert not model.u0_is_zero()
    fast, reference = _both(model, f0, f1)
    _close(fast, reference)
    plain = TVNet.from_preset("tvl1-fast")
    plain.backend = "c"
    assert (plain.predict(f0, f1) - fast).abs().mean() > 1e-2  # the parameters did change the solve


def test_c_solve_with_per_level_parameters(video_batch):
    """Each level's own taps and scalars reach the C solve (per_level models)."""
    f0, f1 = (f[:2, :, 50:150, 140:270] for f in video_batch)
    model = TVNet.from_preset("tvl1-fast").split_levels()
    with torch.no_grad():
        model.centred_taps[2].copy_(torch.tensor(TAPS))
        model.forward_taps[0].mul_(torch.tensor([[1.1, 0.9], [1.0, 1.05]]))
        model.log_scalars["lam"][1].fill_(0.3)
        model.log_scalars["tau"][3].fill_(-0.2)
    fast, reference = _both(model, f0, f1)
    _close(fast, reference)
    shared = TVNet.from_preset("tvl1-fast")
    shared.backend = "c"
    assert (shared.predict(f0, f1) - fast).abs().mean() > 1e-2  # the levels' own parameters count


def test_plan_levels_coarsest_first_and_a_finest_level_below_full_size(video_batch):
    """`cpu.solve` with a plan whose last level is smaller than the frames returns the flow
    at that level: what a model solving below full resolution and upsampling gets."""
    f0, f1 = (f[:1, :, :128, :160] for f in video_batch)
    model = TVNet(TVNetConfig(3, 1, 10))
    i0, i1 = model.prepare(f0, f1)
    sizes = [(64, 80), (32, 40), (16, 20)]  # finest first, as level_sizes gives them
    schedule = model.config.schedule()
    with torch.no_grad():  # host floats, as in inference
        plan = model._c_plan(sizes, schedule, True)
    assert [lv.size for lv in plan.levels] == sizes[::-1]
    out = cpu.solve(i0, i1, torch.zeros(1, 2, 16, 20), plan)
    assert out.shape == (1, 2, 64, 80)
    # the same as the full-size solve of the frames area-averaged to 64 x 80
    half = TVNet(TVNetConfig(3, 1, 10, min_level=0))
    half.backend = "torch"
    reference = half.solve(ops.resize(i0, (64, 80)), ops.resize(i1, (64, 80)))
    assert half.config.level_sizes(64, 80) == sizes[:2] + [(16, 20)]
    _close(out, reference, moving=False)


# -- one image's solve on several threads ----------------------------------------------------
def _plan(model: TVNet, h: int, w: int, brightness: str) -> cpu.Plan:
    sizes = model.config.level_sizes(h, w)
    with torch.no_grad():
        plan = model._c_plan(sizes, model.config.schedule(len(sizes)), model.u0_is_zero())
    return dataclasses.replace(plan, brightness=brightness)


@pytest.fixture(autouse=True)
def threads_always(lib):
    """No back-off to one thread on a busy machine: threaded solves here run on threads."""
    old = lib.tvl1_thread_backoff(0)
    yield
    lib.tvl1_thread_backoff(old)


@pytest.fixture
def band_every_level(lib):
    """Cut every level (not only those of >= 8k pixels) into bands: band edges on small images."""
    old = lib.tvl1_band_threshold(1)
    yield
    lib.tvl1_band_threshold(old)


@pytest.mark.parametrize("brightness", ["constant", "bias"])
@pytest.mark.parametrize("spec", ["tvl1-half", "tvl1-fast", "tvnet-50"])
def test_threaded_solve_equals_one_thread_on_real_frames(video_batch, spec, brightness):
    """240 x 320 frames: the levels of >= 8k pixels in 2 or 3 row bands, bit for bit the
    single-thread solve (same arithmetic per pixel, the median the same element)."""
    model = TVNet.from_preset(spec)
    i0, i1 = model.prepare(video_batch[0][:1], video_batch[1][:1])
    plan = _plan(model, 240, 320, brightness)
    assert any(lv.size[0] * lv.size[1] >= 8192 for lv in plan.levels)
    u = torch.zeros(1, 2, *plan.levels[0].size)
    one = cpu.solve(i0, i1, u, plan, threads=1)
    assert one.abs().mean() > 0.1
    for threads in (2, 3):
        assert torch.equal(cpu.solve(i0, i1, u, plan, threads=threads), one), threads


@pytest.mark.parametrize("brightness,median", [("constant", 0), ("bias", 0), ("bias", 5)])
@pytest.mark.parametrize("size", [(37, 53), (3, 40), (1, 1)])
def test_threaded_solve_band_edges_on_odd_sizes(band_every_level, size, brightness, median):
    """Every level in bands (down to 1-row bands of a 3-row level), a non-zero u0 and
    trained-looking taps: still bit for bit the single-thread solve (the median filter reads
    rows of the neighbouring bands)."""
    g = torch.Generator().manual_seed(8)
    f0 = torch.randint(0, 256, (1, 1, *size), generator=g, dtype=torch.uint8)
    f1 = torch.roll(f0, (1, 2), (2, 3))
    model = TVNet(TVNetConfig(3, 2, 21, median=median))  # 21 iterations: two rounds of bands
    with torch.no_grad():
        model.centred_taps.copy_(torch.tensor(TAPS))
        model.u0.copy_(_rand(*model.u0.shape, seed=9, scale=0.3))
    i0, i1 = model.prepare(f0, f1)
    plan = _plan(model, *size, brightness)
    u = model.initial_flow(plan.levels[0].size, size, 1).contiguous()
    one = cpu.solve(i0, i1, u, plan, threads=1)
    if size != (1, 1):
        assert one.abs().mean() > 1e-3
    for threads in (2, 3):
        assert torch.equal(cpu.solve(i0, i1, u, plan, threads=threads), one), threads


def test_threads_shared_between_a_small_batch(video_batch):
    """Batch 2 on 4 threads (2 C threads per image) equals each image solved on one thread."""
    f0, f1 = (f[:2] for f in video_batch)
    model = TVNet.from_preset("tvl1-half")
    i0, i1 = model.prepare(f0, f1)
    plan = _plan(model, 240, 320, "bias")
    u = torch.zeros(2, 2, *plan.levels[0].size)
    alone = torch.cat([cpu.solve(i0[i:i + 1], i1[i:i + 1], u[:1], plan, threads=1) for i in range(2)])
    assert torch.equal(cpu.solve(i0, i1, u, plan, threads=4), alone)


def test_extra_coarse_levels_run_the_coarsest_levels_parameters(video_batch):
    """Levels added by `coarsest_side` solve with the coarsest configured level's schedule, taps
    and scalars: the same flow as a config that lists those levels explicitly (C and PyTorch)."""
    f0, f1 = (f[:2, :, 20:220, 10:330] for f in video_batch)
    extended = TVNet(TVNetConfig(2, level_warps=(1, 2), level_iters=(5, 10), per_level=True, coarsest_side=24,
                                 smooth_sigma=0.0, min_level=0))
    sizes = [(200, 320), (100, 160), (50, 80), (25, 40), (12, 20)]
    assert extended.config.level_sizes(200, 320) == sizes
    explicit = TVNet(extended.config.replace(scales=5, level_warps=(1, 2, 2, 2, 2), level_iters=(5, 10, 10, 10, 10),
                                             coarsest_side=0))
    assert explicit.config.level_sizes(200, 320) == sizes
    with torch.no_grad():
        extended.centred_taps[1].copy_(torch.tensor(TAPS))
        extended.log_scalars["lam"][1].fill_(0.3)
        for name, p in explicit.named_parameters():
            src = dict(extended.named_parameters())[name]
            p.copy_(src if p.shape == src.shape else src[[0, 1, 1, 1, 1]])
    fast, reference = _both(extended, f0, f1)
    _close(fast, reference)
    explicit.backend = "torch"
    assert (explicit.predict(f0, f1) - reference).abs().max() < 1e-5
