"""No host waits in the solver loop: on a GPU every host read of a device value
(`.item()`, `bool(t)`, `.tolist()`) or tensor built from Python values stalls the pipeline.

Counted here with a dispatch mode on CPU tensors (the same ops a CUDA forward dispatches):
the count must not grow with the number of iterations, warps or scales, and a second
forward of the same model makes none at all (host copies of the parameters are cached).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tvnet_cli import TVNet, TVNetConfig

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # on a GPU machine: CUDA
SYNC_OPS = {"aten._local_scalar_dense", "aten.is_nonzero", "aten.item", "aten.lift_fresh",
            "aten.lift_fresh_copy"}


class SyncCounter(TorchDispatchMode):
    """Counts the dispatched ops that read a device value on the host or build a tensor
    from Python values."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        if name in SYNC_OPS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def _frames(device: torch.device = DEVICE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f0 = torch.randint(0, 256, (2, 3, 24, 40), generator=g, dtype=torch.uint8)
    return f0.to(device), torch.roll(f0, (1, 2), (2, 3)).to(device)


def _counts(model: TVNet) -> tuple[int, int]:
    device = DEVICE if model.backend != "c" else torch.device("cpu")
    model.to(device)
    f0, f1 = _frames(device)
    with SyncCounter() as first:
        model.predict(f0, f1)
    with SyncCounter() as second:
        model.predict(f0, f1)
    return sum(first.ops.values()), sum(second.ops.values())


@pytest.mark.parametrize("backend", ["torch", "triton", "c"])
def test_host_syncs_do_not_grow_with_iterations_warps_or_scales(backend):
    counts = {}
    for cfg in [(1, 1, 3), (1, 1, 20), (1, 4, 3), (3, 2, 5)]:
        model = TVNet(TVNetConfig(*cfg))
        model.backend = backend
        counts[cfg] = _counts(model)
        assert model.last_backend == backend
    firsts = {c[0] for c in counts.values()}
    assert len(firsts) == 1, counts  # a fixed number on the first forward (parameters read once) ...
    assert max(firsts) <= 2, counts
    assert all(c[1] == 0 for c in counts.values()), counts  # ... and none afterwards


def test_trained_parameters_are_read_again_after_they_change():
    """The cached host copies follow in-place updates (optimiser steps, load_state_dict)."""
    model = TVNet(TVNetConfig(1, 1, 5))
    model.backend = "torch"
    model.set_trainable("none")
    f0, f1 = _frames(torch.device("cpu"))
    before = model.predict(f0, f1)
    with torch.no_grad():
        model.log_scalars["lam"].add_(1.0)  # lambda x e: a different solve
    assert model.solver_scalars()[1] == pytest.approx(0.15 * 2.718281828, rel=1e-6)
    assert not torch.equal(model.predict(f0, f1), before)
    with torch.no_grad():
        model.u0.add_(0.5)  # u0 no longer zero: the first warp is no longer skipped
    assert not model.u0_is_zero()
    with torch.no_grad():
        model.u0.zero_()
    assert model.u0_is_zero()
