"""TSN clips of action videos as tensors: segment sampling, corner cropping with scale
jittering and flips, a clip dataset that decodes videos with PyAV (`io/video.py`) and the
reproducible per-step batch plan. The split files naming the videos are `io/splits.py`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TVNetError
from ..io.splits import VideoItem


# -- TSN sampling ---------------------------------------------------------------------------
def segment_starts(num_frames: int, segments: int, length: int, rng: np.random.Generator | None) -> list[int]:
    """Start frames of `segments` stacks of `length` consecutive frames (TSN sampling).

    Training (`rng` given): a random start inside each of `segments` equal parts.
    Testing (`rng` None): evenly spaced starts (the centre of each part), as in TSN.
    Videos shorter than `length` start at 0 (frames are then repeated by `stack_indices`).
    """
    span = num_frames - length + 1
    if span <= 0:
        return [0] * segments
    if rng is None:
        tick = span / segments
        return [int(tick / 2 + tick * i) for i in range(segments)]
    avg = span // segments
    if avg > 0:
        return [i * avg + int(rng.integers(avg)) for i in range(segments)]
    return sorted(int(v) for v in rng.integers(span, size=segments))


def stack_indices(starts: list[int], length: int, num_frames: int) -> np.ndarray:
    """`(segments, length)` frame indices; clamped to the last frame for short videos."""
    idx = np.asarray(starts)[:, None] + np.arange(length)[None, :]
    return np.minimum(idx, num_frames - 1)


# -- augmentation ----------------------------------------------------------------------------
CORNERS = ("c", "tl", "tr", "bl", "br")


def _crop_box(h: int, w: int, ch: int, cw: int, where: str) -> tuple[int, int]:
    """Top-left (y, x) of a `ch x cw` crop at a named position."""
    y = {"c": (h - ch) // 2, "tl": 0, "tr": 0, "bl": h - ch, "br": h - ch}[where]
    x = {"c": (w - cw) // 2, "tl": 0, "tr": w - cw, "bl": 0, "br": w - cw}[where]
    return y, x


def multiscale_crop_params(h: int, w: int, scales: tuple[float, ...], max_distort: int,
                           rng: np.random.Generator) -> tuple[int, int, int, int]:
    """TSN corner cropping + scale jittering: (y, x, ch, cw) of a random crop."""
    base = min(h, w)
    sizes = [int(base * s) for s in scales]
    pairs = [(a, b) for i, a in enumerate(sizes) for j, b in enumerate(sizes) if abs(i - j) <= max_distort]
    ch, cw = pairs[int(rng.integers(len(pairs)))]
    y, x = _crop_box(h, w, ch, cw, CORNERS[int(rng.integers(len(CORNERS)))])
    return y, x, ch, cw


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`(N, H, W, 3)` uint8 -> `(N, h, w, 3)` bilinear (Pillow)."""
    from PIL import Image

    if frames.shape[1:3] == tuple(size):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((size[1], size[0]), Image.BILINEAR))
                     for f in frames])


# -- the clip dataset --------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video."""

    frame_size: tuple[int, int] = (256, 340)  # decode size (H, W), as TSN's 340x256
    input_size: int = 224  # network input (square crop)
    length: int = 6  # consecutive frames per stack (paper: 6 -> 5 flow fields)
    segments: int = 1  # TSN segments per clip
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)  # scale jittering
    max_distort: int = 1
    flip: bool = True  # random horizontal flip when training


