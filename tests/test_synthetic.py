"""Synthetic pairs (`tvnet_cli.data.synthetic`): the flow is exact by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvnet_cli.data.synthetic import KINDS, Layer, make_pairs, procedural_texture, render, similarity
from tvnet_cli.model import ops


@pytest.fixture(scope="module")
def textures() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [procedural_texture((200, 260), rng) for _ in range(2)]


def test_integer_translation_is_a_shift(textures):
    tex = textures[0]
    pair = render([Layer(tex, None, similarity(1, 0, 20, 10), similarity(1, 0, 5, -3))], (64, 80))
    assert np.allclose(pair.gt[..., 0], 5) and np.allclose(pair.gt[..., 1], -3)
    # frame1(x + (5, -3)) == frame0(x): compare by array slicing, not by a warp
    assert np.array_equal(pair.frame1[:-3, 5:], pair.frame0[3:, :-5])
    assert np.array_equal(pair.frame0, np.round(tex[10:74, 20:100]).astype(np.uint8))
    # pixels that leave the canvas are not valid: the last 5 columns and the first 3 rows
    expected = np.zeros((64, 80), bool)
    expected[3:, :-5] = True
    assert np.array_equal(pair.valid, expected)


def test_foreground_occludes_and_carries_its_own_flow(textures):
    back, front = textures
    alpha = np.zeros(front.shape[:2], np.float32)
    alpha[40:60, 50:80] = 1  # a 20 x 30 box, placed at canvas (x 10..39, y 20..39)
    layers = [Layer(back, None, np.eye(3), np.eye(3)),
              Layer(front, alpha, similarity(1, 0, 40, 20), similarity(1, 0, 12, 4))]
    pair = render(layers, (64, 96))
    inside = np.zeros((64, 96), bool)
    inside[20:40, 10:40] = True
    assert np.allclose(pair.gt[inside], (12, 4)) and np.allclose(pair.gt[~inside], 0)
    assert np.array_equal(pair.frame1[24:44, 22:52], pair.frame0[20:40, 10:40])  # the box moved
    uncovered = np.zeros((64, 96), bool)  # background that the box hid in frame 1 only
    uncovered[24:44, 40:52] = True
    assert np.array_equal(pair.frame0[uncovered], np.round(back[24:44, 40:52]).reshape(-1, 3).astype(np.uint8))


@pytest.mark.parametrize("kind", KINDS)
def test_scenes_are_reproducible_and_their_flow_explains_the_frames(kind, textures):
    a, b = make_pairs(kind, textures, 1, size=(96, 128), seed=5), make_pairs(kind, textures, 1, size=(96, 128), seed=5)
    pair = a[0]
    assert np.array_equal(pair.frame0, b[0].frame0) and np.array_equal(pair.gt, b[0].gt)
    assert pair.frame0.shape == (96, 128, 3) and pair.frame0.dtype == np.uint8 and pair.gt.shape == (96, 128, 2)
    f0, f1 = (torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in (pair.frame0, pair.frame1))
    gt = torch.from_numpy(pair.gt).permute(2, 0, 1)[None]
    # correlation (blind to the lighting change) of frame 0 with frame 1 warped back by the flow
    a = f0[0].numpy()[:, pair.valid].ravel()
    by_gt = np.corrcoef(a, ops.warp(f1, gt, "bicubic")[0].numpy()[:, pair.valid].ravel())[0, 1]
    unmoved = np.corrcoef(a, f1[0].numpy()[:, pair.valid].ravel())[0, 1]
    assert by_gt > 0.9 and 1 - by_gt < 0.5 * (1 - unmoved)


def test_make_flow_data_writes_a_chairs_dataset_that_train_and_epe_read(tmp_path):
    """The command writes FlyingChairs-layout files whose frames and flow read back as the
    generator made them (unknown where the flow leaves the frame), the same for the same seed,
    and `train` (per level) and `epe` run on them."""
    from click.testing import CliRunner

    from tvnet_cli.cli import main
    from tvnet_cli.data.synthetic import training_textures
    from tvnet_cli.io.datasets import find_pairs, load_pair
    from tvnet_cli.train.flow import TrainFlowConfig, train_flow

    args = ["--per-kind", "1", "--kinds", "driving,small", "--size", "48x64", "--procedural", "2", "--seed", "4"]
    for name in ("a", "b"):
        res = CliRunner().invoke(main, ["make-flow-data", str(tmp_path / name), *args])
        assert res.exit_code == 0, res.output
    layout, pairs = find_pairs(tmp_path / "a", require_gt=True)
    assert layout == "chairs" and len(pairs) == 2
    for p in pairs:
        assert (tmp_path / "a" / p.gt.name).read_bytes() == (tmp_path / "b" / p.gt.name).read_bytes()
    tex = training_textures((), 2, seed=4)
    expected = make_pairs("driving", tex, 1, size=(48, 64), seed=4)[0]  # first kind, first pair
    got = load_pair(pairs[0])
    assert np.array_equal(got.frame0, expected.frame0) and np.array_equal(got.frame1, expected.frame1)
    assert np.array_equal(got.valid, expected.valid) and not expected.valid.all()  # expansion leaves the frame
    assert np.allclose(got.gt[got.valid], expected.gt[expected.valid])

    bad = CliRunner().invoke(main, ["make-flow-data", str(tmp_path / "c"), "--kinds", "moon"])
    assert bad.exit_code != 0 and "--kinds must be among" in bad.output and "Traceback" not in bad.output

    from tvnet_cli import TVNet

    cfg = TrainFlowConfig(data=str(tmp_path / "a"), init="tvnet-2-1-3", per_level=True, train="filters+scalars",
                          steps=3, lr=0.05, val_every=1, keep_best=False)
    model = TVNet.from_file(train_flow(cfg, tmp_path / "w.pt").weights)
    assert model.config.per_level and model.centred_taps.shape == (2, 2, 3)
    assert not torch.equal(model.centred_taps[0], model.centred_taps[1])  # the levels trained apart
    # --train-levels 1: only the finest level's parameters move
    one = TVNet.from_file(train_flow(cfg.replace(train_levels=1), tmp_path / "w1.pt").weights)
    untrained = TVNet(one.config)
    assert not torch.equal(one.centred_taps[0], untrained.centred_taps[0])
    assert torch.equal(one.centred_taps[1], untrained.centred_taps[1])
    assert one.log_scalars["lam"][1].item() == 0.0 and one.log_scalars["lam"][0].item() != 0.0
