"""Per-level schedules (`level_warps`, `level_iters`, finest level first): config round trip,
names, and that the solver runs exactly the schedule it is given."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tvnet_cli import TVNet, TVNetConfig
from tvnet_cli.errors import TVNetError
from tvnet_cli.model import ops
from tvnet_cli.model.presets import preset_config
from tvnet_cli.model.tvnet import _tv_l1_level, stepwise


def _frames(h: int = 48, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random texture and its copy shifted by (2, 3) px: a pair with motion."""
    g = torch.Generator().manual_seed(1)
    small = torch.rand(1, 3, h // 4, w // 4, generator=g) * 255
    f0 = torch.nn.functional.interpolate(small, (h, w), mode="bicubic", align_corners=False)
    return f0, torch.roll(f0, (2, 3), (2, 3))


def test_config_round_trip_names_and_presets(tmp_path):
    cfg = preset_config("tvnet-4-1.1.2.3-10.20.40.80")
    assert cfg.level_warps == (1, 1, 2, 3) and cfg.level_iters == (10, 20, 40, 80)
    assert cfg.schedule() == [(1, 10), (1, 20), (2, 40), (3, 80)]
    assert cfg.name == "tvnet-4-1.1.2.3-10.20.40.80"
    assert TVNetConfig.from_dict(cfg.to_dict()) == cfg
    assert TVNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # lists -> tuples
    # uniform configs keep their old names and dicts (weights files written before still load)
    old = TVNetConfig(5, 5, 50)
    assert old.name == "tvnet-5-5-50" and old.schedule() == [(5, 50)] * 5
    d = old.to_dict()
    del d["level_warps"], d["level_iters"]
    assert TVNetConfig.from_dict(d) == old
    assert TVNetConfig(3, 2, 9, level_iters=(9, 9, 9)).name == "tvnet-3-2-9"
    # a uniform override drops the per-level list it replaces, and only that one
    assert cfg.replace(iters=20).schedule() == [(1, 20), (1, 20), (2, 20), (3, 20)]
    # saved and loaded with the model
    TVNet(cfg).save(tmp_path / "m.pt")
    assert TVNet.from_file(tmp_path / "m.pt").config == cfg


@pytest.mark.parametrize("bad", [dict(level_iters=(10, 20)), dict(level_warps=(1, 0, 1, 1)),
                                 dict(level_iters=(5, 5, 5, 5, 5))])
def test_bad_schedules_are_tvnet_errors(bad):
    with pytest.raises(TVNetError, match="one per level"):
        TVNetConfig(4, 1, 10, **bad)
    with pytest.raises(TVNetError, match="one per level"):
        preset_config("tvnet-4-1-10.20")


@pytest.mark.parametrize("backend", ["torch", "c"])
def test_per_level_schedule_equal_to_uniform_gives_identical_flow(backend):
    f0, f1 = _frames()
    uniform, per_level = TVNet(TVNetConfig(3, 2, 7)), TVNet(TVNetConfig(3, 1, 1, level_warps=(2, 2, 2),
                                                                         level_iters=(7, 7, 7)))
    uniform.backend = per_level.backend = backend
    a, b = uniform.predict(f0, f1), per_level.predict(f0, f1)
    assert per_level.last_backend == backend
    assert torch.equal(a, b)


def test_coarse_iterations_change_only_the_coarse_level():
    """2 levels, 30 iterations x 2 warps at the coarse one and 10 x 1 at the fine one: equal to
    running a 1-level TVNet-2-30 on the coarse images, then one fine warp of 10 from its flow."""
    f0, f1 = _frames()
    model = TVNet(TVNetConfig(2, 1, 10, level_warps=(1, 2), level_iters=(10, 30)))
    model.backend = "torch"
    flow = model.predict(f0, f1)
    i0, i1 = model.prepare(f0, f1)
    fine, coarse = ops.pyramid_sizes(*i0.shape[-2:], 2, 0.5)
    first = TVNet(TVNetConfig(1, 2, 30))
    first.backend = "torch"
    with torch.inference_mode():
        u = first.solve(ops.resize(i0, coarse), ops.resize(i1, coarse))  # (1, 2, h/2, w/2)
        taps = (model.centred_taps, model.forward_taps, model.backward_taps)
        u = _tv_l1_level(i0, i1, ops.resize_flow(u, fine), model.config, taps, stepwise(),
                         model.solver_scalars(), False, 1, 10)
    assert torch.allclose(flow, u, atol=1e-5)
    # and the coarse iterations matter: a different coarse count gives a different flow
    other = TVNet(model.config.replace(level_iters=(10, 3)))
    other.backend = "torch"
    assert (other.predict(f0, f1) - flow).abs().max() > 1e-3


def test_small_image_uses_the_finest_entries():
    f0, f1 = (f[..., :16, :16] for f in _frames())
    assert len(ops.pyramid_sizes(16, 16, 5, 0.5)) == 3  # a 5-level schedule gets 3 levels here
    five = TVNet(TVNetConfig(5, 1, 1, level_iters=(3, 4, 5, 6, 7)))
    three = TVNet(TVNetConfig(3, 1, 1, level_iters=(3, 4, 5)))
    assert torch.equal(five.predict(f0, f1), three.predict(f0, f1))


def test_presets_follow_the_presmoothing_rule():
    from tvnet_cli.model.presets import preset_config

    assert preset_config("tvl1").smooth_sigma == 0.0 and preset_config("tvl1").name == "tvnet-5-5-50"
    assert preset_config("tvnet-5-5-50") == preset_config("tvl1")
    assert preset_config("tvnet-4-1-12").smooth_sigma == 0.8 and preset_config("tvnet-50").smooth_sigma == 0.8
    assert preset_config("tvnet-5-1.2.3.4.5-10.20.30.40.50").smooth_sigma == 0.8  # one warp at the finest level
    named = preset_config("tvnet-5-2.3.5.5.5-10.20.30.50.50")  # names keep a fixed pyramid
    assert named.replace(brightness="bias", coarsest_side=48) == preset_config("tvl1-medium")
    fast = preset_config("tvl1-fast")
    assert fast.schedule()[0] == (1, 10) and fast.smooth_sigma == 0.8


def test_finest_level_solves_the_half_size_pyramid_and_upsamples():
    """finest_level=1 on 128x160 frames = a TVNet without that option on the area-halved frames
    (the same pyramid: 2x2 averages of 2x2 averages), its flow upsampled bilinearly and doubled."""
    f0, f1 = _frames(128, 160)
    cfg = preset_config("tvnet-3-1.2.3-5.10.20-f1")
    assert cfg.finest_level == 1 and cfg.name == "tvnet-3-1.2.3-5.10.20-f1"
    assert TVNetConfig.from_dict(cfg.to_dict()) == cfg
    half, full = TVNet(cfg), TVNet(cfg.replace(finest_level=0))
    half.backend = full.backend = "torch"
    assert cfg.level_sizes(128, 160) == [(64, 80), (32, 40), (16, 20)]
    with torch.inference_mode():
        i0, i1 = half.prepare(f0, f1)
        flow = half.solve(i0, i1)  # (1, 2, 128, 160)
        small = full.solve(ops.resize(i0, (64, 80)), ops.resize(i1, (64, 80)))
    assert flow.shape == (1, 2, 128, 160)
    expected = torch.nn.functional.interpolate(small, (128, 160), mode="bilinear", align_corners=False) * 2
    diff = (flow - expected).abs()  # float rounding only: area of area vs area, over 100 iterations
    assert diff.mean() < 1e-4 and diff.max() < 1e-2
    assert (flow.mean(dim=(2, 3)) - torch.tensor([[3.0, 2.0]])).abs().max() < 0.5  # the shift, roughly
    # an image too small for the skipped levels keeps its coarsest one
    assert cfg.level_sizes(8, 8) == [(8, 8)]


@pytest.mark.parametrize("backend", ["torch", "c"])
def test_per_level_parameters(backend, tmp_path):
    """Per-level taps and scalars equal to the shared ones give the same flow; changing one
    level's lambda changes the flow; they save and load as state."""
    f0, f1 = _frames()
    cfg = TVNetConfig(3, 1, 1, level_warps=(1, 2, 2), level_iters=(5, 10, 10))
    shared, per = TVNet(cfg), TVNet(cfg.replace(per_level=True))
    assert per.centred_taps.shape == (3, 2, 3) and per.log_scalars["lam"].shape == (3,)
    shared.backend = per.backend = backend
    assert torch.allclose(shared.predict(f0, f1), per.predict(f0, f1), atol=1e-6)
    with torch.no_grad():
        per.log_scalars["lam"][2].add_(1.0)  # the coarsest level's lambda x e
        per.forward_taps[1].mul_(1.1)
        assert per.solver_scalars(2)[1] == pytest.approx(0.15 * 2.718281828, rel=1e-6)
        assert per.solver_scalars(0)[1] == pytest.approx(0.15)
    flow = per.predict(f0, f1)
    assert (flow - shared.predict(f0, f1)).abs().max() > 1e-3
    per.save(tmp_path / "p.pt")
    back = TVNet.from_file(tmp_path / "p.pt")
    back.backend = backend
    assert back.config == per.config and torch.equal(back.predict(f0, f1), flow)


def test_median_offset_by_hand():
    a = torch.tensor([[[[1.0, 5.0], [3.0, 9.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])  # (2, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert ops.median_offset(a, torch.zeros_like(a), mask).flatten().tolist() == [3.0, 0.0]  # {1,3,9}; empty
    assert ops.median_offset(a, torch.ones_like(a)).flatten().tolist() == [2.0, 1.0]  # {0,2,4,8}: lower middle


def test_brightness_bias_ignores_an_exposure_change():
    """A shifted texture whose second frame is 40 grey levels brighter: TV-L1 with brightness
    constancy reads the change as motion, brightness="bias" recovers the shift (3, 2) px."""
    f0, f1 = (f * 0.6 for f in _frames(96, 128))
    cfg = TVNetConfig(3, 3, 30, smooth_sigma=0.0)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    true = torch.tensor([3.0, 2.0]).view(1, 2, 1, 1)
    errors = {}
    for mode in ("constant", "bias"):
        model = TVNet(cfg.replace(brightness=mode))
        plain = model.predict(f0, f1)
        bright = model.predict(f0, f1 + 40)
        errors[mode] = ((bright - true)[inner].norm(dim=1).mean().item(), (plain - true)[inner].norm(dim=1).mean().item())
    assert errors["bias"][0] < 0.3 * errors["constant"][0]  # the exposure change no longer moves the flow
    assert errors["bias"][1] < errors["constant"][1] + 0.05  # and without a change nothing is lost


def test_split_levels_keeps_the_flow_of_a_trained_shared_model():
    f0, f1 = _frames()
    shared = TVNet(TVNetConfig(3, 2, 5))
    with torch.no_grad():
        shared.log_scalars["theta"].add_(0.3)
        shared.centred_taps.mul_(1.2)
    split = shared.split_levels()
    assert split.config.per_level and split.config.theta == pytest.approx(0.3 * math.exp(0.3))
    assert split.centred_taps.shape == (3, 2, 3)
    assert torch.allclose(split.predict(f0, f1), shared.predict(f0, f1), atol=1e-5)


def test_coarsest_side_adds_levels_to_large_frames_only():
    """`coarsest_side`: levels past `scales` while the coarsest longer side exceeds it (as OpenCV
    DIS sizes its pyramid by the longer side), down to a shorter side of 8 px; frames whose
    pyramid is cut by `min_level` or already small enough are untouched."""
    half = preset_config("tvl1-half")
    assert half.coarsest_side == 48
    assert half.level_sizes(375, 1242) == [(188, 621), (94, 310), (47, 155), (23, 78), (12, 39)]
    assert half.level_sizes(1242, 375) == [(621, 188), (310, 94), (155, 47), (78, 23), (39, 12)]
    assert half.level_sizes(1080, 1920)[-2:] == [(34, 60), (17, 30)]  # two extra levels
    assert half.level_sizes(384, 512) == half.replace(coarsest_side=0).level_sizes(384, 512)  # 24x32
    assert len(half.level_sizes(200, 1600)) == 3  # min_level cut the pyramid: not a large frame
    assert half.schedule(6) == half.schedule() + [half.schedule()[-1]] * 2
    assert half.schedule(2) == half.schedule()[:2]
    assert preset_config("tvl1").coarsest_side == 0  # faithful: OpenCV TV-L1's fixed pyramid


def test_coarsest_side_reaches_large_motion():
    """A texture moved 48 px on a 384x1024 frame (exact flow (-48, 0)): the 4-level half-size
    pyramid's coarsest level (24x64) sees 3 px and locks onto a wrong flow; one more level
    (12x32) finds it."""
    import numpy as np

    from tvnet_cli.data.synthetic import procedural_texture

    tex = torch.from_numpy(procedural_texture((384, 1100), np.random.default_rng(3))).permute(2, 0, 1)[None]
    f0, f1 = tex[..., :1024].float(), tex[..., 48:1072].float()
    err = {}
    for side in (0, 48):
        flow = TVNet.from_preset("tvl1-half", coarsest_side=side, median=0).predict(f0, f1)[0, :, :, 100:-100]
        err[side] = float((flow - torch.tensor([-48.0, 0.0])[:, None, None]).norm(dim=0).mean())
    assert err[48] < 0.5 and err[0] > 5, err


def test_median_option_is_checked():
    assert preset_config("tvl1-half").median == 5 and preset_config("tvl1-fast").median == 0
    for bad in (2, 4, 9, -1):
        with pytest.raises(TVNetError, match="median must be 0"):
            TVNetConfig(median=bad)
