"""Every fast path (kernel backend) gives the reference path's flow (within 1e-3 px mean)."""

from __future__ import annotations

import pytest
import torch

from conftest import to_batch
from synthetic import PAIRS, flow_pair
from tvnet_cli import TVNet
from tvnet_cli.kernels import cpu as cpu_kernel
from tvnet_cli.model import ops
from tvnet_cli.model.tvnet import stepwise, tv_l1_step


def _pair_batch():
    a, b, _ = flow_pair(128, 192, PAIRS["00001"])
    f0, f1 = to_batch(a), to_batch(b)
    return torch.cat([f0, f1]), torch.cat([f1, f0])  # a batch of 2, both directions


def _solver_state(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A mid-solve TV-L1 state: u, px, py, grad_i, grad_sq, rho_c (random but realistic scales)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, 2, h, w, generator=g) * 2
    px, py = (torch.randn(b, 2, h, w, generator=g) * 0.3 for _ in range(2))
    grad_i = torch.randn(b, 2, h, w, generator=g) * 10
    grad_sq = (grad_i * grad_i).sum(dim=1, keepdim=True) + 1e-12
    return u, px, py, grad_i, grad_sq, torch.randn(b, 1, h, w, generator=g) * 20


# Trained-looking (non-default) taps, so a kernel that hard-codes [-1, 1] would fail.
TAPS = (torch.tensor(ops.FORWARD_TAPS) * torch.tensor([[1.1, 0.9], [1.0, 1.05]]),
        torch.tensor(ops.BACKWARD_TAPS) * torch.tensor([[0.95, 1.0], [1.02, 0.97]]))
CONSTS = (0.15 * 0.3, 0.3, 0.25 / 0.3, 1e-12)


@pytest.mark.parametrize("preset", ["tvnet-50", "tvnet-3-1-10"])
def test_c_backend_model_matches_torch(preset):
    f0, f1 = _pair_batch()
    model = TVNet.from_preset(preset)
    model.backend = "torch"
    reference = model.predict(f0, f1)
    assert model.last_backend == "torch"
    model.backend = "auto"
    fast = model.predict(f0, f1)
    assert model.last_backend == "c"
    assert fast.shape == reference.shape
    assert (fast - reference).abs().mean().item() < 1e-3
    assert (fast - reference).abs().max().item() < 5e-2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("preset", ["tvnet-50", "tvl1", "tvnet-50-trained"])
def test_cuda_triton_model_matches_torch_and_cpu(preset):
    """On a GPU: auto runs Triton, equal to the PyTorch step on CUDA and to the CPU; on
    cuda:N, N > 0, too (the kernel must launch on the tensors' device)."""
    f0, f1 = _pair_batch()
    model = TVNet.from_preset(preset)
    cpu = model.predict(f0, f1)
    for index in range(torch.cuda.device_count())[:2]:
        dev = torch.device("cuda", index)
        model = model.to(dev)
        model.backend = "auto"
        fast = model.predict(f0.to(dev), f1.to(dev)).cpu()
        assert model.last_backend == "triton"
        model.backend = "torch"
        eager = model.predict(f0.to(dev), f1.to(dev)).cpu()
        assert (fast - eager).abs().mean().item() < 1e-3
        assert (eager - cpu).abs().mean().item() < 1e-3


@pytest.mark.parametrize("b,h,w,iters", [(1, 2, 2, 3), (2, 3, 1, 4), (1, 7, 5, 9), (3, 40, 33, 20), (1, 64, 48, 50)])
def test_cpu_kernel_matches_pytorch_step(b, h, w, iters):
    """Odd sizes (one row, one column, fewer rows than a sweep group) and trained taps."""
    assert cpu_kernel.library() is not None, "the CPU kernel must build where the tests run"
    state = _solver_state(b, h, w)
    reference = stepwise(tv_l1_step)(*state, TAPS, CONSTS, iters)
    fast = cpu_kernel.iterate(*state, TAPS, CONSTS, iters)
    for r, f in zip(reference, fast):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4)


def test_cpu_kernel_row_bands_equal_whole_images():
    """Batch 1 on several threads runs row bands with ghost rows: the same numbers, exactly."""
    state = _solver_state(1, 150, 37, seed=1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        whole = cpu_kernel.iterate(*state, TAPS, CONSTS, 21)
        torch.set_num_threads(4)
        assert cpu_kernel._bands(1, 150, 4) > 1
        banded = cpu_kernel.iterate(*state, TAPS, CONSTS, 21)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(whole, banded):
        assert torch.equal(a, b)
    assert not torch.equal(whole[0], state[0])  # and it did iterate


def test_training_runs_the_torch_step_whatever_the_backend():
    model = TVNet.from_preset("tvnet-10")
    model.backend = "c"
    x = torch.rand(1, 1, 16, 20, requires_grad=True)
    model(x, torch.roll(x.detach(), 1, 3)).sum().backward()
    assert x.grad is not None
    assert model.last_backend == "torch"


def test_frozen_model_takes_the_inference_path_under_autograd():
    model = TVNet.from_preset("tvnet-10")
    model.backend = "torch"
    model.set_trainable("none")
    x = torch.rand(2, 1, 16, 20) * 255
    y = torch.roll(x, 1, 3)
    out = model(x, y)  # grad mode on, but nothing needs a gradient: no graph, no checkpoints
    assert not out.requires_grad
    torch.testing.assert_close(out, model.predict(x, y))


def test_early_stop_on_the_fast_path_matches_eager():
    f0, f1 = _pair_batch()
    model = TVNet.from_preset("tvnet-50", stop_tol=0.01)
    model.backend = "torch"
    reference = model.predict(f0, f1)
    model.backend = "c"
    assert (model.predict(f0, f1) - reference).abs().mean().item() < 1e-3


def test_cpu_kernel_in_a_forked_child():
    """A forked process (data-loader workers) gets its own thread pool, not its parent's
    dead one: this would hang otherwise."""
    import multiprocessing as mp

    state = _solver_state(3, 20, 24, seed=2)
    parent = cpu_kernel.iterate(*state, TAPS, CONSTS, 5)  # creates the parent's pool
    with mp.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_iterate_in_child, (state,)).get(timeout=60)
    for a, b in zip(parent, child):
        assert torch.equal(a, b)


def _iterate_in_child(state):
    torch.set_num_threads(2)
    return cpu_kernel.iterate(*state, TAPS, CONSTS, 5)


def test_cpu_kernel_with_an_unwritable_cache_folder(tmp_path):
    """A kernel cache that cannot be created (here: below a file) falls back to the temp
    folder instead of to the 10x slower PyTorch step."""
    import os
    import subprocess
    import sys
    import tempfile

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = ("import warnings; warnings.simplefilter('error'); from tvnet_cli.kernels import cpu; "
            "print(cpu.library()._name)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "TVNET_CACHE": str(blocker / "cache")})
    assert r.returncode == 0, r.stderr[-1000:]
    from pathlib import Path
    assert Path(r.stdout.strip()).parent == Path(tempfile.gettempdir()) / f"tvnet-kernels-{os.getuid()}"
