"""`tvnet extract`: whole video datasets to optical flow, fast, resumable.

Pipeline (one process per device):

    decoder threads (PyAV, one video each) --pairs--> bounded queue --> batcher (main thread)
        packs (frame t, frame t+step) pairs across videos into batches of `batch`
        --> model.predict on the device --> quantise / cast on the device --> bytes to CPU
        --> writer thread pool (Pillow JPEG, h5py, .flo, .npy) into a temporary name
        --> rename to the final name when the video's last field is written.

Memory is bounded by the queue sizes (a few batches), never by video length. A video is
complete only under its final name, so a rerun skips it (resume); `overwrite` redoes it.
Bad videos fail alone: the others complete, a failure list is written, and the summary
says how many failed. Several devices: one spawned worker process per device, videos
sharded; under torchrun (RANK/WORLD_SIZE) each process takes its own shard.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .config import ConfigMixin
from .errors import TVNetError
from .io.video import is_video_name, iter_frames, output_size, probe
from .io.writers import DIR_FORMATS, H5_DTYPES, DirOutput, H5Output, count_outputs, h5_counts

FORMATS = ("jpeg", "h5", "flo", "npy")
FAILURES_FILE = "failures.txt"

Progress = Callable[[str, Any], None]
"""progress(kind, value): ("total", n_videos), ("flows", n_new_fields), ("video", VideoResult)."""


@dataclass(frozen=True)
class ExtractConfig(ConfigMixin):
    """Everything `extract` needs besides the inputs."""

    out: Path
    formats: tuple[str, ...] = ("jpeg",)
    preset: str = "tvnet-50"
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
    h5_dtype: str = "float16"
    jpeg_quality: int = 95
    batch: int = 8  # pairs per model call
    fused: bool = True  # compiled TV-L1 kernel (native.py / fused.py, cached); False = plain PyTorch
    devices: tuple[str, ...] = ("cpu",)  # one worker process per device when > 1
    overwrite: bool = False
    classes: Path | None = None  # class names, one a line ("name" or UCF101 "index name")
    decoders: int = 2  # videos decoded at once (threads)
    writers: int = 4  # writer threads
    torch_threads: int | None = None  # torch.set_num_threads in each worker
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
        positive = {"bound": self.bound, "step": self.step, "batch": self.batch,
                    "decoders": self.decoders, "writers": self.writers}
        for opt in ("width", "height", "short_side", "scales", "warps", "iters", "torch_threads"):
            if getattr(self, opt) is not None:
                positive[opt] = getattr(self, opt)
        for name, v in positive.items():
            if v <= 0:
                raise TVNetError(f"--{name.replace('_', '-')} must be > 0, got {v}")
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


def torchrun_shard(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from a torchrun environment, (0, 1) otherwise."""
    env = os.environ if env is None else env
    try:
        return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    except ValueError:
        raise TVNetError(f"bad RANK/WORLD_SIZE: {env.get('RANK')!r}/{env.get('WORLD_SIZE')!r}") from None


