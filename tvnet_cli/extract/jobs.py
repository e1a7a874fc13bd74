"""Which videos `tvnet extract` works on: inputs to jobs, labels, shards, resume checks.
(Devices and the torchrun environment: `tvnet_cli.runtime`.)"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import TVNetError
from ..io.video import is_video_name
from ..io.writers import DIR_FORMATS, count_outputs, h5_counts
from .config import ExtractConfig, VideoJob, VideoResult


# ---------------------------------------------------------------------------------------
# inputs, labels, sharding (pure functions)
# ---------------------------------------------------------------------------------------
def _walk_videos(root: Path, skip: Path | None) -> list[Path]:
    """Video files under `root` (recursive, sorted), skipping hidden names and `skip`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and _is_within(d, skip):
            dirnames[:] = []
            continue
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        found += [d / n for n in sorted(filenames) if not n.startswith(".") and is_video_name(n)]
    return found


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _read_list(list_file: Path) -> list[Path]:
    """Paths in a list file, one a line; `path label` lines (mmaction2 video lists) keep the
    path. Relative paths are taken from the list's folder, else from the current folder."""
    try:
        lines = list_file.read_text().splitlines()
    except OSError as e:
        raise TVNetError(f"{list_file}: cannot read list ({e.strerror})") from None
    out = []
    for line in (ln.strip() for ln in lines):
        if not line or line.startswith("#"):
            continue
        cands = [line] + ([line.split()[0]] if len(line.split()) > 1 else [])
        paths = [p for c in cands for p in ((Path(c),) if Path(c).is_absolute()
                                             else (list_file.parent / c, Path(c)))]
        out.append(next((p for p in paths if p.exists()), paths[0]))
    return out


def collect_videos(inputs: Sequence[str | Path], out: Path | None = None
                   ) -> tuple[list[tuple[Path, PurePosixPath]], list[VideoResult]]:
    """Inputs (files, folders searched recursively, `@list.txt`) -> sorted (src, rel) pairs.

    `rel` mirrors the video's folder relative to its input root, without the suffix:
    folder `UCF-101/` holding `ApplyEyeMakeup/v_x.avi` gives `ApplyEyeMakeup/v_x`. A file
    given directly has its parent as root; the files of a list share the deepest common
    folder as root. Returns also the failures found here (missing list entries, two
    videos with the same output name). A missing command-line input raises `TVNetError`.
    """
    pairs: list[tuple[Path, PurePosixPath]] = []
    failures: list[VideoResult] = []
    for inp in inputs:
        s = str(inp)
        if s.startswith("@"):
            entries = _read_list(Path(s[1:]))
            files = [p for p in entries if not p.is_dir()]
            for p in entries:
                if p.is_dir():
                    pairs += [(v, PurePosixPath(v.relative_to(p).with_suffix("").as_posix()))
                              for v in _walk_videos(p, out)]
            if files:
                root = Path(os.path.commonpath([str(p.parent.absolute()) for p in files]))
                for p in files:
                    if not p.exists():
                        failures.append(VideoResult(str(p), "", "failed", message=f"{p}: file not found"))
                        continue
                    rel = p.absolute().relative_to(root).with_suffix("")
                    pairs.append((p, PurePosixPath(rel.as_posix())))
            continue
        p = Path(s)
        if p.is_dir():
            pairs += [(v, PurePosixPath(v.relative_to(p).with_suffix("").as_posix()))
                      for v in _walk_videos(p, out)]
        elif p.exists():
            pairs.append((p, PurePosixPath(p.stem)))
        else:
            raise TVNetError(f"{p}: input not found")
    pairs.sort(key=lambda x: (str(x[1]), str(x[0])))
    unique, seen = [], {}
    for src, rel in pairs:
        if rel in seen:
            if Path(seen[rel]).resolve() != src.resolve():
                failures.append(VideoResult(str(src), str(rel), "failed",
                                            message=f"{src}: output name {rel} already used by {seen[rel]}"))
            continue
        seen[rel] = src
        unique.append((src, rel))
    return unique, failures


def read_classes(path: Path) -> dict[str, int]:
    """Class file -> {name: label}. Lines "name" get labels 0, 1, ...; UCF101-style
    "index name" lines get index - 1 (classInd.txt is 1-based, mmaction2 labels 0-based)."""
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise TVNetError(f"{path}: cannot read classes file ({e.strerror})") from None
    if all(len(t) == 2 and t[0].isdigit() for t in lines):
        return {t[1]: int(t[0]) - 1 for t in lines}
    return {" ".join(t): i for i, t in enumerate(lines)}


def assign_labels(pairs: Sequence[tuple[Path, PurePosixPath]], classes: dict[str, int] | None
                  ) -> list[VideoJob]:
    """Label = class folder (the video's parent folder name); sorted class names when no
    class file is given. Videos of a class not in `classes` get label -1."""
    if classes is None:
        names = sorted({rel.parent.name for _, rel in pairs})
        classes = {n: i for i, n in enumerate(names)}
    return [VideoJob(src, rel, classes.get(rel.parent.name, -1), i) for i, (src, rel) in enumerate(pairs)]


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Items of shard `rank` of `world_size`: every world_size-th, starting at rank."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise TVNetError(f"bad shard {rank} of {world_size}")
    return list(items[rank::world_size])


# ---------------------------------------------------------------------------------------
# outputs of one video
# ---------------------------------------------------------------------------------------
def final_paths(job: VideoJob, config: ExtractConfig) -> list[Path]:
    out = []
    if any(f in DIR_FORMATS for f in config.formats):
        out.append(config.out / Path(str(job.rel)))
    if "h5" in config.formats:
        out.append(config.out / Path(str(job.rel) + ".h5"))
    return out


def is_complete(job: VideoJob, config: ExtractConfig) -> bool:
    return all(p.exists() for p in final_paths(job, config))


def _complete_counts(job: VideoJob, config: ExtractConfig) -> tuple[int, int]:
    """(flows, frames) of an already complete video (for the annotation list)."""
    paths = final_paths(job, config)
    if paths[-1].suffix == ".h5" and paths[-1].is_file():
        return h5_counts(paths[-1])
    flows, frames = count_outputs(paths[0])
    return flows, frames or flows + config.step


# ---------------------------------------------------------------------------------------
# this process's shard
# ---------------------------------------------------------------------------------------
def plan(inputs: Sequence[str | Path], config: ExtractConfig) -> tuple[list[VideoJob], list[VideoResult]]:
    """All videos of this process's shard, labelled, plus failures found while listing."""
    pairs, failures = collect_videos(inputs, config.out)
    classes = read_classes(config.classes) if config.classes is not None else None
    jobs = shard(assign_labels(pairs, classes), config.rank, config.world_size)
    failures = shard(failures, config.rank, config.world_size)
    return jobs, failures
