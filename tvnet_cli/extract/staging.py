"""Device staging for `tvnet extract`: frames up once per batch, flow down without host waits.

Per batch of B pairs (frame t, frame t + step), possibly from several videos:

* upload: each distinct frame (pairs of one video share frames; found by object identity,
  no copy) goes once into a reused host staging buffer (pinned when the device is CUDA),
  beside the pair indexes i0, i1; then one non-blocking H2D copy of the frames and one of
  the indexes. Pairs are formed on the device: `frames[i0]`, `frames[i1]`.
* download: the results (uint8 codes quantised on the device, or float flow) are copied
  non-blocking into reused pinned host buffers and a CUDA event is recorded after them;
  `Download.wait()` waits on that event and copies the fields out of the ring for the
  writer threads, which may still read them after the ring slot is reused.

Buffers: a ring of 2 slots per frame size (at most `MAX_SIZES` sizes kept), allocated once
with room for 2 B frames and B pairs. A slot is reused two batches later; its previous
download is waited on first (already done by a caller that double-buffers, so free).

Per-batch timeline on CUDA (one stream; the runner hands off batch N-1 after launching N)::

    host   | fill slot N%2 | launch H2D N, predict N, quantise N, D2H N, event N | wait event N-1,
           |   copy N-1 out of the ring, submit N-1 to the writers | fill slot (N+1)%2 | ...
    device | ... compute N-1 | D2H N-1 | H2D N | compute N ............... | D2H N | H2D N+1 ...

Host syncs per batch: one event wait (for batch N-1, which finished while the host filled
and launched batch N), plus whatever the model itself does. On the CPU the same code runs
with trivial copies: the staging buffer is the device buffer, results are handed over as
they are, no pinning, no events (`copies=True` forces the CUDA-style separate buffers and
copies, to test that path on the CPU).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

CPU_BATCH = 8  # default --batch on the CPU: small batches keep all cores busy with little memory
GPU_BATCH_CAP = 256  # most pairs per batch chosen automatically on CUDA
GPU_BUDGET = 4 << 30  # bytes of device memory the automatic batch may plan for ...
GPU_BUDGET_FRACTION = 4  # ... and at most free memory / this (several processes may share a GPU)
PLANES = 20  # float planes per pair per pyramid level in TVNet's working set (frames, grads, u, p, ...)
FULL_PLANES = 8  # float planes per pair at full size when the solve stops above it (finest_level):
# the prepared frames and the upsampled flow, which the pyramid's planes do not include then
MAX_SIZES = 2  # frame sizes whose rings are kept


def pairs_in_budget(budget: int, height: int, width: int, level_sizes: Sequence[tuple[int, int]],
                    bytes_per_value: int = 4) -> int:
    """Pairs whose TVNet working set fits `budget` bytes: PLANES planes per pair per pyramid
    level solved (`level_sizes`, finest first), FULL_PLANES more at full size when the finest
    level is smaller, capped at GPU_BATCH_CAP, at least 1."""
    pixels = sum(h * w for h, w in level_sizes) or height * width
    full = FULL_PLANES * height * width if level_sizes and tuple(level_sizes[0]) != (height, width) else 0
    per_pair = bytes_per_value * (PLANES * pixels + full) + 2 * 3 * height * width  # + the uint8 frames
    return max(1, min(GPU_BATCH_CAP, budget // per_pair))


def auto_batch(device: torch.device, height: int, width: int, level_sizes: Sequence[tuple[int, int]],
               bytes_per_value: int = 4) -> int:
    """The default --batch: CPU_BATCH off CUDA; on CUDA as many pairs as fit
    min(GPU_BUDGET, free memory / GPU_BUDGET_FRACTION), capped at GPU_BATCH_CAP."""
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    budget = min(GPU_BUDGET, free // GPU_BUDGET_FRACTION)
    return pairs_in_budget(budget, height, width, level_sizes, bytes_per_value)


class _Fence:
    """A CUDA event on the device's current stream; nothing on the CPU (work there is synchronous)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.event = torch.cuda.Event() if device.type == "cuda" else None

    def record(self) -> None:
        if self.event is not None:
            self.event.record(torch.cuda.current_stream(self.device))

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


class Download:
    """Results of one batch on their way to the host; `wait()` gives numpy arrays the caller owns."""

    def __init__(self, host: dict[str, torch.Tensor], fence: _Fence | None, owned: bool) -> None:
        self._host = host  # (B, 2, H, W) each: ring buffers (owned=False) or fresh tensors
        self._fence = fence
        self._owned = owned
        self._arrays: dict[str, np.ndarray] | None = None

    def wait(self) -> dict[str, np.ndarray]:
        """Wait for the copies (the one host sync per batch) and take the fields out of the ring."""
        if self._arrays is None:
            if self._fence is not None:
                self._fence.wait()
            self._arrays = {k: v.numpy() if self._owned else v.numpy().copy() for k, v in self._host.items()}
            self._host = {}
        return self._arrays