def parse_gpus(spec: str | None, cuda_count: int, local_rank: int | None = None) -> tuple[str, ...]:
    """`--gpus` -> device names. "" = CPU; "0,1" = cuda:0, cuda:1; None = cuda:0 (or
    cuda:LOCAL_RANK under torchrun) when CUDA is there, else CPU."""
    if spec is None:
        if cuda_count == 0:
            return ("cpu",)
        return (f"cuda:{local_rank or 0}",)
    spec = spec.strip()
    if spec in ("", "cpu"):
        return ("cpu",)
    try:
        ids = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise TVNetError(f"--gpus must be a list like 0,1 (or \"\" for CPU), not {spec!r}") from None
    for i in ids:
        if not 0 <= i < cuda_count:
            raise TVNetError(f"--gpus {spec}: GPU {i} not available ({cuda_count} CUDA devices)")
    return tuple(f"cuda:{i}" for i in dict.fromkeys(ids))


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
# the per-device pipeline
# ---------------------------------------------------------------------------------------
class _Video:
    """Book-keeping of one video in flight: outputs, pending writes, completion."""

    def __init__(self, job: VideoJob, outputs: list) -> None:
        self.job = job
        self.outputs = outputs  # DirOutput / H5Output, created once the file opened as a video
        self.lock = threading.Lock()
        self.pending = 0  # frames and pairs handed on but not yet written
        self.decoded: int | None = None  # frames, once decoding ended
        self.info = None
        self.error = ""
        self.closed = False

    def add_pending(self, n: int = 1) -> None:
        with self.lock:
            self.pending += n

    def fail(self, message: str) -> None:
        with self.lock:
            if not self.error:
                self.error = message

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def task_done(self, on_close: Callable[["_Video"], None]) -> None:
        with self.lock:
            self.pending -= 1
        self.maybe_close(on_close)

    def decode_finished(self, frames: int, on_close: Callable[["_Video"], None]) -> None:
        with self.lock:
            self.decoded = frames
        self.maybe_close(on_close)

    def maybe_close(self, on_close: Callable[["_Video"], None]) -> None:
        with self.lock:
            if self.closed or self.decoded is None or self.pending > 0:
                return
            self.closed = True
        on_close(self)


@dataclass
class _Pair:
    video: _Video
    index: int  # flow field index, 0-based
    frame0: np.ndarray  # (H, W, 3) uint8
    frame1: np.ndarray


_END = object()


def build_model(config: ExtractConfig):
    """TVNet from `weights` or `preset`, with scales/warps/iters overrides."""
    from .model import TVNet

    overrides = {k: getattr(config, k) for k in ("scales", "warps", "iters") if getattr(config, k)}
    if config.weights is not None:
        model = TVNet.from_file(config.weights, **overrides)
    else:
        model = TVNet.from_preset(config.preset, **overrides)
    model.fused = config.fused
    return model


def _model_meta(config: ExtractConfig, model) -> dict:
    return {"model": str(config.weights) if config.weights else config.preset,
            "parameters": model.config.to_dict()}


