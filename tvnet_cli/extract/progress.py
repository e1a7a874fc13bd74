"""Progress in flow fields: the expected total of a run from the videos' headers, corrected
as videos end (the events are listed at `config.Progress`).

The headers are read in a background thread while the run starts (about 2 ms a video: half
a minute for UCF-101's 13k videos would otherwise delay the first field); the total grows
as they are read, and a video that ends replaces its estimate by what it gave.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import TVNetError
from ..io.video import probe
from .config import Progress, VideoJob

_EVERY_S = 0.5  # at most this often a "total" while headers are read


def expected_fields(src: Path, step: int) -> int:
    """Flow fields `src` should give: its header's frame count (else duration x fps) - step;
    0 when the header says neither or the file is no video (its end corrects it)."""
    try:
        info = probe(src, autorotate=False)  # the header only: no frame decoded
    except TVNetError:
        return 0
    frames = info.header_frames or round(info.duration_s * info.fps)
    return max(0, frames - step)


class FieldTotal:
    """A `Progress` in front of another: reports ("total", expected fields) as headers are
    read and whenever a video ends with another count than expected (failed: 0); every other
    event passes through. Call `close` before the run returns (no event after it)."""

    def __init__(self, jobs: Sequence[VideoJob], step: int, progress: Progress) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.expected: dict[str, int] = {}  # videos whose header was read and that did not end yet
        self.ended: set[str] = set()
        self.total = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read_headers, args=(list(jobs), step),
                                       name="tvnet-headers", daemon=True)
        self.thread.start()

    def _read_headers(self, jobs: list[VideoJob], step: int) -> None:
        last = 0.0
        for job in jobs:
            if self.stop.is_set():
                return
            n = expected_fields(job.src, step)
            with self.lock:
                if str(job.rel) in self.ended:  # ended before its header was read: counted already
                    continue
                self.expected[str(job.rel)] = n
                self.total += n
                if time.perf_counter() - last >= _EVERY_S:
                    last = time.perf_counter()
                    self.progress("total", self.total)
        with self.lock:
            self.progress("total", self.total)

    def __call__(self, kind: str, value) -> None:
        if kind == "video":
            with self.lock:  # "total" is reported under the lock: the last one reported is the right one
                got = value.flows if value.status == "done" else 0
                self.ended.add(value.rel)
                change = got - self.expected.pop(value.rel, 0)
                if change:
                    self.total += change
                    self.progress("total", self.total)
        self.progress(kind, value)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
