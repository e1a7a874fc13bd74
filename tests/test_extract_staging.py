"""Device staging of `tvnet extract`, on the CPU: each frame staged once, pairs formed by
index equal to the decoded pairs, buffers reused across batches, results that survive the
reuse; the automatic batch rule; the whole pipeline against a direct per-pair model call."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from conftest import VIDEOS
from tvnet_cli.extract import ExtractConfig, extract
from tvnet_cli.extract.staging import CPU_BATCH, GPU_BATCH_CAP, Staging, auto_batch, pairs_in_budget
from tvnet_cli.io.video import iter_frames, write_video

NAMES = ("test.avi", "test.mp4")  # shipped in tests/data: two frame sizes


def mixed_pairs(videos, step: int, frames: int = 16) -> list[tuple[tuple, tuple, np.ndarray, np.ndarray]]:
    """(key0, key1, frame0, frame1) of (t, t + step) pairs of two real videos, decoded at
    48x64, interleaved in runs of 6 pairs per video (so batches mix videos); a frame is one
    object shared by its pairs, as the pipeline's decoders hand them over."""
    per_video = []
    for v, name in enumerate(NAMES):
        fr = list(islice(iter_frames(videos / name, (48, 64)), frames))
        per_video.append([((v, t), (v, t + step), fr[t], fr[t + step]) for t in range(frames - step)])
    out = []
    while any(per_video):
        for ps in per_video:
            out += ps[:6]
            del ps[:6]
    return out


@pytest.mark.parametrize("copies", [False, True], ids=["cpu-path", "cuda-style-copies"])
@pytest.mark.parametrize("step", [1, 3])
def test_each_frame_staged_once_and_pairs_by_index(step, copies):
    pairs = mixed_pairs(VIDEOS, step)
    staging = Staging("cpu", copies=copies)
    batch, ptrs, shared = 7, [], 0
    for n in range(0, len(pairs), batch):
        chunk = pairs[n:n + batch]
        staged = staging.upload([(f0, f1) for _, _, f0, f1 in chunk], capacity=batch)
        keys = {k for k0, k1, _, _ in chunk for k in (k0, k1)}
        assert staged.frames.shape == (len(keys), 48, 64, 3) and staged.frames.dtype == torch.uint8
        row_of: dict[tuple, int] = {}  # each (video, t) has one row, and no two share a row
        for k, (k0, k1, _, _) in enumerate(chunk):
            assert row_of.setdefault(k0, int(staged.i0[k])) == int(staged.i0[k])
            assert row_of.setdefault(k1, int(staged.i1[k])) == int(staged.i1[k])
        assert sorted(row_of.values()) == list(range(len(keys)))
        shared += len(keys) < 2 * len(chunk)
        f0, f1 = staged.pairs()  # (B, 3, H, W) each
        for k, (_, _, a, b) in enumerate(chunk):
            assert np.array_equal(f0[k].permute(1, 2, 0).numpy(), a)
            assert np.array_equal(f1[k].permute(1, 2, 0).numpy(), b)
        assert (staged.frames.data_ptr() != staged.slot.host_frames.data_ptr()) == copies
        ptrs.append(staged.frames.data_ptr())
    assert len(ptrs) >= 4 and shared >= 2  # batches with frames shared by pairs, staged once
    assert ptrs[0::2] == [ptrs[0]] * len(ptrs[0::2]) and ptrs[1::2] == [ptrs[1]] * len(ptrs[1::2])
    assert ptrs[0] != ptrs[1]  # a ring of two buffers, allocated once


