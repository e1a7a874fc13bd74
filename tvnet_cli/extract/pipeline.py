"""The per-device `tvnet extract` pipeline, and one spawned worker process per device.

Pipeline (one process per device):

    decoder threads (PyAV, one video each) --pairs--> bounded queue --> batcher (main thread)
        packs (frame t, frame t+step) pairs across videos into batches of `batch`, one frame size each
        --> staging: each frame uploaded once, pairs formed on the device (`staging.py`)
        --> model.predict on the device --> quantise / cast on the device --> bytes to CPU,
            handed to the writers after the next batch was launched (double buffering)
        --> writer thread pool (Pillow JPEG, h5py, .flo, .npy) into a temporary name
        --> rename to the final name when the video's last field is written.

Memory is bounded by the queue sizes (a few batches), never by video length; freed heap
memory is handed back to the OS after every batch (`_heap_trimmer`). A video is
complete only under its final name (see `jobs.is_complete`). Several devices: one spawned
worker process per device (`_worker`, importable here for `spawn`), videos sharded.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import TVNetError
from ..io.video import iter_frames, output_size, probe
from ..io.writers import DirOutput, H5Output
from .config import MAX_SIDE, ExtractConfig, Progress, VideoJob, VideoResult
from .jobs import check_job, outputs, shard

if TYPE_CHECKING:  # torch is imported on first use, not with the CLI
    from .staging import Download


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
        self.computed = 0  # flow fields computed (reported as "flows"), main thread only
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


def _heap_trimmer() -> Callable[[], None]:
    """glibc's `malloc_trim(0)`, else a no-op. Freed frames, fields and model temporaries
    (MBs each) stay in glibc's heaps once its dynamic mmap threshold has risen past their size,
    and the heaps of the several threads fragment: RSS then grows with video length (1.6x
    from 20 to 200 frames of 768x576). Trimming after every batch hands the free pages back,
    so memory is bounded by the batch and queue sizes (bench/bench_extract_memory.py)."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
        trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def build_model(config: ExtractConfig):
    """TVNet from `weights` or `preset`, with scales/warps/iters overrides and the backend."""
    from ..runtime import load_model

    overrides = {k: getattr(config, k) for k in ("scales", "warps", "iters")}
    return load_model(config.weights or config.preset, overrides, config.backend)


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
        from .staging import CPU_BATCH, GPU_BATCH_CAP

        # queues sized for the largest batch this device may run (--batch, else staging's default)
        self.nominal = config.batch or (GPU_BATCH_CAP if str(device).startswith("cuda") else CPU_BATCH)
        self.batch_sizes: dict[tuple[int, ...], int] = {}  # frame shape -> pairs per batch (auto)
        self.in_flight: tuple[list[_Pair], Download] | None = None  # launched, not yet handed off
        self.pairs: queue.Queue = queue.Queue(maxsize=2 * self.nominal + config.decoders)
        self.job_queue: queue.Queue = queue.Queue()
        self.results: list[VideoResult] = []
        self.results_lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(4 * self.nominal + 2 * config.writers)
        self.pool = ThreadPoolExecutor(config.writers, thread_name_prefix="tvnet-write")
        self.model_meta: dict = {}
        self.stopping = threading.Event()  # set on Ctrl-C: decoders stop at the next frame
        self.trim = _heap_trimmer()

    # -- decode side ---------------------------------------------------------------------
    def _make_outputs(self, job: VideoJob) -> list:
        """Writers for the outputs of `job` still to do (all with overwrite); `TVNetError`
        when an output path is not tvnet's (checked again: the folder may have changed)."""
        c = self.config
        outs = []
        states = check_job(job, c)
        for path, kind in outputs(job, c):
            if states[path] == "ours" and not c.overwrite:
                continue
            try:
                if kind == "h5":
                    outs.append(H5Output(path, c.h5_dtype, c.bound, c.h5_compression))
                else:
                    outs.append(DirOutput(path, c.formats, frames=c.frames, start_index=c.start_index,
                                          jpeg_quality=c.jpeg_quality))
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

    def _size(self, job: VideoJob, width: int, height: int) -> tuple[int, int] | None:
        """(height, width) to resize to, None to keep; `TVNetError` when it is too large."""
        c = self.config
        if c.width is None and c.height is None and c.short_side is None:
            return None
        h, w = output_size(width, height, c.width, c.height, c.short_side)
        if max(h, w) > MAX_SIDE:
            raise TVNetError(f"{job.src}: frames of {width}x{height} resized to {w}x{h}: larger than the largest frame "
                             f"side {MAX_SIDE}; choose a smaller size")
        return h, w

    def _decode_one(self, job: VideoJob) -> None:
        """Decode one video into frame writes and (t, t + step) pairs for the batcher."""
        c = self.config
        video = _Video(job, [])
        window: deque[np.ndarray] = deque()  # the last step + 1 frames
        n = 0
        try:
            info = probe(job.src, autorotate=c.autorotate)  # a bad file fails here, before any output exists
            video.info = info
            # always a fixed size: a stream that changes resolution still gives equal-size pairs
            size = self._size(job, info.width, info.height) or (info.height, info.width)
            try:
                video.outputs = self._make_outputs(job)
            except OSError as e:
                raise TVNetError(f"{job.src}: cannot write output ({e.strerror or e}: {e.filename})") from None
            self.progress("start", str(job.rel))
            outputs = video.outputs
            frames = iter_frames(job.src, size, autorotate=c.autorotate)
            for frame in frames:
                if self.stopping.is_set():  # interrupted: never finish this video
                    video.fail(f"{job.src}: interrupted")
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
                if self.stopping.is_set():
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
                    "class_name": job.class_name, **self.model_meta}
            if video.info:  # (H, W) upright; H5Output adds output_size and resized
                meta["source_size"] = [video.info.height, video.info.width]
            try:
                for o in video.outputs:
                    o.finish(meta)
            except (OSError, TVNetError) as e:
                video.fail(f"{job.src}: cannot finish output ({e})")
        if video.failed:
            for o in video.outputs:
                o.abort()
            if video.computed:  # its fields were counted as they came: take them back
                self.progress("flows", -video.computed)
            self._record(VideoResult(str(job.src), str(job.rel), "failed", frames, 0, job.label, video.error))
        else:
            self._record(VideoResult(str(job.src), str(job.rel), "done", frames, flows, job.label))

    # -- device side -------------------------------------------------------------------------
    def _batch_for(self, shape: tuple[int, ...], model) -> int:
        """Pairs per batch for frames of `shape`: --batch, else `staging.auto_batch`."""
        if self.config.batch is not None:
            return self.config.batch
        if shape not in self.batch_sizes:
            import torch

            from .staging import auto_batch

            h, w = shape[:2]
            levels = model.config.level_sizes(h, w)
            self.batch_sizes[shape] = auto_batch(torch.device(self.device), h, w, levels,
                                                 model.u0.element_size())
        return self.batch_sizes[shape]

    def _run_batch(self, model, batch: list[_Pair], wants: set[str]) -> None:
        """Launch `batch` on the device, then hand the previous batch's fields to the writers
        (double buffering: the host waits for batch N-1 only once batch N is queued; see
        `staging` for the timeline)."""
        launched = self._launch(model, batch, wants)
        self._hand_off()
        self.in_flight = launched
        self.trim()

    def _launch(self, model, batch: list[_Pair], wants: set[str]) -> tuple[list[_Pair], Download] | None:
        """Upload the live pairs of `batch` (each frame once), run TVNet, quantise / cast on
        the device and start the download. No host wait here (besides the model's own)."""
        import torch

        from ..io.quantize import quantize

        live = [p for p in batch if not p.video.failed]
        for p in batch:
            if p.video.failed:
                p.video.task_done(self._close)
        if not live:
            return None
        try:
            staged = self.staging.upload([(p.frame0, p.frame1) for p in live],
                                         self._batch_for(live[0].frame0.shape, model))
            flow = model.predict(*staged.pairs())  # (B, 2, H, W)
        except torch.cuda.OutOfMemoryError:
            raise TVNetError(f"{self.device}: out of memory for a batch of {len(live)} pairs of "
                             f"{live[0].frame0.shape[:2]} frames; use a smaller --batch or size") from None
        rep: dict[str, torch.Tensor] = {}
        if "q" in wants:
            rep["q"] = quantize(flow, self.config.bound)  # (B, 2, H, W) uint8
        if "f16" in wants:
            rep["f16"] = flow.half()
        if "f32" in wants:
            rep["f32"] = flow.float()
        return live, self.staging.download(staged, rep)

    def _hand_off(self) -> None:
        """Wait for the batch in flight (its event) and submit its fields to the writers."""
        if self.in_flight is None:
            return
        live, download = self.in_flight
        self.in_flight = None
        rep = download.wait()  # (B, 2, H, W) numpy each
        for i, p in enumerate(live):
            fields = {k: v[i] for k, v in rep.items()}  # (2, H, W) each
            p.video.add_pending()
            p.video.computed += 1
            self._submit(p.video, lambda p=p, fields=fields: [o.write_flow(p.index, fields)
                                                            for o in p.video.outputs])
            p.video.task_done(self._close)  # the pair itself (its write is counted by _submit)
        self.progress("flows", len(live))

    def run(self) -> list[VideoResult]:
        """Bind this thread to the device (kernels launch there) with the worker's torch
        threads, run, restore both: a library call leaves the caller's setting."""
        from ..runtime import cpu_share, on_device

        c = self.config
        n_cpu = sum(d == "cpu" for d in c.devices)
        threads = c.torch_threads or (cpu_share(n_cpu) if self.device == "cpu" and n_cpu > 1 else None)
        with on_device(self.device, threads):
            return self._run(build_model(c).to(self.device).eval())

    def _run(self, model) -> list[VideoResult]:
        from .staging import Staging

        c = self.config
        self.model_meta = _model_meta(c, model)
        self.staging = Staging(self.device)
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
                if len(buckets[key]) >= self._batch_for(key, model):
                    self._run_batch(model, buckets.pop(key), wants)
                elif sum(map(len, buckets.values())) > 2 * max(self._batch_for(k, model) for k in buckets):
                    # many sizes: bound memory
                    self._run_batch(model, buckets.pop(max(buckets, key=lambda k: len(buckets[k]))), wants)
            for key in list(buckets):
                self._run_batch(model, buckets.pop(key), wants)
            self._hand_off()  # the last batch
            for t in threads:
                t.join()
        except BaseException:  # Ctrl-C or an error: stop the decoders (unblocked by draining), no more writes
            self.stopping.set()
            while any(t.is_alive() for t in threads):
                try:
                    self.pairs.get(timeout=0.1)
                except queue.Empty:
                    pass
            raise
        finally:
            self.pool.shutdown(wait=True)
        return self.results


