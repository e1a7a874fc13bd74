"""The one runtime: model spec -> TVNet, device resolution (options, torchrun, machine),
scoped device + threads; and the commands that use it (`--device` on epe/train/extract)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synthetic import PAIRS, write_chairs, write_middlebury
from tvnet_cli.cli import main
from tvnet_cli.commands.common import BACKEND_CHOICES
from tvnet_cli.errors import TVNetError
from tvnet_cli.model import TVNet
from tvnet_cli.model.presets import shipped_weights
from tvnet_cli.model.tvnet import TVNetConfig
from tvnet_cli.runtime import BACKENDS, DistEnv, Machine, cpu_share, load_model, on_device, resolve_devices

CPU = torch.device("cpu")
BAD_CUDA = f"cuda:{max(1, torch.cuda.device_count())}"  # cuda:1 here; absent on any machine
TWO_GPUS = Machine(cuda=2)
NO_GPU = Machine()


def cuda(i: int) -> torch.device:
    return torch.device("cuda", i)


# -- torchrun environment --------------------------------------------------------------------
def test_dist_env_parsed_from_torchrun_variables() -> None:
    assert DistEnv.from_env({}) == DistEnv(0, 1, None) and not DistEnv.from_env({}).distributed
    env = DistEnv.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.distributed) == (3, 4, 1, True)
    for bad, msg in (({"RANK": "a", "WORLD_SIZE": "2"}, "RANK='a' is not a number"),
                     ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is outside WORLD_SIZE=2"),
                     ({"WORLD_SIZE": "0"}, "outside WORLD_SIZE=0"),
                     ({"LOCAL_RANK": "-1"}, "LOCAL_RANK=-1 is negative"),
                     ({"LOCAL_RANK": "x1"}, "LOCAL_RANK='x1'")):
        with pytest.raises(TVNetError, match=msg):
            DistEnv.from_env(bad)


# -- devices ------------------------------------------------------------------------------------
def test_default_device_is_cuda0_or_local_rank_where_cuda_else_cpu() -> None:
    for device in (None, "auto", "AUTO", ""):
        assert resolve_devices(device, None, DistEnv(), NO_GPU) == (CPU,)
        assert resolve_devices(device, None, DistEnv(), TWO_GPUS) == (cuda(0),)
        assert resolve_devices(device, None, DistEnv(1, 2, 1), TWO_GPUS) == (cuda(1),)
        assert resolve_devices(device, None, DistEnv(1, 2, 1), NO_GPU) == (CPU,)  # gloo ranks on the CPU
    with pytest.raises(TVNetError, match="LOCAL_RANK=2 but this machine has cpu, cuda:0, cuda:1"):
        resolve_devices("auto", None, DistEnv(2, 3, 2), TWO_GPUS)


def test_explicit_devices() -> None:
    assert resolve_devices("cpu", None, DistEnv(1, 2, 1), TWO_GPUS) == (CPU,)
    assert resolve_devices("cuda", None, DistEnv(), TWO_GPUS) == (cuda(0),)
    assert resolve_devices("cuda", None, DistEnv(1, 2, 1), TWO_GPUS) == (cuda(1),)
    assert resolve_devices("cuda:1", None, DistEnv(), TWO_GPUS) == (cuda(1),)
    assert resolve_devices(" CUDA:0 ", None, DistEnv(), TWO_GPUS) == (cuda(0),)
    assert resolve_devices("mps", None, DistEnv(), Machine(mps=True)) == (torch.device("mps"),)
    for device, machine, msg in (("cuda:2", TWO_GPUS, "--device cuda:2: no such device on this machine "
                                                      r"\(it has cpu, cuda:0, cuda:1\)"),
                                 ("cuda:1", NO_GPU, r"--device cuda:1: no such device .*\(it has cpu\)"),
                                 ("cuda", NO_GPU, r"--device cuda: no CUDA device on this machine \(it has cpu\)"),
                                 ("mps", NO_GPU, "--device mps: no such device"),
                                 ("gpu7", TWO_GPUS, "--device 'gpu7': not a device; use auto, cpu, cuda"),
                                 ("cuda:x", TWO_GPUS, "not a device"),
                                 ("cpu:1", TWO_GPUS, "no such device")):
        with pytest.raises(TVNetError, match=msg):
            resolve_devices(device, None, DistEnv(), machine)


def test_gpus_option() -> None:
    assert resolve_devices(None, "0,1", DistEnv(), TWO_GPUS) == (cuda(0), cuda(1))
    assert resolve_devices("auto", "1,1, 0", DistEnv(), TWO_GPUS) == (cuda(1), cuda(0))  # duplicates dropped
    assert resolve_devices(None, "1", DistEnv(0, 2, 0), TWO_GPUS) == (cuda(1),)  # explicit beats LOCAL_RANK
    assert resolve_devices(None, "", DistEnv(), TWO_GPUS) == (CPU,)
    assert resolve_devices(None, "cpu", DistEnv(), TWO_GPUS) == (CPU,)
    with pytest.raises(TVNetError, match=r"--gpus 0,2: GPU 2 not available \(this machine has cpu, cuda:0, cuda:1\)"):
        resolve_devices(None, "0,2", DistEnv(), TWO_GPUS)
    with pytest.raises(TVNetError, match="--gpus must be a list like 0,1"):
        resolve_devices(None, "a", DistEnv(), TWO_GPUS)
    with pytest.raises(TVNetError, match="give --device or --gpus, not both"):
        resolve_devices("cpu", "0", DistEnv(), TWO_GPUS)


def test_this_machine() -> None:
    """Without a Machine: what torch sees here; the default is cuda:0 exactly where CUDA is."""
    n = torch.cuda.device_count()
    assert Machine.here().cuda == n
    assert resolve_devices(None, None, DistEnv()) == ((cuda(0),) if n else (CPU,))
    with pytest.raises(TVNetError, match=f"--device {BAD_CUDA}: no such device"):
        resolve_devices(BAD_CUDA)


# -- binding ------------------------------------------------------------------------------------
def test_on_device_sets_and_restores_threads() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with on_device("cpu", 1) as dev:
            assert dev == CPU and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
        with on_device(CPU):  # no threads given: torch's setting stays
            assert torch.get_num_threads() == 3
        with pytest.raises(RuntimeError, match="boom"):
            with on_device("cpu", 2):
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_cpu_share() -> None:
    assert [cpu_share(n, cores=16) for n in (1, 2, 3, 4, 32)] == [16, 8, 5, 4, 1]
    assert cpu_share(0, cores=2) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_device_makes_the_cuda_device_current() -> None:
    last = torch.cuda.device_count() - 1
    before = torch.cuda.current_device()
    with on_device(cuda(last)):
        assert torch.cuda.current_device() == last
        assert torch.ones(1, device="cuda").device == cuda(last)  # "cuda" means the bound device
    assert torch.cuda.current_device() == before


# -- model spec -----------------------------------------------------------------------------------
def test_load_model_presets_and_overrides() -> None:
    m = load_model("tvnet-3-1-10")
    assert isinstance(m, TVNet) and m.config == TVNetConfig(3, 1, 10)
    assert load_model("tvnet-2-3-4").config == TVNetConfig(2, 3, 4, smooth_sigma=0.0)  # several warps: no pre-smoothing
    assert load_model("tvl1").config == TVNetConfig(5, 5, 50, smooth_sigma=0.0)
    m = load_model("tvnet-3-1-10", {"iters": 7, "theta": 0.5, "scales": None})
    assert (m.config.scales, m.config.iters, m.config.theta) == (3, 7, 0.5)
    with pytest.raises(TVNetError, match="unknown preset 'nope'"):
        load_model("nope")
    with pytest.raises(TVNetError, match="unknown model settings colour"):
        load_model("tvnet-10", {"colour": 1})
    with pytest.raises(TVNetError, match="--backend must be one of auto, torch, c, triton, not 'cuda'"):
        load_model("tvnet-10", backend="cuda")
    assert BACKEND_CHOICES == BACKENDS  # the CLI's choices are the runtime's


def test_load_model_weights_files(tmp_path: Path) -> None:
    src = TVNet(TVNetConfig(2, 1, 5))
    with torch.no_grad():
        src.centred_taps.add_(0.25)
        src.u0.normal_()
    src.save(tmp_path / "m.pt")
    (tmp_path / "m.weights").write_bytes((tmp_path / "m.pt").read_bytes())  # an existing file, any suffix
    for spec in (tmp_path / "m.pt", str(tmp_path / "m.weights")):
        m = load_model(spec, {"iters": 9})
        assert m.config == TVNetConfig(2, 1, 9)
        assert torch.equal(m.centred_taps, src.centred_taps) and torch.equal(m.u0, src.u0)
    with pytest.raises(TVNetError, match="gone.pt: TVNet weights file not found"):
        load_model(tmp_path / "gone.pt")
    with pytest.raises(TVNetError, match="not a TVNet weights file"):
        (tmp_path / "junk.pt").write_text("junk")
        load_model(tmp_path / "junk.pt")


def test_load_model_shipped_weights_by_name() -> None:
    shipped = shipped_weights()
    if "tvnet-50-trained" not in shipped:
        pytest.skip("shipped weights not installed")
    raw = torch.load(shipped["tvnet-50-trained"], map_location="cpu", weights_only=True)  # read independently
    m = load_model("tvnet-50-trained")
    assert torch.equal(m.forward_taps.detach(), raw["state_dict"]["forward_taps"])
    assert m.config.iters == raw["config"]["iters"]


# -- commands ---------------------------------------------------------------------------------------
def read_flo(path: Path) -> np.ndarray:
    raw = np.fromfile(path, np.float32)
    w, h = raw[1:3].view(np.int32)
    return raw[3:].reshape(h, w, 2)


def test_epe_on_cpu_gives_numpy_epe_of_the_models_flow(tmp_path: Path) -> None:
    """`tvnet epe --device cpu` on generated FlyingChairs-layout pairs with exact flow: each
    pair's EPE is numpy's EPE of the model's own flow; torch's threads are left as they were."""
    chairs = write_chairs(tmp_path / "chairs")
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        r = CliRunner().invoke(main, ["epe", str(chairs), "--preset", "tvnet-3-1-10", "--device", "cpu",
                                      "--threads", "1", "--json", str(tmp_path / "r.json")])
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["device"] == "cpu"
    model = TVNet.from_preset("tvnet-3-1-10")
    for row, name in zip(res["rows"], sorted(PAIRS)):
        f0, f1 = (torch.from_numpy(np.array(Image.open(chairs / f"{name}_img{i}.ppm"))).permute(2, 0, 1)[None]
                  for i in (1, 2))
        flow = model.predict(f0, f1)[0].permute(1, 2, 0).numpy()
        epe = np.sqrt(((flow - read_flo(chairs / f"{name}_flow.flo")) ** 2).sum(-1)).mean()
        assert row["epe"] == pytest.approx(float(epe), rel=1e-4)
        assert row["epe"] < 1.0  # a small affine motion: TV-L1 gets it


def test_train_on_cpu(tmp_path: Path) -> None:
    """`tvnet train --device cpu`: a few steps on a generated Middlebury-layout pair, small
    crops; the weights it writes differ from the start and torch's threads are left as they were."""
    root = tmp_path / "mb"
    write_middlebury(root, "Gen")
    out = tmp_path / "w.pt"
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        r = CliRunner().invoke(main, ["train", str(root), "--pairs", "Gen", "--out", str(out),
                                      "--init", "tvnet-1-1-3", "--steps", "3", "--crop", "32x48",
                                      "--train", "filters", "--eval-limit", "1", "--device", "cpu",
                                      "--threads", "1"])
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    m = TVNet.from_file(out)
    assert m.meta["steps"] == 3 and m.meta["train_config"]["device"] == "cpu"
    assert not torch.equal(m.centred_taps, TVNet.from_preset("tvnet-1-1-3").centred_taps)


