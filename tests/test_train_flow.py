"""Training TVNet on flow: paper Table 1 behaviour on generated pairs with exact flow (training
pairs and pairs it never saw), validation-based model selection, trainable TV-L1 scalars, flip/transpose
augmentation, resume, unsupervised video training, the saved file and the loss curve."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import VIDEOS
from synthetic import PAIRS, flow_pair, write_chairs, write_middlebury
from tvnet_cli.cli import main
from tvnet_cli.errors import TVNetError
from tvnet_cli.data.pairs import crop_flip, pair_tensors
from tvnet_cli.io.datasets import find_pairs, load_pair
from tvnet_cli.model import TVNet, ops
from tvnet_cli.train.flow import TrainFlowConfig, checkpoint_path, train_flow


@pytest.fixture(scope="module")
def chairs(tmp_path_factory) -> Path:
    """Three generated pairs (different motions, exact flow) in the FlyingChairs layout."""
    return write_chairs(tmp_path_factory.mktemp("data") / "chairs", size=(80, 104))


def test_training_halves_epe_on_training_pair(chairs: Path, tmp_path: Path) -> None:
    """Table 1: TVNet-50 trained on a ground-truth pair (EPE loss) at least halves its EPE there.

    A small pair keeps CI fast; u0 gets a larger step (pixels) than the filters (taps of
    about 1), which Adam otherwise pushes too far.
    """
    cfg = TrainFlowConfig(data=str(chairs), pairs=("00000",), scale=1.0, init="tvnet-50",
                          train="all", lr=0.05, u0_lr=0.4, steps=80, checkpoint_every=1000)
    res = train_flow(cfg, tmp_path / "t50.pt")
    before, after = res.before["train"]["epe"], res.after["train"]["epe"]
    assert after <= 0.5 * before, (before, after)

    # the file records config, data, steps and EPE; `tvnet epe --weights` takes it
    model = TVNet.from_file(tmp_path / "t50.pt")
    assert model.config.iters == 50 and model.meta["steps"] == 80
    assert model.meta["train_config"]["data"] == str(chairs)
    assert model.meta["epe_after"]["train"]["epe"] == pytest.approx(after)
    png = Image.open(res.loss_png)
    assert png.size == (640, 360) and len(res.losses) == 80


def test_memorising_u0_hurts_unseen_pairs_and_keep_best_guards_them(chairs: Path, tmp_path: Path) -> None:
    """The other half of Table 1 on our data: u0 (a per-position initial flow) learns the training
    pair's motion, so on a pair it never saw the trained model gets worse; with a validation
    pair, `keep_best` saves the parameters with the lowest validation EPE instead of the last."""
    cfg = TrainFlowConfig(data=str(chairs), pairs=("00000",), scale=1.0, train="all", lr=0.05, u0_lr=0.4,
                          steps=30, checkpoint_every=1000, val_data=(str(chairs),), val_pairs=("00002",),
                          val_every=10)
    best = train_flow(cfg, tmp_path / "best.pt")
    # the loss is the training pair's EPE at each step: it falls ...
    assert np.mean(best.losses[-5:]) < 0.8 * best.before["train"]["epe"]
    # ... while the last parameters are worse than untrained on the pair the model never trained on
    curve = dict(best.val_curve)
    assert sorted(curve) == [10, 20, 30] and curve[30] > 1.05 * best.before["val"]["epe"]
    lowest = min([best.before["val"]["epe"], *curve.values()])
    assert best.after["val"]["epe"] == pytest.approx(lowest, rel=1e-6)
    assert best.after["val"]["epe"] <= best.before["val"]["epe"]  # not worse than untrained
    saved = TVNet.from_file(tmp_path / "best.pt")
    assert saved.meta["best_step"] == best.best_step and saved.meta["epe_after"]["val"]["epe"] == pytest.approx(lowest)


def test_trainable_scalars_move_fold_into_config_and_reload(chairs: Path, tmp_path: Path) -> None:
    """`--train scalars` trains only tau/lambda/theta (log-multipliers); the file stores them as the
    config's values, reloads to the same flow, and old weights files still load."""
    model = TVNet.from_preset("tvnet-50")
    model.set_trainable("scalars")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "log_scalars.tau", "log_scalars.lam", "log_scalars.theta"}
    assert model.solver_scalars() == (0.25, 0.15, 0.3)  # untrained: exactly the config's floats
    cfg = TrainFlowConfig(data=str(chairs), pairs=("00001",), scale=1.0, train="scalars",
                          lr=0.05, steps=12, checkpoint_every=1000)
    res = train_flow(cfg, tmp_path / "s.pt")
    assert res.after["train"]["epe"] < res.before["train"]["epe"]
    trained = TVNet.from_file(tmp_path / "s.pt")
    c = trained.config
    assert all(abs(getattr(c, k) / v - 1) > 1e-3 for k, v in (("tau", 0.25), ("lam", 0.15), ("theta", 0.3)))
    assert torch.equal(trained.u0, torch.zeros_like(trained.u0))  # nothing else trained
    torch.testing.assert_close(trained.centred_taps, TVNet().centred_taps)
    d = load_pair(find_pairs(chairs, require_gt=True)[1][1])
    f0, f1, gt, valid = pair_tensors(d, 1.0)
    epe = float(((trained.predict(f0, f1) - gt).norm(dim=1) * valid[:, 0]).sum() / valid.sum())
    assert epe == pytest.approx(res.after["train"]["epe"], rel=1e-5)
    assert TVNet.from_file(tmp_path / "s.pt", theta=0.3).config.theta == 0.3  # overrides still apply
    TVNet.from_preset("tvnet-50-trained")  # a weights file written before scalars trained
    with pytest.raises(TVNetError, match="scalars"):
        model.set_trainable("filters+lambda")


