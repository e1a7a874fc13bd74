"""One `tvnet extract` run per output folder: an exclusive lock on `<out>/.tvnet.lock`.

`fcntl.flock` on a file that is never removed: the kernel drops the lock when the holding
process ends in any way (kill -9 included), so a stale lock needs no clean-up and the next
run simply takes it over. The holder writes who it is (pid, host, start time, command)
into the file; a second run that finds the lock taken exits with status 2 and a one-line
message naming that holder. The lock is re-entrant within one process (the CLI takes it
before its progress bar, `extract()` again inside). Spawned workers do not take it: their
parent holds it for them, and they die with it (see `pipeline._worker`).

Under torchrun the ranks of one job write into one folder at once: each rank takes a
shared lock on `.tvnet.lock` (so no single run can start beside them) and an exclusive
lock on `.tvnet.rank<R>.lock` (so a second job's rank R cannot).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import TVNetError

LOCK_NAME = ".tvnet.lock"
_HELD: dict[str, int] = {}  # resolved lock path -> re-entry depth, in this process


class OutputBusy(TVNetError):
    """Another run holds the output folder: a usage-level failure (exit status 2)."""

    exit_code = 2


def _holder(path: Path) -> str:
    """Who holds `path`, from what it wrote there."""
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that has not written its details yet"


def _take(path: Path, exclusive: bool, out: Path) -> int:
    """Open `path` and flock it without waiting; the open descriptor holds the lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise TVNetError(f"{path}: cannot create the lock file ({e.strerror})") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputBusy(f"{out}: in use by another tvnet extract ({_holder(path)}); wait for it "
                         f"to finish or use another --out") from None
    except OSError as e:
        os.close(fd)
        raise TVNetError(f"{path}: cannot lock ({e.strerror})") from None
    return fd


def _write_holder(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S%z"), "command": command}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
    except OSError:
        pass  # the lock holds without its description


@contextmanager
def lock_output(out: Path, rank: int = 0, world_size: int = 1, command: str | None = None) -> Iterator[None]:
    """Hold `out` for this run (see the module doc); `OutputBusy` when another run has it."""
    out = Path(out)
    main = out / LOCK_NAME
    key = str(main.resolve())
    if key in _HELD:  # re-entered by the same process
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    if command is None:
        command = " ".join(["tvnet", *sys.argv[1:]])
    fds: list[int] = []
    try:
        if world_size > 1:
            fds.append(_take(main, False, out))
            fds.append(_take(out / f".tvnet.rank{rank}.lock", True, out))
        else:
            fds.append(_take(main, True, out))
        for fd in fds:
            _write_holder(fd, command)
        _HELD[key] = 1
        yield
    finally:
        if fds:
            _HELD.pop(key, None)
        for fd in reversed(fds):
            os.close(fd)  # closing the last descriptor releases the flock