def test_extract_on_cpu_restores_threads(tmp_path: Path) -> None:
    from tvnet_cli.io.video import write_video

    rng = np.random.default_rng(0)
    tex = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).resize((70, 32)))
    clip = write_video(tmp_path / "c.avi", (tex[:, t:t + 64] for t in range(3)), "mpeg4")
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        r = CliRunner().invoke(main, ["extract", str(clip), "--out", str(tmp_path / "o"), "--device", "cpu",
                                      "--iters", "3", "--threads", "1", "--no-frames"])
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert sorted(p.name for p in (tmp_path / "o/c").glob("flow_x_*.jpg")) == ["flow_x_00001.jpg", "flow_x_00002.jpg"]


@pytest.mark.parametrize("args, option", [
    (["epe", "DATA", "--device", BAD_CUDA], "--device"),
    (["epe", "DATA", "--device", "gpu7"], "--device"),
    (["train", "DATA", "--out", "OUT/w.pt", "--device", BAD_CUDA], "--device"),
    (["extract", "DATA", "--out", "OUT", "--gpus", BAD_CUDA[5:]], "--gpus"),
    (["extract", "DATA", "--out", "OUT", "--device", BAD_CUDA], "--device"),
    (["extract", "DATA", "--out", "OUT", "--device", "cpu", "--gpus", "0"], "--gpus"),
    (["train-action", "--root", "DATA", "--out", "OUT", "--device", BAD_CUDA], "--device"),
    (["eval-action", "OUT/checkpoint.pt", "--device", BAD_CUDA], "--device"),
])
def test_missing_device_is_one_line_exit_2(tmp_path: Path, args: list[str], option: str) -> None:
    (tmp_path / "data").mkdir()
    args = [str(tmp_path / "data") if a == "DATA" else a.replace("OUT", str(tmp_path / "out")) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1
    assert option in r.output and "cpu" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()  # nothing started


def test_presets_command_is_a_table_with_the_default_marked() -> None:
    from tvnet_cli.model.presets import preset_names

    r = CliRunner().invoke(main, ["presets"])
    assert r.exit_code == 0, r.output
    assert "S-W-I" in r.output and "scales x warps x iterations" in " ".join(r.output.split())
    for name in preset_names():
        assert name in r.output
    assert "tvl1-fast*" in r.output  # extract's default
    assert "1-1-50" in r.output and "5-5-50" in r.output
    assert "median 5" in r.output  # the settings a name leaves out, by unnamed_settings:
    from tvnet_cli.commands.presets import unnamed_settings
    from tvnet_cli.model.presets import PRESETS

    assert unnamed_settings(PRESETS["tvl1-half"]) == "bias, median 5, levels to 48px"
    assert unnamed_settings(PRESETS["tvl1"]) == "" and unnamed_settings(PRESETS["tvnet-50"]) == ""
    assert unnamed_settings(PRESETS["tvl1"].replace(theta=0.5, per_level=True)) == "per level, theta 0.5"