class _Slot:
    """One ring slot: staging buffers for up to `pairs` pairs of one frame size."""

    def __init__(self, device: torch.device, shape: tuple[int, int, int], pairs: int, copies: bool) -> None:
        pin = device.type == "cuda"
        self.device = device
        self.copies = copies
        self.pairs = pairs
        self.host_frames = torch.empty((2 * pairs, *shape), dtype=torch.uint8, pin_memory=pin)  # (2B, H, W, 3)
        self.host_index = torch.empty(2 * pairs, dtype=torch.int64, pin_memory=pin)  # i0 then i1
        self.dev_frames = torch.empty_like(self.host_frames, device=device) if copies else self.host_frames
        self.dev_index = torch.empty_like(self.host_index, device=device) if copies else self.host_index
        self.host_out: dict[torch.dtype, torch.Tensor] = {}  # (B, 2, H, W) per result dtype, when copies
        self.pending: Download | None = None  # the last download from this slot
        self.fence = _Fence(device)

    def out(self, like: torch.Tensor) -> torch.Tensor:
        """The reused host buffer for results shaped and typed like `like`."""
        buf = self.host_out.get(like.dtype)
        if buf is None:
            buf = torch.empty((self.pairs, *like.shape[1:]), dtype=like.dtype,
                              pin_memory=self.device.type == "cuda")
            self.host_out[like.dtype] = buf
        return buf[:like.shape[0]]

    def release(self) -> None:
        """Wait until the last batch of this slot is off the device and out of its buffers."""
        if self.pending is not None:
            self.pending.wait()
            self.pending = None


class _Ring:
    def __init__(self, slots: list[_Slot]) -> None:
        self.slots = slots
        self.turn = 0

    def next(self) -> _Slot:
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        slot.release()
        return slot


@dataclass
class StagedBatch:
    """One batch on the device: each frame once, and the pairs as indexes into them."""

    frames: torch.Tensor  # (N, H, W, 3) uint8, N distinct frames
    i0: torch.Tensor  # (B,) int64: pair k is (frames[i0[k]], frames[i1[k]])
    i1: torch.Tensor
    slot: _Slot

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame0, frame1) `(B, 3, H, W)` uint8 each, gathered on the device."""
        return (self.frames.index_select(0, self.i0).permute(0, 3, 1, 2),
                self.frames.index_select(0, self.i1).permute(0, 3, 1, 2))


class Staging:
    """Reused staging buffers of one device: `upload` pairs of frames, `download` results."""

    def __init__(self, device: torch.device | str, copies: bool | None = None) -> None:
        self.device = torch.device(device)
        self.copies = self.device.type != "cpu" if copies is None else copies
        self.rings: OrderedDict[tuple, _Ring] = OrderedDict()  # (shape, pairs) -> ring, most recent last

    def _ring(self, shape: tuple[int, int, int], pairs: int) -> _Ring:
        key = (shape, pairs)
        ring = self.rings.pop(key, None)
        if ring is None:
            while len(self.rings) >= MAX_SIZES:  # bounded memory: drop the least recent size
                for slot in self.rings.popitem(last=False)[1].slots:
                    slot.release()
            ring = _Ring([_Slot(self.device, shape, pairs, self.copies) for _ in range(2)])
        self.rings[key] = ring
        return ring

    def upload(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], capacity: int | None = None) -> StagedBatch:
        """Pairs of `(H, W, 3)` uint8 frames (all one size) -> a `StagedBatch` on the device.

        A frame object that occurs in several pairs is staged once. `capacity`: the most
        pairs a batch of this size will have (buffers are sized for it once; default the
        number of pairs).
        """
        b = len(pairs)
        shape = tuple(pairs[0][0].shape)
        slot = self._ring(shape, max(b, capacity or b)).next()
        host_frames = slot.host_frames.numpy()  # (2B, H, W, 3) views of the staging memory
        index = slot.host_index.numpy()
        where: dict[int, int] = {}  # id(frame) -> row in the staging buffer
        for k, pair in enumerate(pairs):
            for half, frame in enumerate(pair):
                j = where.get(id(frame))
                if j is None:
                    j = where[id(frame)] = len(where)
                    host_frames[j] = frame
                index[half * b + k] = j
        n = len(where)
        frames, idx = slot.dev_frames[:n], slot.dev_index[:2 * b]
        if self.copies:
            frames.copy_(slot.host_frames[:n], non_blocking=True)
            idx.copy_(slot.host_index[:2 * b], non_blocking=True)
        return StagedBatch(frames, idx[:b], idx[b:], slot)

    def download(self, batch: StagedBatch, results: dict[str, torch.Tensor]) -> Download:
        """Start bringing `results` (`(B, ...)` device tensors of `batch`) to the host."""
        slot = batch.slot
        if not self.copies:
            slot.pending = Download(results, None, owned=True)
            return slot.pending
        host = {}
        for name, r in results.items():
            host[name] = slot.out(r)
            host[name].copy_(r, non_blocking=True)
        slot.fence.record()
        slot.pending = Download(host, slot.fence, owned=False)
        return slot.pending
