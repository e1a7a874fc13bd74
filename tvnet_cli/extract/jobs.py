"""Which videos `tvnet extract` works on: inputs to jobs, labels, shards, resume checks.
(Devices and the torchrun environment: `tvnet_cli.runtime`.)"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import TVNetError
from ..io.video import is_video_name
from ..io.writers import DIR_FORMATS, clean_stale, count_outputs, h5_counts, output_state
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


def _read_lines(path: Path, what: str) -> list[str]:
    """Lines of a UTF-8 text file; `TVNetError` naming the file when unreadable or not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8").splitlines()
    except OSError as e:
        raise TVNetError(f"{path}: cannot read {what} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise TVNetError(f"{path}: {what} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
                         f"offset {e.start})") from None


def _normal(p: Path) -> Path:
    """Absolute, with `.` and `..` resolved textually (links are kept: a folder of links
    to videos stays the root of its outputs)."""
    return Path(os.path.normpath(os.path.abspath(p)))


def _read_list(list_file: Path) -> list[Path]:
    """Paths in a list file, one a line; `path label` lines (mmaction2 video lists) keep the
    path. Relative paths are taken from the list's folder, else from the current folder."""
    lines = _read_lines(list_file, "list")
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
            if files:  # `..` resolved first: `../x.mp4` widens the root instead of leaving --out
                root = Path(os.path.commonpath([str(_normal(p).parent) for p in files]))
                for p in files:
                    if not p.exists():
                        failures.append(VideoResult(str(p), "", "failed", message=f"{p}: file not found"))
                        continue
                    rel = _normal(p).relative_to(root).with_suffix("")
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
    lines = [ln.split() for ln in _read_lines(path, "classes file") if ln.strip()]
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
def outputs(job: VideoJob, config: ExtractConfig) -> list[tuple[Path, str]]:
    """Where the outputs of `job` go: (`<out>/<rel>`, "dir") for the folder formats,
    (`<out>/<rel>.h5`, "h5")."""
    out = []
    if any(f in DIR_FORMATS for f in config.formats):
        out.append((config.out / Path(str(job.rel)), "dir"))
    if "h5" in config.formats:
        out.append((config.out / Path(str(job.rel) + ".h5"), "h5"))
    return out


def final_paths(job: VideoJob, config: ExtractConfig) -> list[Path]:
    return [p for p, _ in outputs(job, config)]


def check_job(job: VideoJob, config: ExtractConfig) -> dict[Path, str]:
    """Every output path of `job` lies inside `--out` (no `..`, no absolute name, no link
    leading out) and holds nothing foreign: {path: `output_state`}. `TVNetError` (one line,
    that video fails) otherwise."""
    parts = job.rel.parts
    if not parts or job.rel.is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise TVNetError(f"{job.src}: output name {str(job.rel)!r} would leave {config.out}")
    out = config.out.resolve()
    states = {}
    for path, kind in outputs(job, config):
        where = path.parent.resolve()  # follows links of existing folders
        if where != out and out not in where.parents:
            raise TVNetError(f"{job.src}: output {path} would lie outside {config.out} (at {where / path.name}, "
                             f"through a symbolic link)")
        try:
            states[path] = output_state(path, kind, replace=config.overwrite)
        except TVNetError as e:
            raise TVNetError(f"{job.src}: {e}") from None
    return states


def is_complete(job: VideoJob, config: ExtractConfig) -> bool:
    """All outputs of `job` are tvnet's and finished (`TVNetError` when one is foreign)."""
    return all(s == "ours" for s in check_job(job, config).values())


def _complete_counts(job: VideoJob, config: ExtractConfig) -> tuple[int, int]:
    """(flows, frames) of an already complete video (for the annotation list)."""
    paths = final_paths(job, config)
    if paths[-1].suffix == ".h5" and paths[-1].is_file():
        return h5_counts(paths[-1])
    flows, frames = count_outputs(paths[0])
    return flows, frames or flows + config.step


def collisions(jobs: Sequence[VideoJob], config: ExtractConfig) -> dict[int, str]:
    """{job index: message} for videos whose outputs would hold, or be, another's: `a.mp4`
    beside a folder `a/` of videos (the folder `<out>/a/` would mix a's flow files with the
    other videos' output folders) fails `a.mp4`; two videos with one output path (`a.mp4`'s
    `a.h5` and `a.h5.mp4`'s folder) fail the later one; names of the lists and the lock are
    taken."""
    from .lists import reserved_names
    from .lock import LOCK_NAME

    owner: dict[PurePosixPath, VideoJob] = {}
    bad: dict[int, str] = {}
    reserved = {PurePosixPath(n) for n in (*reserved_names(config), LOCK_NAME)}
    for job in jobs:
        for path in final_paths(job, config):
            rel = PurePosixPath(path.relative_to(config.out).as_posix())
            if rel in reserved:
                bad.setdefault(job.index, f"{job.src}: output {path} has the name of a list tvnet writes; "
                                          f"rename the video")
            elif rel in owner:
                bad.setdefault(job.index, f"{job.src}: output {path} is also the output of "
                                          f"{owner[rel].src}; rename one of them")
            else:
                owner[rel] = job
    for job in jobs:
        if job.index in bad:
            continue
        for path in final_paths(job, config):
            rel = PurePosixPath(path.relative_to(config.out).as_posix())
            for up in rel.parents:
                other = owner.get(up)
                if other is not None and other is not job and other.index not in bad:
                    bad[other.index] = (f"{other.src}: its output folder {config.out / up} would also hold "
                                        f"the outputs of {job.src}; rename the video or the folder")
    return bad


def clean_stale_outputs(jobs: Sequence[VideoJob], config: ExtractConfig) -> None:
    """Remove what killed or interrupted runs left of these videos' outputs (temporary
    names only; call under the output lock)."""
    names: dict[Path, set[str]] = {}
    for job in jobs:
        for path in final_paths(job, config):
            names.setdefault(path.parent, set()).add(path.name)
    for folder, n in names.items():
        clean_stale(folder, n)


# ---------------------------------------------------------------------------------------
# this process's shard
# ---------------------------------------------------------------------------------------
def plan(inputs: Sequence[str | Path], config: ExtractConfig) -> tuple[list[VideoJob], list[VideoResult]]:
    """All videos of this process's shard, labelled, plus failures found while listing."""
    pairs, failures = collect_videos(inputs, config.out)
    classes = read_classes(config.classes) if config.classes is not None else None
    jobs = assign_labels(pairs, classes)
    bad = collisions(jobs, config)  # over all videos: every rank decides alike
    failures += [VideoResult(str(j.src), str(j.rel), "failed", label=j.label, message=bad[j.index])
                 for j in jobs if j.index in bad]
    jobs = shard(jobs, config.rank, config.world_size)
    failures = shard(failures, config.rank, config.world_size)
    return [j for j in jobs if j.index not in bad], failures