class _Runner:
    """Runs the pipeline for a list of videos on one device."""

    def __init__(self, jobs: list[VideoJob], config: ExtractConfig, device: str,
                 progress: Progress | None) -> None:
        self.jobs = jobs
        self.config = config
        self.device = device
        self.progress = progress or (lambda kind, value: None)
        self.pairs: queue.Queue = queue.Queue(maxsize=2 * config.batch + config.decoders)
        self.job_queue: queue.Queue = queue.Queue()
        self.results: list[VideoResult] = []
        self.results_lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(4 * config.batch + 2 * config.writers)
        self.pool = ThreadPoolExecutor(config.writers, thread_name_prefix="tvnet-write")
        self.model_meta: dict = {}

    # -- decode side ---------------------------------------------------------------------
    def _make_outputs(self, job: VideoJob) -> list:
        c = self.config
        outs = []
        paths = final_paths(job, c)
        if any(f in DIR_FORMATS for f in c.formats) and (c.overwrite or not paths[0].exists()):
            outs.append(DirOutput(paths[0], c.formats, frames=c.frames, start_index=c.start_index,
                                  jpeg_quality=c.jpeg_quality))
        if "h5" in c.formats and (c.overwrite or not paths[-1].exists()):
            try:
                outs.append(H5Output(paths[-1], c.h5_dtype, c.bound))
            except OSError:
                for o in outs:
                    o.abort()
                raise
        return outs

    def _submit(self, video: _Video, fn: Callable[[], None]) -> None:
        """Run a write of `video` in the pool (bounded: blocks while too many are queued)."""
        self.slots.acquire()

        def task() -> None:
            try:
                if not video.failed:
                    fn()
            except OSError as e:
                video.fail(f"{video.job.src}: cannot write output ({e.strerror or e}: {e.filename or ''})")
            except Exception as e:  # noqa: BLE001 - one bad video must not stop the dataset
                video.fail(f"{video.job.src}: {type(e).__name__}: {e}")
            finally:
                self.slots.release()
                video.task_done(self._close)

        self.pool.submit(task)

    def _size(self, width: int, height: int) -> tuple[int, int] | None:
        c = self.config
        if c.width is None and c.height is None and c.short_side is None:
            return None
        return output_size(width, height, c.width, c.height, c.short_side)

    def _decode_one(self, job: VideoJob) -> None:
        """Decode one video into frame writes and (t, t + step) pairs for the batcher."""
        c = self.config
        video = _Video(job, [])
        window: deque[np.ndarray] = deque()  # the last step + 1 frames
        n = 0
        try:
            info = probe(job.src)  # a bad file fails here, before any output exists
            video.info = info
            try:
                video.outputs = self._make_outputs(job)
            except OSError as e:
                raise TVNetError(f"{job.src}: cannot write output ({e.strerror or e}: {e.filename})") from None
            outputs = video.outputs
            # always a fixed size: a stream that changes resolution still gives equal-size pairs
            size = self._size(info.width, info.height) or (info.height, info.width)
            frames = iter_frames(job.src, size)
            for frame in frames:
                if video.failed:  # a write failed: stop decoding this video
                    frames.close()
                    break
                if c.frames and "jpeg" in c.formats:
                    video.add_pending()
                    self._submit(video, lambda i=n, f=frame: [o.write_frame(i, f) for o in outputs])
                window.append(frame)
                if len(window) > c.step:
                    video.add_pending()
                    self.pairs.put(_Pair(video, n - c.step, window.popleft(), frame))
                n += 1
            if n <= c.step and not video.failed:
                video.fail(f"{job.src}: only {n} frame(s) decoded, need at least {c.step + 1} for a flow field")
        except TVNetError as e:
            video.fail(str(e))
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the dataset
            video.fail(f"{job.src}: {type(e).__name__}: {e}")
        video.decode_finished(n, self._close)

    def _decoder(self) -> None:
        """Decoder thread: videos from the job queue until it is empty, then _END."""
        try:
            while True:
                try:
                    job = self.job_queue.get_nowait()
                except queue.Empty:
                    break
                self._decode_one(job)
        finally:
            self.pairs.put(_END)  # the batcher must never wait for a dead decoder

    # -- completion ------------------------------------------------------------------------
    def _record(self, result: VideoResult) -> None:
        with self.results_lock:
            self.results.append(result)
        self.progress("video", result)

    def _close(self, video: _Video) -> None:
        """All writes of `video` are done: rename to final names, or clean up after a failure."""
        job = video.job
        frames = video.decoded or 0
        flows = max(0, frames - self.config.step)
        if not video.failed:
            meta = {"source": str(job.src), "fps": float(video.info.fps) if video.info else 0.0,
                    "frames": frames, "flows": flows, "step": self.config.step,
                    "start_index": self.config.start_index, "label": job.label,
                    **self.model_meta}
            try:
                for o in video.outputs:
                    o.finish(meta)
            except (OSError, TVNetError) as e:
                video.fail(f"{job.src}: cannot finish output ({e})")
        if video.failed:
            for o in video.outputs:
                o.abort()
            self._record(VideoResult(str(job.src), str(job.rel), "failed", frames, 0, job.label, video.error))
        else:
            self._record(VideoResult(str(job.src), str(job.rel), "done", frames, flows, job.label))

    # -- device side -------------------------------------------------------------------------
    def _run_batch(self, model, batch: list[_Pair], wants: set[str]) -> None:
        import torch

        from .io.quantize import quantize

        live = [p for p in batch if not p.video.failed]
        for p in batch:
            if p.video.failed:
                p.video.task_done(self._close)
        if not live:
            return
        f0 = torch.from_numpy(np.stack([p.frame0 for p in live])).to(self.device)  # (B, H, W, 3)
        f1 = torch.from_numpy(np.stack([p.frame1 for p in live])).to(self.device)
        try:
            flow = model.predict(f0.permute(0, 3, 1, 2), f1.permute(0, 3, 1, 2))  # (B, 2, H, W)
        except torch.cuda.OutOfMemoryError:
            raise TVNetError(f"{self.device}: out of memory for a batch of {len(live)} pairs of "
                             f"{tuple(f0.shape[1:3])} frames; use a smaller --batch or size") from None
        rep: dict[str, np.ndarray] = {}
        if "q" in wants:
            rep["q"] = quantize(flow, self.config.bound).cpu().numpy()  # (B, 2, H, W) uint8
        if "f16" in wants:
            rep["f16"] = flow.half().cpu().numpy()
        if "f32" in wants:
            rep["f32"] = flow.float().cpu().numpy()
        for i, p in enumerate(live):
            fields = {k: v[i] for k, v in rep.items()}  # (2, H, W) each
            p.video.add_pending()
            self._submit(p.video, lambda p=p, fields=fields: [o.write_flow(p.index, fields)
                                                            for o in p.video.outputs])
            p.video.task_done(self._close)  # the pair itself (its write is counted by _submit)
        self.progress("flows", len(live))

    def run(self) -> list[VideoResult]:
        import torch

        c = self.config
        threads_before = torch.get_num_threads()
        if c.torch_threads:
            torch.set_num_threads(c.torch_threads)
        try:
            return self._run(build_model(c).to(self.device).eval())
        finally:
            torch.set_num_threads(threads_before)  # a library call leaves the caller's setting

    def _run(self, model) -> list[VideoResult]:
        c = self.config
        self.model_meta = _model_meta(c, model)
        wants = {"q"} if "jpeg" in c.formats else set()
        if "flo" in c.formats or "npy" in c.formats:
            wants.add("f32")
        if "h5" in c.formats:
            wants.add({"uint8": "q", "float16": "f16", "float32": "f32"}[c.h5_dtype])
        for job in self.jobs:
            self.job_queue.put(job)
        threads = [threading.Thread(target=self._decoder, name=f"tvnet-decode-{i}", daemon=True)
                   for i in range(min(c.decoders, max(1, len(self.jobs))))]
        for t in threads:
            t.start()
        buckets: dict[tuple, list[_Pair]] = {}
        running = len(threads)
        try:
            while running:
                item = self.pairs.get()
                if item is _END:
                    running -= 1
                    continue
                key = item.frame0.shape
                buckets.setdefault(key, []).append(item)
                if len(buckets[key]) >= c.batch:
                    self._run_batch(model, buckets.pop(key), wants)
                elif sum(map(len, buckets.values())) > 2 * c.batch:  # many sizes: bound memory
                    self._run_batch(model, buckets.pop(max(buckets, key=lambda k: len(buckets[k]))), wants)
            for key in list(buckets):
                self._run_batch(model, buckets.pop(key), wants)
            for t in threads:
                t.join()
        finally:
            self.pool.shutdown(wait=True)
        return self.results


