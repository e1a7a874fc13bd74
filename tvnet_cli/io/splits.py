"""Action-recognition split files: the official UCF101 / HMDB51 splits and generic
`<video> <label>` lists, and a check that the listed videos exist. Sampling clips from the
videos is `data/clips.py`.

A split is a list of `VideoItem` (path relative to the dataset root, 0-based label) for
training and for testing, plus the class names. Missing videos are reported by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
