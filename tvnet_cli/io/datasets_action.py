"""Action-recognition datasets: official UCF101 / HMDB51 split files, generic lists,
TSN segment sampling and a clip dataset that decodes videos with PyAV.

A split is a list of `VideoItem` (path relative to the dataset root, 0-based label) for
training and for testing, plus the class names. Missing videos are reported by name.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TVNetError

UCF101_COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}  # official (train, test)


@dataclass(frozen=True)
class VideoItem:
    """One labelled video: `path` relative to the dataset root, `label` 0-based."""

    path: str
    label: int


@dataclass(frozen=True)
class ActionSplit:
    """Class names and the train/test videos of one split."""

    classes: tuple[str, ...]
    train: tuple[VideoItem, ...]
    test: tuple[VideoItem, ...]


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty lines of a text file as (line number, whitespace-split fields); CRLF ok."""
    if not path.is_file():
        raise TVNetError(f"{path}: split file not found")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if fields:
            out.append((n, fields))
    return out


def _find_annotations(annotations: Path | None, root: Path | None, marker: str) -> Path:
    """The folder holding the split files: `annotations`, or next to / inside `root`."""
    if annotations is not None:
        return Path(annotations)
    candidates = []
    if root is not None:
        root = Path(root)
        candidates += [root, root / "ucfTrainTestlist", root.parent / "ucfTrainTestlist",
                       root / "testTrainMulti_7030_splits", root.parent / "testTrainMulti_7030_splits"]
    for c in candidates:
        if any(c.glob(marker)):
            return c
    raise TVNetError(f"{root}: no split files ({marker}) found; pass --annotations DIR")


def parse_ucf101(annotations: Path | None = None, split: int = 1, root: Path | None = None) -> ActionSplit:
    """UCF101 from the official `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`."""
    if split not in (1, 2, 3):
        raise TVNetError(f"UCF101 split must be 1, 2 or 3, not {split}")
    ann = _find_annotations(annotations, root, "classInd.txt")
    cls_file = ann / "classInd.txt"
    classes: dict[int, str] = {}
    for n, f in _lines(cls_file):
        if len(f) != 2 or not f[0].isdigit():
            raise TVNetError(f"{cls_file}:{n}: expected '<index> <class>', got {' '.join(f)!r}")
        classes[int(f[0])] = f[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise TVNetError(f"{cls_file}: class indices are not 1..{len(classes)}")
    names = tuple(classes[i] for i in range(1, len(classes) + 1))
    index = {c: i for i, c in enumerate(names)}

    def read(kind: str) -> tuple[VideoItem, ...]:
        path = ann / f"{kind}list0{split}.txt"
        items = []
        for n, f in _lines(path):
            rel = f[0].replace("\\", "/")
            cls = rel.split("/")[0]
            if cls not in index:
                raise TVNetError(f"{path}:{n}: class folder {cls!r} is not in classInd.txt")
            label = index[cls]
            if len(f) > 1 and int(f[1]) - 1 != label:
                raise TVNetError(f"{path}:{n}: label {f[1]} does not match class {cls!r} ({label + 1})")
            items.append(VideoItem(rel, label))
        return tuple(items)

    return ActionSplit(names, read("train"), read("test"))


def parse_hmdb51(annotations: Path | None = None, split: int = 1, root: Path | None = None) -> ActionSplit:
    """HMDB51 from the official `<class>_test_split{N}.txt` files (1 = train, 2 = test, 0 = unused)."""
    if split not in (1, 2, 3):
        raise TVNetError(f"HMDB51 split must be 1, 2 or 3, not {split}")
    ann = _find_annotations(annotations, root, f"*_test_split{split}.txt")
    suffix = f"_test_split{split}.txt"
    files = {p.name[: -len(suffix)]: p for p in ann.glob(f"*{suffix}")}
    class_list = ann / "class_list.txt"
    if class_list.is_file():
        names = tuple(f[0] for _, f in _lines(class_list))
        missing = [c for c in names if c not in files]
        if missing:
            raise TVNetError(f"{ann}: no split file for classes {missing[:5]} (split {split})")
    else:
        names = tuple(sorted(files))
    if not names:
        raise TVNetError(f"{ann}: no *{suffix} files")
    train, test = [], []
    for label, cls in enumerate(names):
        for n, f in _lines(files[cls]):
            if len(f) != 2 or f[1] not in ("0", "1", "2"):
                raise TVNetError(f"{files[cls]}:{n}: expected '<video> <0|1|2>', got {' '.join(f)!r}")
            item = VideoItem(f"{cls}/{f[0]}", label)
            if f[1] == "1":
                train.append(item)
            elif f[1] == "2":
                test.append(item)
    return ActionSplit(names, tuple(train), tuple(test))


def parse_list(path: Path, classes: tuple[str, ...] | None = None) -> tuple[tuple[VideoItem, ...], tuple[str, ...]]:
    """A generic `<video path> <label>` list (label: 0-based integer or a class name)."""
    path = Path(path)
    rows = []
    for n, f in _lines(path):
        if len(f) < 2:
            raise TVNetError(f"{path}:{n}: expected '<video path> <label>', got {' '.join(f)!r}")
        rows.append((n, " ".join(f[:-1]), f[-1]))
    if all(lab.lstrip("-").isdigit() for _, _, lab in rows):
        labels = [int(lab) for _, _, lab in rows]
        if any(lab < 0 for lab in labels):
            raise TVNetError(f"{path}: labels must be >= 0")
        if classes is None:
            classes = tuple(str(i) for i in range(max(labels, default=-1) + 1))
        items = tuple(VideoItem(p, lab) for (_, p, _), lab in zip(rows, labels))
    else:
        if classes is None:
            classes = tuple(sorted({lab for _, _, lab in rows}))
        index = {c: i for i, c in enumerate(classes)}
        bad = [(n, lab) for n, _, lab in rows if lab not in index]
        if bad:
            raise TVNetError(f"{path}:{bad[0][0]}: unknown class {bad[0][1]!r}")
        items = tuple(VideoItem(p, index[lab]) for _, p, lab in rows)
    if any(it.label >= len(classes) for it in items):
        raise TVNetError(f"{path}: label out of range for {len(classes)} classes")
    return items, tuple(classes)


def check_videos(items: tuple[VideoItem, ...] | list[VideoItem], root: Path, what: str = "video") -> None:
    """Raise naming the missing files if any listed video is not under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise TVNetError(f"{root}: dataset root not found")
    missing = [it.path for it in items if not (root / it.path).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TVNetError(f"{root}: {len(missing)} listed {what}s missing: {shown}")


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
        from .video import read_frames

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
        from .video import probe, read_frames_at

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