class ClipDataset:
    """Items are `(index, seed)`; returns `(clips (S, L, 3, h, w) uint8, label)`.

    `seed` None = test mode (evenly spaced segments, centre crop); otherwise the sampling
    and augmentation come from `np.random.default_rng(seed)`, so a step is reproducible.
    Decoded videos are cached (LRU, `cache` videos) since small datasets are read often.
    """

    def __init__(self, root: Path, items: tuple[VideoItem, ...], spec: ClipSpec, cache: int = 0) -> None:
        self.root = Path(root)
        self.items = tuple(items)
        self.spec = spec
        self.cache = cache
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def frames(self, i: int) -> np.ndarray:
        """All frames of video `i` at the decode size `(T, H, W, 3)` uint8."""
        from ..io.video import read_frames

        rel = self.items[i].path
        if rel in self._cache:
            self._cache.move_to_end(rel)
            return self._cache[rel]
        frames = read_frames(self.root / rel, size=self.spec.frame_size)
        if self.cache > 0:
            self._cache[rel] = frames
            while len(self._cache) > self.cache:
                self._cache.popitem(last=False)
        return frames

    def stacks(self, i: int, segments: int, rng: np.random.Generator | None) -> np.ndarray:
        """`(segments, length, H, W, 3)` frame stacks of video `i`, TSN-sampled with `rng`.

        Without a cache only the frames needed are decoded, up to the last of them (half a
        video on average for one segment), using the header's frame count; if the video
        ends early, it is decoded whole and sampled again with the same random draws.
        """
        from ..io.video import probe, read_frames_at

        length = self.spec.length
        if self.cache == 0:
            t = probe(self.root / self.items[i].path).header_frames
            if t > 0:
                state = None if rng is None else rng.bit_generator.state
                idx = stack_indices(segment_starts(t, segments, length, rng), length, t)
                clip = read_frames_at(self.root / self.items[i].path, idx.ravel().tolist(), self.spec.frame_size)
                if clip is not None:
                    return clip.reshape(idx.shape + clip.shape[1:])
                if rng is not None:
                    rng.bit_generator.state = state
        frames = self.frames(i)
        t = len(frames)
        return frames[stack_indices(segment_starts(t, segments, length, rng), length, t)]

    def __getitem__(self, key: tuple[int, int | None]):
        import torch

        i, seed = key
        spec = self.spec
        rng = None if seed is None else np.random.default_rng(seed)
        clip = self.stacks(i, spec.segments, rng)  # (S, L, H, W, 3)
        h, w = clip.shape[2:4]
        if rng is None:
            ch = cw = min(spec.input_size, h, w)
            y, x = _crop_box(h, w, ch, cw, "c")
            flip = False
        else:
            y, x, ch, cw = multiscale_crop_params(h, w, spec.scales, spec.max_distort, rng)
            flip = spec.flip and bool(rng.integers(2))
        clip = clip[:, :, y:y + ch, x:x + cw]
        s, L = clip.shape[:2]
        clip = resize_frames(clip.reshape(s * L, ch, cw, 3), (spec.input_size, spec.input_size))
        clip = clip.reshape(s, L, spec.input_size, spec.input_size, 3)
        if flip:
            clip = clip[:, :, :, ::-1]
        out = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 1, 4, 2, 3)  # (S, L, 3, h, w)
        return out.contiguous(), self.items[i].label

    def test_views(self, i: int, segments: int, crops: int) -> "object":
        """TSN test protocol: `(V, L, 3, h, w)` uint8 stacks, V = segments x crops.

        `crops` 1 = centre crop; 10 = centre + 4 corners, each also flipped.
        """
        import torch

        spec = self.spec
        clip = self.stacks(i, segments, None)  # (S, L, H, W, 3)
        h, w = clip.shape[2:4]
        size = min(spec.input_size, h, w)
        where = ("c",) if crops == 1 else CORNERS
        views = []
        for pos in where:
            y, x = _crop_box(h, w, size, size, pos)
            v = clip[:, :, y:y + size, x:x + size]
            if size != spec.input_size:
                s, L = v.shape[:2]
                v = resize_frames(v.reshape(s * L, size, size, 3), (spec.input_size,) * 2).reshape(
                    s, L, spec.input_size, spec.input_size, 3)
            views.append(v)
            if crops == 10:
                views.append(v[:, :, :, ::-1])
        if crops not in (1, 10):
            raise TVNetError(f"test crops must be 1 or 10, not {crops}")
        arr = np.ascontiguousarray(np.concatenate(views, axis=0))
        return torch.from_numpy(arr).permute(0, 1, 4, 2, 3).contiguous()


def batch_plan(n_items: int, batch: int, step: int, seed: int) -> list[tuple[int, int]]:
    """The `(index, sample seed)` pairs of global training step `step` (0-based).

    Each epoch is a permutation seeded by (seed, epoch); the sample seed depends on
    (seed, step, position), so any step can be recomputed exactly after a resume.
    """
    if n_items == 0:
        raise TVNetError("no training videos")
    per_epoch = max(1, math.ceil(n_items / batch))
    out = []
    pos = (step % per_epoch) * batch
    epoch = step // per_epoch
    while len(out) < batch:
        perm = np.random.default_rng([seed, epoch]).permutation(n_items)
        take = perm[pos:pos + batch - len(out)]
        out += [(int(i), int(np.random.default_rng([seed, step, len(out) + k]).integers(2**31)))
                for k, i in enumerate(take)]
        epoch, pos = epoch + 1, 0
    return out
