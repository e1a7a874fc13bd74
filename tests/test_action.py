"""End-to-end action training on a generated motion-only dataset (real PyAV videos of
procedural textures): gradients reach TVNet, exact resume, flow learns / RGB does not,
the CLI commands."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from tvnet_cli.cli import main
from tvnet_cli.errors import TVNetError
from tvnet_cli.data.clips import ClipDataset, batch_plan
from tvnet_cli.io.splits import parse_ucf101
from tvnet_cli.io.video import read_frames, read_frames_at
from tvnet_cli.model import TVNet
from tvnet_cli.toy_actions import ToyConfig, make_toy_actions
from tvnet_cli.train.action import (ActionTrainConfig, build_model, evaluate_action, load_checkpoint, load_split,
                                    train_action)

TOY = ToyConfig(size=(40, 40), frames=8, seed=0)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "UCF-toy"
    counts = make_toy_actions(out, TOY)  # procedural textures
    assert counts == {"classes": 4, "train": 32, "test": 16}
    return out


def toy_config(root: Path, out: Path, **kw) -> ActionTrainConfig:
    """Small CPU settings for the toy set: TVNet-3-1-10 on stacks of 3 frames (2 flow fields),
    ResNet-10 of width 16, 24x24 input cut from frames decoded at 32x32."""
    base = dict(dataset="ucf101", root=str(root), out=str(out), tvnet="tvnet-3-1-10", depth=10, width=16,
                dropout=0.0, frame_size=(32, 32), input_size=24, length=3, flip=False, batch=8, lr=0.01,
                steps=40, lr_steps=(30,), workers=0, cache_videos=64, checkpoint_every=20, log_every=5,
                test_segments=3, flow_bound=2.0)
    base.update(kw)
    return ActionTrainConfig(**base)


def test_toy_dataset_layout_and_motion(toy):
    ann = toy / "ucfTrainTestlist"
    assert (ann / "classInd.txt").read_text().splitlines()[0] == "1 MoveRight"
    split = parse_ucf101(ann, 1)
    assert split.classes == ("MoveRight", "MoveLeft", "MoveDown", "MoveUp")
    assert split.test[0].path == "MoveRight/v_MoveRight_g01_c01.avi"
    assert {p.path.split("_g")[1][:2] for p in split.test} == {"01", "02"}  # split by group
    assert {p.path.split("_g")[1][:2] for p in split.train} == {"03", "04", "05", "06"}
    tvnet = TVNet.from_preset("tvnet-3-1-10")
    expect = {"MoveRight": (1, 0), "MoveLeft": (-1, 0), "MoveDown": (0, 1), "MoveUp": (0, -1)}
    for cls, (sx, sy) in expect.items():
        frames = read_frames(toy / cls / f"v_{cls}_g03_c01.avi")
        assert frames.shape == (8, 40, 40, 3)
        f = torch.from_numpy(frames).permute(0, 3, 1, 2)
        u, v = tvnet.predict(f[:-1], f[1:])[:, :, 6:-6, 6:-6].mean(dim=(0, 2, 3)).tolist()
        main_axis, other = (u, v) if sx else (v, u)
        assert main_axis * (sx or sy) > 1.0 and abs(other) < 0.5, (cls, u, v)


def _batch(cfg: ActionTrainConfig, step: int = 0):
    _, train, _ = load_split(cfg)
    ds = ClipDataset(Path(cfg.root), train, cfg.clip_spec)
    samples = [ds[k] for k in batch_plan(len(train), cfg.batch, step, cfg.seed)]
    return torch.stack([c for c, _ in samples]), torch.tensor([y for _, y in samples])


def test_gradients_reach_tvnet(toy, tmp_path):
    cfg = toy_config(toy, tmp_path, tvnet="tvnet-1-1-5", batch=4)
    clips, labels = _batch(cfg)
    assert clips.shape == (4, 1, 3, 3, 24, 24) and clips.dtype == torch.uint8
    model = build_model(cfg, 4)
    logits, energy = model(clips)
    assert logits.shape == (4, 4) and energy.ndim == 0
    names = ("centred_taps", "forward_taps", "backward_taps", "u0")
    # the classification loss alone reaches every TVNet parameter
    F.cross_entropy(logits, labels).backward(retain_graph=True)
    for n in names:
        g = getattr(model.tvnet, n).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, n
    # the flow loss L_f alone moves TVNet's parameters
    model.zero_grad()
    energy.backward()
    before = {n: getattr(model.tvnet, n).detach().clone() for n in names}
    assert model.flow_net.fc.weight.grad is None  # L_f does not touch the classifier
    torch.optim.SGD(model.tvnet.parameters(), lr=1e-3).step()
    changed = [n for n in names if not torch.equal(before[n], getattr(model.tvnet, n))]
    assert {"centred_taps", "forward_taps", "backward_taps"} <= set(changed)
    # frozen: nothing of TVNet trains; two streams: both classifiers, same output shape
    frozen = build_model(cfg.replace(freeze_tvnet=True), 4)
    assert not any(p.requires_grad for p in frozen.tvnet.parameters())
    two = build_model(cfg.replace(modality="two-stream"), 4)
    assert two(clips)[0].shape == (4, 4) and two.rgb_net is not None and two.flow_net is not None


def test_checkpointed_tvnet_gives_same_gradients(toy, tmp_path):
    cfg = toy_config(toy, tmp_path, tvnet="tvnet-1-1-5", batch=2, width=4, input_size=24)
    clips, labels = _batch(cfg)
    grads = []
    for pairs in (0, 2):
        torch.manual_seed(0)
        model = build_model(cfg.replace(checkpoint_pairs=pairs), 4)
        logits, energy = model(clips)
        (F.cross_entropy(logits, labels) + 0.1 * energy).backward()
        grads.append([p.grad.clone() for p in model.tvnet.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_resume_is_exact(toy, tmp_path):
    cfg = toy_config(toy, tmp_path / "straight", tvnet="tvnet-1-1-5", batch=4, steps=4, lr_steps=(3,),
                     input_size=24, width=4, flip=True, dropout=0.3, checkpoint_every=2, log_every=1)
    straight = train_action(cfg)
    half = cfg.replace(out=str(tmp_path / "resumed"), steps=2)
    train_action(half)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 2
    with pytest.raises(TVNetError, match="pass --resume"):
        train_action(half)
    with pytest.raises(TVNetError, match="different settings"):
        train_action(half.replace(steps=4, lr=0.1), resume=True)
    resumed = train_action(half.replace(steps=4), resume=True)
    assert resumed["loss"] == straight["loss"]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    log_a = (tmp_path / "straight" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    strip = [lambda rows: [r.rsplit(",", 1)[0] for r in rows]][0]  # drop sec_per_step
    assert strip(log_a) == strip(log_b) and len(log_a) == 5


@pytest.mark.slow
def test_toy_flow_learns_rgb_does_not(toy, tmp_path):
    flow = train_action(toy_config(toy, tmp_path / "flow"))
    res = evaluate_action(flow["checkpoint"])
    assert res["videos"] == 16
    assert res["top1"] >= 0.9, res["confusion"]
    for f in ("log.csv", "curve.png", "train.json", "eval.json", "confusion.png", "tvnet.pt"):
        assert (tmp_path / "flow" / f).is_file(), f
    trained = TVNet.from_file(tmp_path / "flow" / "tvnet.pt")  # usable by `tvnet extract --weights`
    assert not torch.equal(trained.centred_taps, TVNet.from_preset("tvnet-3-1-10").centred_taps)
    rgb = train_action(toy_config(toy, tmp_path / "rgb", modality="rgb"))
    res_rgb = evaluate_action(rgb["checkpoint"])
    assert res_rgb["top1"] <= 0.5, res_rgb["confusion"]


def test_cli_commands(toy, tmp_path):
    runner = CliRunner()
    for cmd in ("train-action", "eval-action", "make-toy-actions"):
        r = runner.invoke(main, [cmd, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output
    small = tmp_path / "small"
    r = runner.invoke(main, ["make-toy-actions", str(small), "--size", "24", "24", "--frames", "4",
                             "--groups", "3", "--clips", "1", "--test-groups", "1", "--classes", "MoveRight,RotateCW"])
    assert r.exit_code == 0, r.output
    assert "2 classes, 4 training and 2 test videos" in r.output
    out = tmp_path / "run"
    args = ["train-action", "--root", str(small), "--out", str(out), "--preset", "tvnet-1-1-2", "--depth", "10",
            "--width", "4", "--frame-size", "24", "24", "--input-size", "16", "--length", "3", "--batch", "2",
            "--steps", "2", "--workers", "0", "--test-segments", "2", "--test-crops", "10", "--log-every", "1"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "top-1" in r.output and (out / "confusion.png").is_file() and (out / "curve.png").is_file()
    r = runner.invoke(main, ["eval-action", str(out / "checkpoint.pt"), "--segments", "2", "--workers", "0",
                             "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ev" / "eval.json").is_file()
    # a missing video is reported by name, not dropped
    (small / "RotateCW" / "v_RotateCW_g02_c01.avi").unlink()
    r = runner.invoke(main, args[:3] + ["--out", str(tmp_path / "run2")] + args[5:])
    assert r.exit_code == 1
    assert "Error:" in r.output and "RotateCW/v_RotateCW_g02_c01.avi" in r.output
    r = runner.invoke(main, ["eval-action", str(tmp_path / "nope.pt")])
    assert r.exit_code == 1 and "checkpoint not found" in r.output


def test_torchrun_two_cpu_processes(toy, tmp_path):
    """DDP on the gloo backend: two ranks split each global batch; rank 0 alone reports,
    saves the checkpoint and evaluates."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tvnet_cli", "train-action", "--root", str(toy), "--out", str(out), "--preset", "tvnet-1-1-2",
           "--depth", "10", "--width", "4", "--frame-size", "24", "24", "--input-size", "16", "--length", "3",
           "--batch", "4", "--steps", "3", "--workers", "0", "--test-segments", "2", "--log-every", "1",
           "--device", "cpu", "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("trained 3 steps") == 1 and r.stdout.count("top-1") == 1
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 3
    assert len((out / "log.csv").read_text().splitlines()) == 1 + 3


