"""`tvnet extract`: whole video datasets to optical flow, fast, resumable.

A video is complete only under its final name, so a rerun skips it (resume); `overwrite`
redoes it. Bad videos fail alone: the others complete, a failure list is written, and the
summary says how many failed. Several devices: one spawned worker process per device,
videos sharded; under torchrun (RANK/WORLD_SIZE) each process takes its own shard.

Modules: `config` (settings and results), `jobs` (inputs, labels, shards, devices, resume
checks), `pipeline` (decode -> TVNet -> write on one device; worker processes; the
pipeline diagram), `progress` (the expected number of flow fields), `lists` (output folder
check, annotation and failure lists).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from .config import FORMATS, ExtractConfig, ExtractSummary, Progress, VideoJob, VideoResult
from ..errors import TVNetError
from .jobs import (_complete_counts, assign_labels, check_job, clean_stale_outputs, collect_videos, final_paths,
                   is_complete, plan, read_classes, shard)
from .lists import check_output, write_lists
from .lock import OutputBusy, lock_output
from .pipeline import _Runner, _run_spawned, build_model
from .progress import FieldTotal
from ..io.formats import write_run_record

__all__ = [
    "FORMATS", "ExtractConfig", "ExtractSummary", "OutputBusy", "Progress", "VideoJob", "VideoResult",
    "assign_labels", "check_job", "lock_output", "build_model", "check_output", "collect_videos", "extract", "final_paths",
    "is_complete", "plan", "read_classes", "shard", "write_lists",
]


def extract(inputs: Sequence[str | Path], config: ExtractConfig,
            progress: Progress | None = None) -> ExtractSummary:
    """Extract flow for every video of `inputs` into `config.out`; see the package doc.

    Raises `TVNetError` for problems that stop everything (missing input, output folder
    not writable, bad model), `OutputBusy` when another run holds `config.out`; a bad
    video (or one whose output path is taken by something foreign) only adds a "failed"
    result.
    """
    t0 = time.perf_counter()
    wanted = progress is not None  # without a listener no header is read for the field total
    progress = progress or (lambda kind, value: None)
    check_output(config.out)
    with lock_output(config.out, config.rank, config.world_size):
        jobs, failures = plan(inputs, config)
        clean_stale_outputs(jobs, config)
        progress("videos", len(jobs) + len(failures))
        results: list[VideoResult] = []
        for r in failures:
            results.append(r)
            progress("video", r)
        todo = []
        for job in jobs:
            try:
                states = check_job(job, config)  # inside --out, nothing foreign
                complete = not config.overwrite and all(s == "ours" for s in states.values())
                counts = _complete_counts(job, config) if complete else None
            except TVNetError as e:
                r = VideoResult(str(job.src), str(job.rel), "failed", label=job.label, message=str(e))
            else:
                if counts is None:
                    todo.append(job)
                    continue
                r = VideoResult(str(job.src), str(job.rel), "skipped", counts[1], counts[0], job.label)
            results.append(r)
            progress("video", r)
        if todo:
            build_model(config)  # fail early (bad preset / weights) before any process starts
            fields = FieldTotal(todo if wanted else [], config.step, progress)  # "total" in flow fields
            try:
                if len(config.devices) > 1:
                    results += _run_spawned(todo, config, fields)
                else:
                    results += _Runner(todo, config, config.devices[0], fields).run()
            finally:
                fields.close()
        else:
            progress("total", 0)
        summary = ExtractSummary(results=results, seconds=time.perf_counter() - t0)
        summary.lists = write_lists(results, config)
        summary.lists += write_run_record(config, results)  # OUT/tvnet.json (io.formats)
    return summary