# ---------------------------------------------------------------------------------------
# several devices: one spawned process each
# ---------------------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent ends (even by kill -9), so no worker
    writes on after the run that holds the output lock is gone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def _worker(wid: int, jobs: list[VideoJob], config: ExtractConfig, device: str, events, parent: int = 0) -> None:
    """Entry point of spawned worker `wid`: run its shard, stream progress and results back.
    Ctrl-C is the parent's business (it stops the workers): ignored here, so no worker
    prints a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent:
        _die_with_parent(parent)
    try:  # _Runner.run binds the device and threads
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
    # workers start with SIGINT ignored (inherited through exec), so a Ctrl-C while they
    # import cannot print their tracebacks either; only the main thread may set handlers
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        for wid, device in enumerate(config.devices):
            p = ctx.Process(target=_worker, name=f"tvnet-extract-{device}",
                            args=(wid, shard(jobs, wid, len(config.devices)), config, device, events, os.getpid()))
            p.start()
            procs.append(p)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    try:
        return _gather(procs, jobs, config, events, progress)
    except BaseException:  # Ctrl-C: stop the workers; their unfinished outputs stay under temporary names
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        raise


def _gather(procs: list, jobs: list[VideoJob], config: ExtractConfig, events, progress: Progress
            ) -> list[VideoResult]:
    """Merge the workers' progress and results until every worker said goodbye or died."""
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