def test_sampling_decodes_only_what_it_needs(toy):
    """Without a cache, stacks come from decoding up to the last frame needed; they must be
    the very frames (and the same random draws) of decoding the whole video."""
    split = parse_ucf101(toy / "ucfTrainTestlist", 1)
    cfg = toy_config(toy, Path("/nonexistent"), flip=True, segments=2)
    lazy = ClipDataset(toy, split.train, cfg.clip_spec, cache=0)
    whole = ClipDataset(toy, split.train, lazy.spec, cache=64)
    for i, seed in [(0, 1), (5, 2), (17, 3), (31, None)]:
        a, la = lazy[(i, seed)]
        b, lb = whole[(i, seed)]
        assert la == lb and torch.equal(a, b)
    assert torch.equal(lazy.test_views(3, 3, 1), whole.test_views(3, 3, 1))
    path = toy / split.train[0].path
    full = read_frames(path)
    torch.testing.assert_close(torch.from_numpy(read_frames_at(path, [5, 1, 5], None)),
                               torch.from_numpy(full[[5, 1, 5]]))
    assert read_frames_at(path, [0, len(full)], None) is None  # past the end


def test_sampling_when_the_header_promises_a_frame_too_many(tmp_path):
    """A real AVI cut short by its last frame: the header says 8, 7 decode (within the
    truncation slack). A sample that needs frame 7 falls back to the whole video and draws
    again from the same random state, so it equals sampling the fully decoded video."""
    from tvnet_cli.data.clips import ClipSpec
    from tvnet_cli.io.splits import VideoItem
    from tvnet_cli.io.video import probe, write_video

    rng = np.random.default_rng(0)
    full = write_video(tmp_path / "full.avi", [(rng.random((40, 40, 3)) * 255).astype(np.uint8) for _ in range(8)])
    data = full.read_bytes()
    cut = tmp_path / "v" / "cut.avi"
    cut.parent.mkdir()
    cut.write_bytes(data[:data[:data.find(b"idx1")].rfind(b"00dc")])  # drop the last frame's chunk
    assert probe(cut).header_frames == 8 and len(read_frames(cut)) == 7
    spec = ClipSpec(frame_size=(40, 40), input_size=24, length=3, segments=1, flip=False)
    lazy = ClipDataset(tmp_path / "v", (VideoItem("cut.avi", 0),), spec, cache=0)
    whole = ClipDataset(tmp_path / "v", (VideoItem("cut.avi", 0),), spec, cache=1)
    hits_end = [s for s in range(40) if np.random.default_rng(s).integers(6) == 5]  # start 5: frames 5-7
    assert hits_end
    for seed in hits_end[:3]:
        torch.testing.assert_close(lazy[(0, seed)][0], whole[(0, seed)][0], rtol=0, atol=0)
