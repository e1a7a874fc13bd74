"""The Triton TV-L1 kernel equals the PyTorch step (here under TRITON_INTERPRET=1 on CPU
tensors, set by conftest; on a GPU machine compiled for CUDA), reads strided planes in
place, leaves its inputs alone and never waits for the device."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import VIDEOS, to_batch, video_frames
from test_fastpath import CONSTS, TAPS, _solver_state
from tvnet_cli.kernels import triton_tvl1
from tvnet_cli.model import ops
from tvnet_cli.model.tvnet import TVNetConfig, _tv_l1_level, stepwise, tv_l1_step

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SYNC_OPS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.item", "aten.lift_fresh")


def _on(state):
    return tuple(t.to(DEVICE) for t in state)


def _taps():
    return tuple(torch.nn.Parameter(t.to(DEVICE)) for t in TAPS)  # trainable, as in the model


def _ref_taps():
    return tuple(t.to(DEVICE) for t in TAPS)


def _close(fast, reference):
    for f, r in zip(fast, reference):
        torch.testing.assert_close(f.cpu(), r.cpu(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("b,h,w", [(1, 1, 1), (1, 1, 7), (1, 5, 1), (2, 2, 2), (3, 7, 5), (3, 40, 33)])
@pytest.mark.parametrize("n", [0, 1, 2, 9])
def test_kernel_matches_pytorch_step(b, h, w, n):
    """One row, one column, 1x1, batch > 1, trained-looking taps; n = 0 copies the state."""
    state = _on(_solver_state(b, h, w, seed=b * 100 + h + w))
    reference = stepwise(tv_l1_step)(*state, _ref_taps(), CONSTS, n)
    fast = triton_tvl1.iterate(*state, _taps(), CONSTS, n)
    assert all(f.shape == r.shape and f.dtype == torch.float32 for f, r in zip(fast, reference))
    _close(fast, reference)
    if n:
        assert not torch.equal(fast[0], state[0])  # it did iterate


def test_small_tiles_equal_whole_image_tiles():
    """GPU-like tiling (here 8 x 8 tiles: the u' at the +x/+y neighbours is recomputed
    across tile borders) gives the same numbers as one tile per image."""
    state = _on(_solver_state(2, 13, 21, seed=3))
    whole = triton_tvl1.iterate(*state, _taps(), CONSTS, 3, block=(16, 32))
    tiled = triton_tvl1.iterate(*state, _taps(), CONSTS, 3, block=(8, 8))
    for a, b in zip(whole, tiled):
        assert torch.equal(a, b)
    _close(tiled, stepwise(tv_l1_step)(*state, _ref_taps(), CONSTS, 3))


@pytest.mark.parametrize("b,h,w,n,steps,block", [
    (1, 1, 1, 3, 2, None),  # 1x1: the halo is all off-image
    (3, 7, 5, 5, 3, None),  # one tile per image, launches of 3 + 2 iterations
    (1, 12, 14, 5, 2, (8, 16)),  # 4 x 12 tiles inside 2-pixel halos, 2 + 2 + 1
])
def test_several_steps_per_launch_equal_one_per_launch(b, h, w, n, steps, block):
    """Temporal blocking (`steps` iterations per launch in private scratch tiles): the same
    numbers, bit for bit, as one launch per iteration, hence as the PyTorch step."""
    state = _on(_solver_state(b, h, w, seed=8))
    one = triton_tvl1.iterate(*state, _taps(), CONSTS, n)
    blocked = triton_tvl1.iterate(*state, _taps(), CONSTS, n, steps=steps, block=block)
    for a, c in zip(one, blocked):
        assert torch.equal(a, c)
    _close(blocked, stepwise(tv_l1_step)(*state, _ref_taps(), CONSTS, n))


def test_steps_need_a_tile_wider_than_two_halos():
    state = _on(_solver_state(1, 9, 9))
    with pytest.raises(ValueError, match="too small"):
        triton_tvl1.iterate(*state, _taps(), CONSTS, 4, steps=4, block=(8, 16))


def _strided(state):
    """The fixed planes as the model passes them: `grad_i = w[:, 1:]` of a (B, 3, h, w) warp
    output, `grad_sq`, `rho_c` channels of one (B, 2, h, w) tensor stored column-major
    (column stride != 1); `u` an expanded view (batch stride 0), `px` a transposed one."""
    u, px, py, grad_i, grad_sq, rho_c = state
    b = u.shape[0]
    w3 = torch.cat([torch.randn_like(grad_sq), grad_i], dim=1)
    extra = torch.cat([grad_sq, rho_c], dim=1).transpose(2, 3).contiguous().transpose(2, 3)
    u1 = u[:1].expand(b, -1, -1, -1)
    px_t = px.transpose(2, 3).contiguous().transpose(2, 3)
    strided = (u1, px_t, py, w3[:, 1:], extra[:, :1], extra[:, 1:])
    assert not any(t.is_contiguous() for t in strided[:2] + strided[3:])
    return strided


def test_strided_views_equal_contiguous_copies_and_stay_unchanged():
    state = _on(_solver_state(3, 9, 13, seed=4))
    strided = _strided(state)
    before = [t.clone() for t in strided]
    fast = triton_tvl1.iterate(*strided, _taps(), CONSTS, 3)
    copies = triton_tvl1.iterate(*(t.contiguous() for t in strided), _taps(), CONSTS, 3)
    for a, c in zip(fast, copies):
        assert torch.equal(a, c)
    for t, t0 in zip(strided, before):
        assert torch.equal(t, t0)  # inputs (and the storages behind them) not modified
    _close(fast, stepwise(tv_l1_step)(*(t.contiguous() for t in strided),
                                      _ref_taps(), CONSTS, 3))


def test_returns_new_tensors():
    state = _on(_solver_state(2, 4, 6, seed=5))
    for n in (0, 1, 2):
        out = triton_tvl1.iterate(*state, _taps(), CONSTS, n)
        assert not any(o.data_ptr() == s.data_ptr() for o in out for s in state)


class _SyncCounter(TorchDispatchMode):
    """Counts the aten ops that read a device value on the host or build a tensor from
    Python values (each a wait for the device on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in SYNC_OPS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def test_no_host_synchronisation():
    """Zero sync ops per call, whatever n (the interpreter itself dispatches only storage
    set_/copy_/new_empty to move arguments, none of which reads a value on the host)."""
    state = _on(_solver_state(2, 6, 5, seed=6))
    taps = _taps()
    with _SyncCounter() as probe:  # the probe counts what it should
        torch.ones(1, device=DEVICE).item()
        torch.tensor([1.0, 2.0], device=DEVICE)
    assert probe.ops["aten._local_scalar_dense"] == 1 and probe.ops["aten.lift_fresh"] == 1
    for n, steps in ((1, 1), (3, 1), (3, 2)):
        with _SyncCounter() as probe:
            triton_tvl1.iterate(*state, taps, CONSTS, n, steps=steps)
        assert sum(probe.ops.values()) == 0, (n, steps, probe.ops)


def test_consts_must_be_python_floats():
    state = _on(_solver_state(1, 3, 3))
    with pytest.raises(TypeError, match="Python floats"):
        triton_tvl1.iterate(*state, _taps(), (torch.tensor(0.045), 0.3, 0.83, 1e-12), 1)


def test_cpu_tensors_without_the_interpreter_are_a_clear_error():
    code = ("import torch; from tvnet_cli.kernels import triton_tvl1 as k; z = torch.zeros(1, 2, 3, 3); "
            "k.iterate(z, z, z, z, z[:, :1] + 1, z[:, :1], (torch.ones(2, 2),) * 2, "
            "(0.1, 0.3, 0.8, 1e-12), 1)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "TVNetError" in r.stderr and "TRITON_INTERPRET=1" in r.stderr


def test_one_level_on_real_frames_matches_pytorch():
    """A whole TV-L1 level (warps between runs of iterations) on a real pair (frames 0 and 8
    of the shipped video, where a person moves), batch 2 (both directions), odd size,
    trained-looking taps: the flow within 1e-3 px mean."""
    frames = video_frames(VIDEOS / "test.avi", 9)
    f0 = to_batch(frames[0][100:137, 160:211]).float()
    f1 = to_batch(frames[8][100:137, 160:211]).float()
    i0, i1 = ops.normalize_pair(ops.to_grey(torch.cat([f0, f1])), ops.to_grey(torch.cat([f1, f0])))
    i0, i1 = ops.gaussian_blur(i0, 0.8).to(DEVICE), ops.gaussian_blur(i1, 0.8).to(DEVICE)
    cfg = TVNetConfig(warps=2, iters=10)
    taps = (torch.tensor(ops.CENTRED_TAPS, device=DEVICE), *(t.to(DEVICE) for t in TAPS))
    u = torch.zeros(2, 2, 37, 51, device=DEVICE)
    scalars = (cfg.tau, cfg.lam, cfg.theta)
    reference = _tv_l1_level(i0, i1, u, cfg, taps, stepwise(), scalars, False, cfg.warps, cfg.iters)
    fast = _tv_l1_level(i0, i1, u, cfg, taps, triton_tvl1.iterate, scalars, False, cfg.warps, cfg.iters)
    assert reference.abs().mean() > 0.05  # a real flow, not zeros
    assert (fast - reference).abs().mean().item() < 1e-3


@pytest.mark.skipif(DEVICE.type != "cuda", reason="no CUDA device here")
@pytest.mark.parametrize("steps", [1, 4])
def test_cuda_kernel_at_video_size_matches_pytorch_step(steps):
    """On a GPU: the compiled kernels (GPU tiles, several per image; with steps > 1 the
    scratch tiles and block barriers) at 340x256, batch 4, against the PyTorch step."""
    state = _on(_solver_state(4, 256, 340, seed=7))
    reference = stepwise(tv_l1_step)(*state, _ref_taps(), CONSTS, 20)
    _close(triton_tvl1.iterate(*state, _taps(), CONSTS, 20, steps=steps), reference)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_kernel_on_a_second_device():
    """Tensors on cuda:1 while cuda:0 is current: the kernel runs on cuda:1."""
    state = tuple(t.to("cuda:1") for t in _solver_state(2, 9, 13, seed=9))
    taps = tuple(t.to("cuda:1") for t in TAPS)
    reference = stepwise(tv_l1_step)(*state, taps, CONSTS, 3)
    with torch.cuda.device(0):
        fast = triton_tvl1.iterate(*state, taps, CONSTS, 3)
    assert fast[0].device == torch.device("cuda:1")
    _close(fast, reference)