# ---------------------------------------------------------------------------------------
# several devices: one spawned process each
# ---------------------------------------------------------------------------------------
def _worker(wid: int, jobs: list[VideoJob], config: ExtractConfig, device: str, events) -> None:
    """Entry point of spawned worker `wid`: run its shard, stream progress and results back."""
    try:
        if device.startswith("cuda"):
            import torch

            torch.cuda.set_device(device)
        _Runner(jobs, config, device, lambda kind, value: events.put((kind, value))).run()
    except TVNetError as e:
        events.put(("error", str(e)))
    except Exception as e:  # noqa: BLE001 - reported by the parent as this worker's failure
        events.put(("error", f"worker on {device}: {type(e).__name__}: {e}"))
    events.put(("exit", wid))


def _run_spawned(jobs: list[VideoJob], config: ExtractConfig, progress: Progress) -> list[VideoResult]:
    """One process per device, videos sharded between them; progress merged here."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = []
    for wid, device in enumerate(config.devices):
        p = ctx.Process(target=_worker, name=f"tvnet-extract-{device}",
                        args=(wid, shard(jobs, wid, len(config.devices)), config, device, events))
        p.start()
        procs.append(p)
    results: list[VideoResult] = []
    errors: list[str] = []
    live = set(range(len(procs)))
    while live:
        try:
            kind, value = events.get(timeout=1.0)
        except queue.Empty:
            for wid in list(live):
                if not procs[wid].is_alive():  # died without saying goodbye (killed, OOM)
                    errors.append(f"worker on {config.devices[wid]} died (exit code {procs[wid].exitcode})")
                    live.discard(wid)
            continue
        if kind == "exit":
            live.discard(value)
        elif kind == "error":
            errors.append(value)
        else:
            if kind == "video":
                results.append(value)
            progress(kind, value)
    for p in procs:
        p.join()
    seen = {r.rel for r in results}
    msg = "; ".join(errors) or "worker stopped"
    for j in jobs:  # videos a dead worker never reported
        if str(j.rel) not in seen:
            r = VideoResult(str(j.src), str(j.rel), "failed", label=j.label, message=f"{j.src}: {msg}")
            results.append(r)
            progress("video", r)
    return results


# ---------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------
def check_output(out: Path) -> None:
    """The output folder must exist or be creatable, and be writable."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".tvnet-write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        raise TVNetError(f"{out}: output folder cannot be written ({e.strerror or e})") from None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    tmp.replace(path)