@pytest.mark.parametrize("copies", [False, True], ids=["cpu-path", "cuda-style-copies"])
def test_double_buffered_downloads_survive_buffer_reuse(copies):
    """As the runner does: launch batch N, then wait for N-1. Fields taken from a download
    stay intact while later batches reuse its ring slot."""
    pairs = mixed_pairs(VIDEOS, 2)
    staging = Staging("cpu", copies=copies)
    taken, in_flight, out_ptrs = [], None, []
    for n in range(0, len(pairs), 4):
        chunk = pairs[n:n + 4]
        staged = staging.upload([(f0, f1) for _, _, f0, f1 in chunk], capacity=4)
        f0, f1 = staged.pairs()
        d = staging.download(staged, {"q": f0[:, :2].clone(), "f32": f1[:, 1:].float()})  # (B, 2, H, W)
        if copies:
            out_ptrs.append(staged.slot.host_out[torch.uint8].data_ptr())
        if in_flight is not None:
            taken.append((in_flight[0], in_flight[1].wait()))
        in_flight = (chunk, d)
    taken.append((in_flight[0], in_flight[1].wait()))
    assert sum(len(c) for c, _ in taken) == len(pairs)
    for chunk, arrays in taken:
        for k, (_, _, a, b) in enumerate(chunk):
            assert np.array_equal(arrays["q"][k], a[..., :2].transpose(2, 0, 1))
            assert np.array_equal(arrays["f32"][k], b[..., 1:].transpose(2, 0, 1).astype(np.float32))
    if copies:
        assert out_ptrs[0::2] == [out_ptrs[0]] * len(out_ptrs[0::2]) and out_ptrs[0] != out_ptrs[1]


def test_automatic_batch_rule():
    assert auto_batch(torch.device("cpu"), 256, 340, [(256, 340)]) == CPU_BATCH == 8
    assert pairs_in_budget(4 << 30, 256, 340, [(256, 340)]) == GPU_BATCH_CAP == 256
    # 1080p, one level: 20 float32 planes + 2 RGB uint8 frames = 86 B per pixel per pair
    assert pairs_in_budget(4 << 30, 1080, 1920, [(1080, 1920)]) == (4 << 30) // (86 * 1080 * 1920) == 24
    levels = [(1080, 1920), (540, 960), (270, 480)]  # 1 + 1/4 + 1/16 of the pixels in float planes
    assert pairs_in_budget(4 << 30, 1080, 1920, levels) == (4 << 30) // ((80 * 21 // 16 + 6) * 1080 * 1920) == 18
    assert pairs_in_budget(1000, 1080, 1920, levels) == 1
    # solved down to half size only (finest_level=1): + 8 full-size planes for frames and flow
    half = [(540, 960), (270, 480)]  # 1/4 + 1/16 of the pixels
    assert pairs_in_budget(4 << 30, 1080, 1920, half) == (4 << 30) // ((80 * 5 // 16 + 32 + 6) * 1080 * 1920) == 32


def test_pipeline_matches_direct_model_calls(tmp_path):
    """Two videos, step 2, default batch: every field equals TVNet on that pair alone."""
    import h5py

    from tvnet_cli.model import TVNet

    src = tmp_path / "in"
    src.mkdir()
    clips = {"a": "test.avi", "b": "test.mp4"}
    for name, real in clips.items():  # 14-frame clips of the real videos
        write_video(src / f"{name}.avi", islice(iter_frames(VIDEOS / real, (48, 64)), 14), "mpeg4")
    cfg = ExtractConfig(out=tmp_path / "out", formats=("h5",), h5_dtype="float32", width=64, height=48,
                        preset="tvnet-50", iters=5, step=2, torch_threads=1)
    assert cfg.batch is None
    s = extract([src], cfg)
    assert (s.done, s.failed, s.flows) == (2, 0, 24)
    model = TVNet.from_preset("tvnet-50", iters=5).eval()
    for name in clips:
        frames = [torch.from_numpy(f).permute(2, 0, 1)[None] for f in iter_frames(src / f"{name}.avi")]
        with h5py.File(tmp_path / "out" / f"{name}.h5") as f:
            got = f["flow"][...]
        assert got.shape == (12, 2, 48, 64)
        for t in range(12):
            want = model.predict(frames[t], frames[t + 2])[0].numpy()
            np.testing.assert_allclose(got[t], want, atol=1e-4)
