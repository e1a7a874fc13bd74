"""`tvnet extract`: parse options, build an `ExtractConfig`, call `tvnet_cli.extract.extract`.

rich lives here only: the library reports progress through a callback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import OptionError, backend_option, check_devices

def _formats(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """`--format jpeg --format h5` or `--format jpeg,h5`; the choices are `io.formats.FORMATS`
    (imported here, not with the CLI: it brings numpy)."""
    from ..io.formats import FORMATS as FORMAT_CHOICES

    out = []
    for v in value or ("jpeg",):
        for f in v.split(","):
            f = f.strip().lower()
            if f not in FORMAT_CHOICES:
                raise click.BadParameter(f"{f!r} is not one of {', '.join(FORMAT_CHOICES)}")
            out.append(f)
    return tuple(dict.fromkeys(out))


@click.command(context_settings={"show_default": True})
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True,
              help="Output folder (mirrors the input folders).")
@click.option("--format", "-f", "formats", multiple=True, callback=_formats, metavar="FMT[,FMT]",
              help="jpeg (TSN/mmaction2 flow_x/flow_y/img JPEGs), h5 (one HDF5 file per video), "
                   "flo, npy (float fields). Repeat or comma-separate for several.  [default: jpeg]")
@click.option("--preset", default="tvl1-fast", show_default=True,
              help="Model preset (see `tvnet presets`); tvnet-50 is the paper's TVNet-50.")
@click.option("--scales", type=int, help="Override the preset's pyramid scales.")
@click.option("--warps", type=int, help="Override the preset's warps per scale.")
@click.option("--iters", type=int, help="Override the preset's iterations per warp.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trained TVNet weights file (instead of --preset).")
@click.option("--bound", type=float, default=20.0, help="Quantisation bound in pixels (JPEG, h5 uint8).")
@click.option("--step", type=int, default=1, help="Pair frame t with frame t+STEP.")
@click.option("--width", type=int, help="Resize frames to this width (alone: keep aspect ratio).")
@click.option("--height", type=int, help="Resize frames to this height (alone: keep aspect ratio).")
@click.option("--short-side", type=int, help="Resize so the shorter side has this length.")
@click.option("--start-index", type=int, default=1, help="Number of the first file (flow_x_00001.jpg).")
@click.option("--no-frames", is_flag=True, help="Do not write the img_*.jpg RGB frames (jpeg format).")
@click.option("--autorotate/--no-autorotate", default=True, show_default=True,
              help="Turn frames upright by the video's rotation metadata (phone videos); "
                   "--no-autorotate keeps the stored orientation.")
@click.option("--h5-dtype", type=click.Choice(["float16", "float32", "uint8"]), default="float16",
              help="HDF5 flow dtype (uint8 = quantised with --bound).")
@click.option("--h5-compression", type=click.Choice(["lzf", "gzip", "none"]), default="lzf",
              help="HDF5 compression: lzf (fast, float16 -27 %), gzip (level 4 + shuffle: float16 -40 %, "
                   "uint8 -86 %, ~3x slower to write) or none.")
@click.option("--jpeg-quality", type=int, default=95, help="JPEG quality, 1..100.")
@click.option("--batch", type=int, default=None,
              help="Frame pairs per model call (across videos).  [default: 8 on the CPU; on CUDA as "
                   "many as fit min(4 GiB, free GPU memory / 4) at ~20 float planes per pair per "
                   "pyramid level, at most 256]")
@backend_option
@click.option("--gpus", default=None,
              help="GPU ids, e.g. 0,1 (one worker process each); \"\" = CPU.  "
                   "[default: GPU 0 if CUDA is available, else CPU; cuda:LOCAL_RANK under torchrun]")
@click.option("--device", default=None,
              help="One device instead of --gpus: cpu, cuda, cuda:N, mps or auto (as the --gpus default).")
@click.option("--procs-per-device", type=int, default=1,
              help="Worker processes per device. On a GPU, 2-4 processes decode and encode on more "
                   "CPU cores while they share the GPU; on the CPU they split the cores.")
@click.option("--classes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Class names for the labels, one a line (or UCF101 classInd.txt). "
                   "[default: sorted class folder names]")
@click.option("--overwrite", is_flag=True, help="Redo videos that are already complete.")
@click.option("--decoders", type=int, default=2, help="Videos decoded at the same time (threads).")
@click.option("--writers", type=int, default=4, help="Writer threads (JPEG encoding, files).")
@click.option("--threads", type=int, help="torch CPU threads per worker.  [default: torch's]")
def extract(inputs: tuple[str, ...], out: Path, formats: tuple[str, ...], preset: str,
            scales: int | None, warps: int | None, iters: int | None, weights: Path | None,
            bound: float, step: int, width: int | None, height: int | None, short_side: int | None,
            start_index: int, no_frames: bool, autorotate: bool, h5_dtype: str, h5_compression: str, jpeg_quality: int, batch: int | None, backend: str,
            gpus: str | None, device: str | None, procs_per_device: int, classes: Path | None, overwrite: bool, decoders: int, writers: int,
            threads: int | None) -> None:
    """Compute optical flow for videos, folders of videos (recursive) or @list.txt files.

    Output mirrors each video's folder: UCF-101/ApplyEyeMakeup/v_x.avi ->
    OUT/ApplyEyeMakeup/v_x/flow_x_00001.jpg ... Re-running skips complete videos.
    One run at a time per OUT (a second one exits with status 2 naming the first). tvnet
    writes only inside OUT and never deletes or overwrites what it did not write: a video
    whose output path holds something else (a file, a link, a folder of other files) fails
    alone, and so does a video whose output folder would hold other videos' outputs
    (a.mp4 beside a folder a/ of videos). Exit status 1 when any video failed (see
    OUT/failures.txt), 2 for usage errors and a busy OUT, 130 when interrupted (a rerun
    removes the unfinished videos' temporary files and continues).
    """
    from ..errors import TVNetError
    from ..extract import ExtractConfig, build_model, check_output, extract as run_extract, lock_output
    from ..runtime import DistEnv

    for inp in inputs:
        p = Path(inp[1:] if inp.startswith("@") else inp)
        if not p.exists():
            raise click.BadParameter(f"{p}: not found", param_hint="INPUTS")
    devices = check_devices(device, gpus)
    try:
        env = DistEnv.from_env()
        if procs_per_device < 1:
            raise TVNetError(f"--procs-per-device must be >= 1, not {procs_per_device}")
        devices = tuple(d for d in devices for _ in range(procs_per_device))
        config = ExtractConfig(
            out=out, formats=formats, preset=preset, scales=scales, warps=warps, iters=iters,
            weights=weights, bound=bound, step=step, width=width, height=height,
            short_side=short_side, start_index=start_index, frames=not no_frames, autorotate=autorotate,
            h5_dtype=h5_dtype, h5_compression=h5_compression, jpeg_quality=jpeg_quality, batch=batch, backend=backend, devices=devices,
            overwrite=overwrite, classes=classes, decoders=decoders, writers=writers,
            torch_threads=threads, rank=env.rank, world_size=env.world_size)
    except TVNetError as e:
        raise OptionError(str(e)) from None

    # fatal errors before the bar, as one line: an unknown preset is a usage error (2),
    # an unreadable weights file or output folder a failure (1)
    try:
        build_model(config)
    except TVNetError as e:
        if weights is None:
            raise OptionError(str(e)) from None
        raise
    check_output(config.out)
    try:
        with lock_output(config.out, env.rank, env.world_size):  # before the bar: a busy folder is one line
            summary = _run_with_progress(inputs, config, run_extract)
    except KeyboardInterrupt:
        click.echo("interrupted: finished videos are kept; a rerun removes the unfinished ones' "
                   "temporary files and continues", err=True)
        sys.exit(130)
    if summary.failed:
        sys.exit(1)


def _run_with_progress(inputs, config, run_extract):
    """Run with one rich bar over the flow fields (fields/s, ETA, the videos being decoded),
    then print a summary table and where the outputs went."""
    import threading
    import time

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = Console(stderr=True)
    lock = threading.Lock()  # events come from decoder, writer and main threads
    state = {"flows": 0, "t0": time.perf_counter(), "videos": 0, "ended": 0, "now": {}}
    with Progress(TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("fields {task.fields[rate]:>7}/s"), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[videos]}"),
                  console=console) as bar:
        task = bar.add_task("extract", total=None, rate="-", videos="")

        def show_videos() -> None:
            now = ", ".join(state["now"])  # in the order they started
            if len(now) > 48:
                now = now[:47] + "…"
            bar.update(task, videos=escape(f"videos {state['ended']}/{state['videos']}  {now}".rstrip()))

        def progress(kind: str, value) -> None:
            with lock:
                if kind == "videos":
                    state["videos"] = value
                    show_videos()
                elif kind == "total":
                    bar.update(task, total=value)
                elif kind == "start":
                    state["now"][value] = None
                    show_videos()
                elif kind == "flows":
                    state["flows"] += value
                    dt = time.perf_counter() - state["t0"]
                    bar.update(task, advance=value, rate=f"{state['flows'] / dt:.1f}" if dt > 0 else "-")
                elif kind == "video":
                    if value.status == "failed":
                        bar.console.print(f"[red]failed[/red] {escape(value.message)}", highlight=False,
                                          soft_wrap=True)  # one line per video, never wrapped
                    state["ended"] += 1
                    state["now"].pop(value.rel, None)
                    show_videos()

        summary = run_extract(inputs, config, progress)
    _print_summary(console, config, summary)
    return summary


def _print_summary(console, config, summary) -> None:
    """Counts, then where everything went: OUT, the lists, the run record, the failure list."""
    from rich.table import Table

    table = Table(title=f"tvnet extract -> {config.out}")
    for col in ("done", "skipped", "failed", "frames", "flow fields", "flows/s", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.done), str(summary.skipped), str(summary.failed), str(summary.frames),
                  str(summary.flows), f"{summary.flows_per_s:.1f}", f"{summary.seconds:.1f}")
    console.print(table)
    from ..io.formats import RECORD, REGISTRY

    lines = [("outputs", f"{config.out}/  " + "; ".join(REGISTRY[f].layout for f in config.formats))]
    names = [p.name for p in summary.lists]
    lists = [n for n in names if n.startswith("ann_")]
    if lists:
        lines.append(("lists", ", ".join(lists)))
    if RECORD in names:
        lines.append(("run record", RECORD))
    for n in names:
        if n.startswith("failures"):
            lines.append(("failures", f"{summary.failed} video(s), listed in {n}"))
    for key, text in lines:
        console.print(f"{key:>10}  {text}", highlight=False, soft_wrap=True, markup=False)