def test_flip_and_transpose_keep_ground_truth_consistent(chairs: Path) -> None:
    """Each of the 8 flips/transposes moves frames and flow together: warping the transformed
    frame 1 by the transformed flow matches the transformed frame 0 exactly as well as before."""
    d = load_pair(find_pairs(chairs, require_gt=True)[1][1])
    f0, f1, gt, valid = pair_tensors(d, 1.0)

    def photo_error(a: torch.Tensor, b: torch.Tensor, flow: torch.Tensor) -> float:
        return float((ops.warp(b, flow) - a).abs().mean())

    ref = photo_error(f0, f1, gt)
    assert ref < 0.6 * photo_error(f0, f1, torch.zeros_like(gt))  # the flow explains the motion
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        a, b, g, v = crop_flip([f0, f1, gt, valid], gen, 2, flip=True, transpose=True)
        seen.add((tuple(a.shape), a[0, 0, 0, 0].item(), a[0, 0, -1, 0].item(), a[0, 0, 0, -1].item()))
        assert photo_error(a, b, g) == pytest.approx(ref, rel=1e-4)
    assert len(seen) == 8


def test_resume_equals_uninterrupted(chairs: Path, tmp_path: Path) -> None:
    base = dict(data=str(chairs), pairs=("00001",), scale=0.5, crop=(24, 32), flip=True,
                train="all", lr=0.01, u0_lr=0.1, checkpoint_every=2)
    train_flow(TrainFlowConfig(**base, steps=5), tmp_path / "full.pt")
    train_flow(TrainFlowConfig(**base, steps=2), tmp_path / "part.pt")
    (tmp_path / "part.pt.ckpt").rename(tmp_path / "resumed.pt.ckpt")
    res = train_flow(TrainFlowConfig(**base, steps=5), tmp_path / "resumed.pt", resume=True)
    assert len(res.losses) == 5
    a = TVNet.from_file(tmp_path / "full.pt").state_dict()
    b = TVNet.from_file(tmp_path / "resumed.pt").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    with pytest.raises(TVNetError, match="different"):
        train_flow(TrainFlowConfig(**{**base, "train": "u0"}, steps=6), tmp_path / "resumed.pt", resume=True)
    # the one checkpoint rule (train/scaffold.py): no checkpoint + --resume starts afresh,
    # an existing checkpoint without --resume is an error
    res = train_flow(TrainFlowConfig(**base, steps=2), tmp_path / "other.pt", resume=True)
    assert len(res.losses) == 2
    with pytest.raises(TVNetError, match="a checkpoint exists"):
        train_flow(TrainFlowConfig(**base, steps=2), tmp_path / "other.pt")


