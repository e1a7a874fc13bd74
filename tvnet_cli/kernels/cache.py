"""Where compiled kernels live, and which files may be loaded from there.

Loading a shared library runs its code, so a cached kernel is loaded only from a folder that
this user owns and nobody else can write to, and only if the file itself is a regular file
owned by this user and not writable by others. The cache is `$TVNET_CACHE/kernels`, else
`$XDG_CACHE_HOME/tvnet/kernels` (`~/.cache/tvnet/kernels`); where that cannot be created or
fails the check (a read-only home, a foreign owner), `$TMPDIR/tvnet-kernels-<uid>` under the
same check, and if even that is unsafe (e.g. planted by another user in the world-writable
temp folder) a fresh private temporary folder for this process only.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """The configured kernel cache folder (may not exist yet)."""
    root = os.environ.get("TVNET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tvnet"
    return Path(root) / "kernels"


def _private(st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def safe_folder(path: Path) -> bool:
    """`path` is a real folder (not a link) that only this user can write to."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and _private(st)


def safe_file(path: Path) -> bool:
    """`path` is a regular file (not a link) that only this user can write to, in a safe folder."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _private(st) and safe_folder(path.parent)


def _make_private(path: Path) -> Path | None:
    """Create `path` (mode 0700) if missing; the folder if it passes `safe_folder`, else None."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return path if safe_folder(path) else None


_SCRATCH: list[Path] = []


def kernel_folders() -> list[Path]:
    """Safe folders to look for / build kernels in, best first (at least one)."""
    folders = [f for f in (_make_private(cache_root()),
                           _make_private(Path(tempfile.gettempdir()) / f"tvnet-kernels-{os.geteuid()}")) if f]
    if not folders:  # both unsafe or unwritable: a private folder of this process
        if not _SCRATCH:
            _SCRATCH.append(Path(tempfile.mkdtemp(prefix="tvnet-kernels-private-")))
        folders = list(_SCRATCH)
    return folders
