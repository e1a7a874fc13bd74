"""`tvnet extract` settings and results: ExtractConfig, VideoJob, VideoResult, ExtractSummary."""

from __future__ import annotations

import math

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import ConfigMixin
from ..errors import TVNetError
from ..io.formats import FORMATS  # the one registry of output formats
from ..io.writers import H5_COMPRESSIONS, H5_DTYPES

MAX_SIDE = 16384  # longest frame side extract resizes to (FFmpeg's scaler and memory draw the line)

Progress = Callable[[str, Any], None]
"""progress(kind, value), called from any thread of the calling process (worker processes'
events are forwarded): ("videos", n) videos of this run, once; ("total", n) flow fields the run
is expected to compute, from the videos' headers as they are read and again whenever a video
ends with another count (a failed one: 0); ("start", rel) a video's decoding begins;
("flows", n) n more fields computed (negative: those of a video that failed, taken back);
("video", VideoResult) a video ended (done, skipped or failed). The "flows" of a run add up
to its last "total" and to the fields written (`ExtractSummary.flows`)."""


@dataclass(frozen=True)
class ExtractConfig(ConfigMixin):
    """Everything `extract` needs besides the inputs."""

    out: Path
    formats: tuple[str, ...] = ("jpeg",)
    preset: str = "tvl1-fast"  # a TV-L1 pyramid at about TVNet-50's cost, far more accurate
    # (mean EPE 2.79 vs 4.00 on real GT, 2.96 vs 9.35 on generated scenes; BENCHMARKS.md front)
    scales: int | None = None  # override the preset's scales/warps/iters
    warps: int | None = None
    iters: int | None = None
    weights: Path | None = None  # a trained TVNet file (then `preset` is ignored)
    bound: float = 20.0  # quantisation bound in pixels (JPEG, HDF5 uint8)
    step: int = 1  # pairs (t, t + step)
    width: int | None = None
    height: int | None = None
    short_side: int | None = None
    start_index: int = 1  # file numbering: flow_x_00001.jpg is the first field
    frames: bool = True  # also write img_%05d.jpg RGB frames (jpeg format)
    autorotate: bool = True  # apply the video's rotation metadata (display matrix / rotate tag)
    h5_dtype: str = "float16"
    h5_compression: str = "lzf"  # lzf | gzip | none (io.writers.H5_COMPRESSIONS: sizes and speeds)
    jpeg_quality: int = 95
    batch: int | None = None  # pairs per model call; None = auto: 8 on the CPU; on CUDA as many as
    # fit min(4 GiB, free device memory / 4) at ~20 float planes per pair per pyramid level, at most
    # 256 (`extract.staging.auto_batch`; 256 at 340x256 on any GPU with 16 GiB free)
    backend: str = "auto"  # TV-L1 kernel: auto | torch | c | triton (runtime.load_model checks it)
    devices: tuple[str, ...] = ("cpu",)  # one worker process per device when > 1 ("cpu", "cuda:N")
    overwrite: bool = False
    classes: Path | None = None  # class names, one a line ("name" or UCF101 "index name")
    decoders: int = 2  # videos decoded at once (threads)
    writers: int = 4  # writer threads
    torch_threads: int | None = None  # torch threads in each worker (None: a share of the cores
    # for each of several CPU workers, else torch's)
    rank: int = 0  # this process's shard (torchrun RANK) ...
    world_size: int = 1  # ... of this many (torchrun WORLD_SIZE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "formats", tuple(dict.fromkeys(self.formats)))
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise TVNetError(f"--format must be among {', '.join(FORMATS)}, got {', '.join(bad) or 'none'}")
        if self.h5_dtype not in H5_DTYPES:
            raise TVNetError(f"--h5-dtype must be one of {', '.join(H5_DTYPES)}, not {self.h5_dtype!r}")
        if self.h5_compression not in H5_COMPRESSIONS:
            raise TVNetError(f"--h5-compression must be one of {', '.join(H5_COMPRESSIONS)}, not {self.h5_compression!r}")
        positive = {"bound": self.bound, "step": self.step,
                    "decoders": self.decoders, "writers": self.writers}
        for opt in ("width", "height", "short_side", "scales", "warps", "iters", "torch_threads", "batch"):
            if getattr(self, opt) is not None:
                positive[opt] = getattr(self, opt)
        for name, v in positive.items():
            if not (math.isfinite(v) and v > 0):  # NaN and inf too (NaN <= 0 is False)
                raise TVNetError(f"--{name.replace('_', '-')} must be > 0 and finite, got {v}")
        for name in ("width", "height", "short_side"):
            v = getattr(self, name)
            if v is not None and v > MAX_SIDE:
                raise TVNetError(f"--{name.replace('_', '-')} {v} is larger than the largest frame side "
                                 f"{MAX_SIDE}")
        if self.short_side is not None and (self.width is not None or self.height is not None):
            raise TVNetError("give either --short-side or --width/--height, not both")
        if self.start_index < 0:
            raise TVNetError(f"--start-index must be >= 0, got {self.start_index}")
        if not 1 <= self.jpeg_quality <= 100:
            raise TVNetError(f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}")
        if not 0 <= self.rank < self.world_size:
            raise TVNetError(f"rank {self.rank} is outside world size {self.world_size}")
        if not self.devices:
            raise TVNetError("no device to run on")


@dataclass(frozen=True)
class VideoJob:
    """One input video and where its outputs go: `<out>/<rel>/` and/or `<out>/<rel>.h5`."""

    src: Path
    rel: PurePosixPath  # output path relative to --out, without suffix: "Class/v_x"
    label: int = -1
    index: int = 0  # position in the sorted list of all videos (for sharding)

    @property
    def class_name(self) -> str:
        return self.rel.parent.name


@dataclass(frozen=True)
class VideoResult:
    """What happened to one video."""

    src: str
    rel: str
    status: str  # "done" | "skipped" | "failed"
    frames: int = 0  # decoded frames (RGB images written)
    flows: int = 0  # flow fields
    label: int = -1
    message: str = ""


@dataclass
class ExtractSummary:
    """Totals of one `extract` call (this process's shard)."""

    results: list[VideoResult] = field(default_factory=list)
    seconds: float = 0.0
    lists: list[Path] = field(default_factory=list)  # annotation / failure lists written

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def flows(self) -> int:
        """Flow fields computed in this run (skipped videos not counted)."""
        return sum(r.flows for r in self.results if r.status == "done")

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results if r.status == "done")

    @property
    def flows_per_s(self) -> float:
        return self.flows / self.seconds if self.seconds > 0 else 0.0