def test_unsupervised_on_video_cli(tmp_path: Path) -> None:
    """`tvnet train --unsupervised VIDEOS` trains without ground truth; `tvnet epe --weights` loads it."""
    out = tmp_path / "unsup.pt"
    val = write_chairs(tmp_path / "val", size=(64, 96), names=("00002",))
    res = CliRunner().invoke(main, [
        "train", "--unsupervised", str(VIDEOS / "test.avi"), "--out", str(out), "--train", "u0",
        "--lr", "0.05", "--steps", "6", "--video-frames", "4", "--video-size", "48x64", "--val", str(val),
        "--val-every", "3", "--smooth-sigma", "0.8", "--keep-last"])
    assert res.exit_code == 0, res.output
    model = TVNet.from_file(out)
    assert model.meta["train_config"]["unsupervised"] and model.meta["epe_after"]["val"]["epe"] > 0
    assert model.config.smooth_sigma == 0.8
    assert out.with_name("unsup.loss.png").is_file() and checkpoint_path(out).is_file()
    assert model.u0.abs().sum() > 0  # it trained
    r = CliRunner().invoke(main, ["epe", str(val), "--weights", str(out), "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    epe = json.loads((tmp_path / "e.json").read_text())["mean"]["epe"]
    assert epe == pytest.approx(model.meta["epe_after"]["val"]["epe"], rel=1e-4)


def test_train_errors(tmp_path: Path) -> None:
    write_middlebury(tmp_path / "mb", "Grove3")
    write_middlebury(tmp_path / "mb", "Venus", gt=False)
    r = CliRunner().invoke(main, ["train", str(tmp_path / "mb"), "--out", str(tmp_path / "x.pt"),
                                  "--pairs", "Venus"])
    assert r.exit_code == 1 and "Venus" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")])
    assert r.exit_code == 1 and "not found" in r.output
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "x.pt")])
    assert r.exit_code == 2
    with pytest.raises(TVNetError, match="--train"):
        TrainFlowConfig(data="x", train="everything")


def test_large_dataset_read_lazily_and_eval_limited(tmp_path: Path) -> None:
    """A Sintel-layout set of 17 pairs (more than are kept in memory): training reads pairs per
    step, and before/after EPE covers `eval_limit` evenly spaced pairs."""
    from tvnet_cli.io.flowio import write_flo

    *img, gt = flow_pair(48, 64, PAIRS["00001"])  # (48, 64, 3) x 2, (48, 64, 2)
    scene = tmp_path / "sintel/training/clean/chairs_1"
    (tmp_path / "sintel/training/flow/chairs_1").mkdir(parents=True)
    scene.mkdir(parents=True)
    for i in range(18):
        Image.fromarray(img[i % 2]).save(scene / f"frame_{i + 1:04d}.png")
        if i < 17:
            write_flo(tmp_path / f"sintel/training/flow/chairs_1/frame_{i + 1:04d}.flo", gt if i % 2 == 0 else -gt)
    cfg = TrainFlowConfig(data=str(tmp_path / "sintel"), steps=2, eval_limit=3, lr=0.01, crop=(32, 32))
    res = train_flow(cfg, tmp_path / "s.pt")
    assert list(res.before["train"]["per_pair"]) == ["chairs_1/frame_0001", "chairs_1/frame_0009",
                                                     "chairs_1/frame_0017"]
    assert res.after["train"]["valid"] == 3 * 48 * 64


@pytest.mark.parametrize("train", ["filters+scalars", "all"])
def test_coarse_levels_without_autograd_give_the_same_gradients(train: str) -> None:
    """`grad_levels=k`: the levels coarser than the k finest run without autograd when nothing
    that trains reaches them; the k finest levels' gradients equal those of the full backward
    pass, the coarser rows are zero. With u0 training (`all`) nothing is cut off."""
    g = torch.Generator().manual_seed(3)
    f0 = torch.randint(0, 256, (1, 1, 40, 56), generator=g, dtype=torch.uint8)
    f1 = torch.roll(f0, (1, 2), (2, 3))
    base = TVNet.from_preset("tvnet-3-2-4").split_levels()
    grads = {}
    for k in (0, 1):
        model = copy.deepcopy(base)
        model.set_trainable(train)
        model.grad_levels = k
        model(f0, f1).square().mean().backward()
        grads[k] = [p.grad.clone() for p in (*model.filter_parameters(), *model.scalar_parameters())]
    for full, cut in zip(grads[0], grads[1]):
        torch.testing.assert_close(cut[:1], full[:1], rtol=1e-5, atol=1e-7)
        assert full[1:].abs().sum() > 0  # the coarser levels have gradients of their own ...
        if train == "all":
            torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-7)
        else:
            assert torch.all(cut[1:] == 0)  # ... which a cut-off backward pass does not compute