def _list_suffix(config: ExtractConfig) -> str:
    return f".rank{config.rank}" if config.world_size > 1 else ""


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
    ok = sorted((r for r in results if r.status in ("done", "skipped")), key=lambda r: r.rel)
    written = []
    lists: dict[str, list[str]] = {}
    if any(f in DIR_FORMATS for f in c.formats):
        lists["ann_flow"] = [f"{r.rel} {r.flows} {r.label}" for r in ok]
        if c.frames and "jpeg" in c.formats:
            lists["ann_rgb"] = [f"{r.rel} {r.frames} {r.label}" for r in ok]
    if "h5" in c.formats:
        lists["ann_h5"] = [f"{r.rel}.h5 {r.flows} {r.label}" for r in ok]
    for name, lines in lists.items():
        path = c.out / f"{name}{sfx}.txt"
        _atomic_write_text(path, "".join(line + "\n" for line in lines))
        written.append(path)
    failures = sorted((r for r in results if r.status == "failed"), key=lambda r: r.src)
    fpath = c.out / f"failures{sfx}.txt"
    if failures:
        _atomic_write_text(fpath, "".join(f"{r.src}\t{r.message}\n" for r in failures))
        written.append(fpath)
    else:
        fpath.unlink(missing_ok=True)
    return written


def plan(inputs: Sequence[str | Path], config: ExtractConfig) -> tuple[list[VideoJob], list[VideoResult]]:
    """All videos of this process's shard, labelled, plus failures found while listing."""
    pairs, failures = collect_videos(inputs, config.out)
    classes = read_classes(config.classes) if config.classes is not None else None
    jobs = shard(assign_labels(pairs, classes), config.rank, config.world_size)
    failures = shard(failures, config.rank, config.world_size)
    return jobs, failures


def extract(inputs: Sequence[str | Path], config: ExtractConfig,
            progress: Progress | None = None) -> ExtractSummary:
    """Extract flow for every video of `inputs` into `config.out`; see the module doc.

    Raises `TVNetError` for problems that stop everything (missing input, output folder
    not writable, bad model); a bad video only adds a "failed" result.
    """
    t0 = time.perf_counter()
    progress = progress or (lambda kind, value: None)
    check_output(config.out)
    jobs, failures = plan(inputs, config)
    progress("total", len(jobs) + len(failures))
    results: list[VideoResult] = []
    for r in failures:
        results.append(r)
        progress("video", r)
    todo = []
    for job in jobs:
        if not config.overwrite and is_complete(job, config):
            flows, frames = _complete_counts(job, config)
            r = VideoResult(str(job.src), str(job.rel), "skipped", frames, flows, job.label)
            results.append(r)
            progress("video", r)
        else:
            todo.append(job)
    if todo:
        build_model(config)  # fail early (bad preset / weights) before any process starts
        if len(config.devices) > 1:
            results += _run_spawned(todo, config, progress)
        else:
            results += _Runner(todo, config, config.devices[0], progress).run()
    summary = ExtractSummary(results=results, seconds=time.perf_counter() - t0)
    summary.lists = write_lists(results, config)
    return summary
