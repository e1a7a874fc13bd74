"""`tvnet extract` output folder check and the lists it writes: annotation lists, failure list."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import TVNetError
from ..io.writers import DIR_FORMATS, clean_stale, os_error, temp_path
from .config import ExtractConfig, VideoResult


def check_output(out: Path) -> None:
    """The output folder must exist or be creatable, and be writable."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".tvnet-write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        raise TVNetError(f"{out}: output folder cannot be written ({os_error(e, out).strerror})") from None


def _atomic_write_text(path: Path, text: str) -> None:
    """Write `text` under a temporary name, then rename; on failure the temporary file is
    removed and an `OSError` names `path` and the cause (see `io.writers.os_error`)."""
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise os_error(e, path) from None


def _list_suffix(config: ExtractConfig) -> str:
    return f".rank{config.rank}" if config.world_size > 1 else ""


LIST_NAMES = ("ann_flow", "ann_rgb", "ann_h5", "failures")


def reserved_names(config: ExtractConfig) -> list[str]:
    """File names in `--out` that the lists of this run take."""
    return [f"{n}{_list_suffix(config)}.txt" for n in LIST_NAMES]


def write_lists(results: Sequence[VideoResult], config: ExtractConfig) -> list[Path]:
    """Annotation lists (`<rel> <count> <label>`, mmaction2/TSN rawframes) and the failure list.

    `ann_flow.txt`: flow folder and its number of flow fields (N - step); `ann_rgb.txt`
    (with RGB frames): folder and N frames; `ann_h5.txt`: `<rel>.h5` and N - step. The
    failure list `failures.txt` has `<video>\\t<message>` lines; it is removed when nothing
    failed. Under torchrun each rank writes its own `*.rank<R>.txt` (a rerun without
    torchrun skips everything and writes the whole lists).
    """
    c = config
    sfx = _list_suffix(c)
    clean_stale(c.out, set(reserved_names(c)))  # temporary lists of killed runs
    ok = sorted((r for r in results if r.status in ("done", "skipped")), key=lambda r: r.rel)
    written = []
    lists: dict[str, list[str]] = {}
    if any(f in DIR_FORMATS for f in c.formats):
        lists["ann_flow"] = [f"{r.rel} {r.flows} {r.label}" for r in ok]
        if c.frames and "jpeg" in c.formats:
            lists["ann_rgb"] = [f"{r.rel} {r.frames} {r.label}" for r in ok]
    if "h5" in c.formats:
        lists["ann_h5"] = [f"{r.rel}.h5 {r.flows} {r.label}" for r in ok]
    texts = {c.out / f"{name}{sfx}.txt": "".join(line + "\n" for line in lines) for name, lines in lists.items()}
    failures = sorted((r for r in results if r.status == "failed"), key=lambda r: r.src)
    fpath = c.out / f"failures{sfx}.txt"
    if failures:
        texts[fpath] = "".join(f"{r.src}\t{r.message}\n" for r in failures)
    errors: list[OSError] = []
    for path, text in texts.items():
        try:
            _atomic_write_text(path, text)
            written.append(path)
        except OSError as e:
            errors.append(e)
    if not failures:
        try:
            fpath.unlink(missing_ok=True)
        except OSError as e:
            errors.append(os_error(e, fpath))
    if errors:
        e = errors[0]
        more = f" (and {len(errors) - 1} more list(s))" if len(errors) > 1 else ""
        raise TVNetError(f"{e.filename}: cannot write list ({e.strerror}){more}; finished videos "
                         f"are kept, a rerun skips them and writes the lists")
    return written
