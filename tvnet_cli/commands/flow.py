"""`tvnet epe`, `tvnet train`, `tvnet viz`: evaluate, train and picture optical flow.

Thin click wrappers: parse options, build a config, call one library function. rich (the
tables and progress bars) is used only here; the library takes progress callbacks.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import backend_option, check_devices, device_option

LAYOUT_CHOICE = click.Choice(["middlebury", "sintel", "kitti", "chairs"])


def _model_spec(preset: str, weights: Path | None) -> str:
    return str(weights) if weights is not None else preset


def _size(text: str | None) -> tuple[int, int] | None:
    """'HxW' -> (h, w)."""
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW (e.g. 128x128), got {text!r}") from None
    return h, w


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else ()


# -- epe --------------------------------------------------------------------------------------
@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--layout", type=LAYOUT_CHOICE, default=None, help="Dataset layout (default: detect).")
@click.option("--preset", default="tvnet-50", show_default=True, help="Model preset (see `tvnet presets`).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Trained weights file (overrides --preset).")
@click.option("--pass", "sintel_pass", type=click.Choice(["clean", "final"]), default="clean", show_default=True,
              help="MPI-Sintel rendering pass.")
@click.option("--kitti-gt", type=click.Choice(["flow_occ", "flow_noc"]), default="flow_occ", show_default=True,
              help="KITTI ground truth: all pixels or non-occluded only.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the results as JSON.")
@click.option("--save-flow", type=click.Path(path_type=Path), default=None, help="Write predicted .flo files here.")
@click.option("--compare", type=click.Choice(["opencv"]), default=None,
              help="Add OpenCV DualTVL1 rows with the same settings (needs opencv-contrib).")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for torch.")
@device_option
@backend_option
def epe(dataset: Path, layout: str | None, preset: str, weights: Path | None, sintel_pass: str, kitti_gt: str,
        json_out: Path | None, save_flow: Path | None, compare: str | None, threads: int, device: str,
        backend: str) -> None:
    """End-point error of a model on a flow dataset with ground truth.

    Layouts: Middlebury (other-data/ + other-gt-flow/, or <Seq>/frame10.png, frame11.png,
    flow10.flo), MPI-Sintel training (training/{clean,final}/, training/flow/), KITTI 2012/2015
    training (image_2 or colored_0, flow_occ/flow_noc PNGs), FlyingChairs (*_img1.ppm,
    *_img2.ppm, *_flow.flo). Unknown ground truth is masked. Reports EPE, AAE (degrees),
    outliers > 3 px, the KITTI Fl rate (> 3 px and > 5 %) and valid pixels.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from ..evaluate import EpeConfig, evaluate_dataset

    cfg = EpeConfig(data=str(dataset), layout=layout, model=_model_spec(preset, weights),
                    device=check_devices(device)[0], backend=backend, sintel_pass=sintel_pass, kitti_gt=kitti_gt,
                    save_flow=str(save_flow) if save_flow else None,
                    compare_opencv=compare == "opencv", threads=threads)
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("evaluating", total=None)
        res = evaluate_dataset(cfg, lambda i, n, name: bar.update(task, completed=i, total=n,
                                                                  description=f"evaluating {name}"))
    table = Table(title=f"{res['model']} on {dataset} ({res['layout']})")
    for col in ("sequence", "method", "EPE", "AAE °", "> 3 px %", "Fl %", "valid px"):
        table.add_column(col, justify="left" if col in ("sequence", "method") else "right")
    groups = [(res["model"], res["rows"], res["mean"])]
    if "opencv_rows" in res:
        groups.append(("opencv-tvl1", res["opencv_rows"], res["opencv_mean"]))

    def add(name: str, method: str, m: dict, end: bool = False) -> None:
        table.add_row(name, method, f"{m['epe']:.3f}", f"{m['aae']:.2f}", f"{100 * m['out3']:.2f}",
                      f"{100 * m['fl']:.2f}", f"{m['valid']}", end_section=end)

    for i, row in enumerate(res["rows"]):
        for method, rows, _ in groups:
            add(row["name"], method, rows[i], end=method == groups[-1][0])
    for method, _, mean in groups:
        add("mean", method, mean)
    Console().print(table)
    if res["skipped"]:
        console.print(f"{len(res['skipped'])} pair(s) without ground truth skipped: {', '.join(res['skipped'])}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=2))


# -- train ------------------------------------------------------------------------------------
@click.command()
@click.argument("dataset", type=click.Path(path_type=Path), required=False)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Weights file to write (.pt).")
@click.option("--unsupervised", "videos", type=click.Path(path_type=Path), default=None,
              help="Fine-tune on unlabelled videos (folder or file) with the TV-L1 energy instead of GT.")
@click.option("--layout", type=LAYOUT_CHOICE, default=None, help="Layout of DATASET (default: detect).")
@click.option("--pairs", default=None, help="Train only on these pair names (comma separated).")
@click.option("--val", "val_data", multiple=True, type=click.Path(path_type=Path),
              help="Validation dataset with ground truth (repeatable).")
@click.option("--val-pairs", default=None, help="Validate only on these pair names (comma separated).")
@click.option("--init", default="tvnet-50", show_default=True, help="Start from this preset or weights file.")
@click.option("--smooth-sigma", type=float, default=None,
              help="Set the model's gaussian pre-smoothing (default: keep the preset's).")
@click.option("--theta", type=float, default=None,
              help="Set the model's TV-L1 coupling theta (default: keep the preset's).")
@click.option("--train", "train_part", default="all", show_default=True,
              help="What trains: all, or filters, u0 (initial flow), scalars (tau, lambda, theta) "
                   "or parts joined by '+' (e.g. filters+scalars).")
@click.option("--per-level/--shared", default=False, show_default=True,
              help="Train one set of filters and tau/lambda/theta per pyramid level (or one for all).")
@click.option("--train-levels", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --per-level: train only the K finest levels (0 = all).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--lr", type=float, default=0.05, show_default=True, help="Learning rate (paper: 0.05).")
@click.option("--loss-power", type=float, default=1.0, show_default=True,
              help="Per-pixel loss (EPE + 0.01)^q: 1 = EPE (paper); e.g. 0.4 lets failed pixels weigh less.")
@click.option("--u0-lr", type=float, default=None, help="Learning rate of u0 (default: --lr).")
@click.option("--scalar-lr", type=float, default=None,
              help="Learning rate of the log tau/lambda/theta multipliers (default: --lr).")
@click.option("--u0-decay", type=float, default=0.0, show_default=True, help="Penalty on u0's mean square.")
@click.option("--u0-smooth", type=float, default=0.0, show_default=True,
              help="Penalty on the squared differences of neighbouring u0 cells.")
@click.option("--steps", type=int, default=3000, show_default=True, help="Optimiser steps (paper: 3000).")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--crop", default=None, help="Random crops HxW (default: whole pairs).")
@click.option("--flip/--no-flip", default=False, show_default=True, help="Random flips.")
@click.option("--transpose/--no-transpose", default=False, show_default=True,
              help="Random transposes (with --flip: all 90-degree rotations).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Resize training and validation pairs (and their flow) by this factor.")
@click.option("--video-frames", type=int, default=64, show_default=True, help="Frames read per video.")
@click.option("--video-size", default=None, help="Decode videos at HxW.")
@click.option("--val-every", type=int, default=100, show_default=True)
@click.option("--keep-best/--keep-last", default=True, show_default=True,
              help="With --val: save the parameters with the lowest validation EPE (or the last ones).")
@click.option("--eval-limit", type=int, default=50, show_default=True,
              help="Measure EPE before/after and on validation on at most this many pairs.")
@click.option("--checkpoint-every", type=int, default=100, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from <out>.ckpt.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for torch.")
@device_option
@backend_option
def train(dataset: Path | None, out: Path, videos: Path | None, layout: str | None, pairs: str | None,
          val_data: tuple[Path, ...], val_pairs: str | None, init: str, smooth_sigma: float | None,
          theta: float | None, train_part: str, per_level: bool, train_levels: int, optimizer: str, lr: float,
          loss_power: float, u0_lr: float | None, scalar_lr: float | None, u0_decay: float, u0_smooth: float,
          steps: int, batch: int, crop: str | None, flip: bool, transpose: bool, scale: float, video_frames: int,
          video_size: str | None, val_every: int, keep_best: bool, eval_limit: int, checkpoint_every: int,
          resume: bool, seed: int, threads: int, device: str, backend: str) -> None:
    """Train TVNet on ground-truth flow (EPE loss) or, with --unsupervised, on videos.

    Writes OUT (use it with `tvnet epe --weights` / `tvnet extract --weights`), a resumable
    checkpoint OUT.ckpt and a loss curve <OUT stem>.loss.png.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..train.flow import TrainFlowConfig, train_flow

    if (dataset is None) == (videos is None):
        raise click.UsageError("give either DATASET (supervised) or --unsupervised VIDEOS")
    device = check_devices(device)[0]
    cfg = TrainFlowConfig(
        data=str(videos or dataset), layout=layout, pairs=_names(pairs),
        val_data=tuple(str(v) for v in val_data), val_pairs=_names(val_pairs), init=init,
        smooth_sigma=smooth_sigma, theta=theta, train=train_part, per_level=per_level, train_levels=train_levels,
        optimizer=optimizer, lr=lr, loss_power=loss_power, u0_lr=u0_lr, scalar_lr=scalar_lr, u0_decay=u0_decay,
        u0_smooth=u0_smooth,
        steps=steps, batch=batch, crop=_size(crop), flip=flip, transpose=transpose,
        scale=scale, unsupervised=videos is not None, video_frames=video_frames, video_size=_size(video_size),
        val_every=val_every, keep_best=keep_best, eval_limit=eval_limit, checkpoint_every=checkpoint_every,
        seed=seed, threads=threads, device=device, backend=backend)
    console = Console(stderr=True)
    cols = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn())
    with Progress(*cols, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("train", total=steps, info="")

        def report(step: int, total: int, loss: float, val: float | None) -> None:
            info = f"loss {loss:.4f}" + (f"  val EPE {val:.3f}" if val is not None else "")
            bar.update(task, completed=step, info=info)

        res = train_flow(cfg, out, resume=resume, progress=report)
    for split in ("train", "val"):
        b, a = res.before.get(split), res.after.get(split)
        if b and a:
            console.print(f"{split} EPE: {b['epe']:.3f} -> {a['epe']:.3f}")
    if res.best_step is not None:
        console.print(f"saved the parameters of step {res.best_step} (lowest validation EPE)")
    console.print(f"wrote {res.weights} and {res.loss_png}")


# -- viz ----------------------------------------------------------------------------------------
@click.command()
@click.argument("flow", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="x.mp4 or x.gif (a video), x.png (a single field), else a folder of PNGs.")
@click.option("--max-flow", type=float, default=None, help="Speed (px) at full colour; fixed = comparable pictures.")
@click.option("--bound", type=float, default=None,
              help="Quantisation bound of JPEG flow.  [default: the one in tvnet.json, else 20]")
@click.option("--format", "fmt", type=click.Choice(["jpeg", "h5", "flo", "npy"]), default=None,
              help="Input format, when a folder holds several.  [default: npy, flo, then jpeg]")
@click.option("--legend/--no-legend", default=True, show_default=True)
@click.option("--fps", type=float, default=None,
              help="Frame rate of .mp4/.gif output.  [default: the source video's when recorded, else 25]")
def viz(flow: Path, out: Path, max_flow: float | None, bound: float | None, fmt: str | None, legend: bool,
        fps: float | None) -> None:
    """Colour-code flow with the Middlebury colour wheel: any output of `tvnet extract`
    (jpeg/flo/npy folder, .h5 file) or one .flo, .npy or flow_x_NNNNN.jpg file."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..viz import VizConfig, render

    console = Console(stderr=True)
    cols = (TextColumn(f"colouring {flow.name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("viz", total=None)
        written = render(flow, out, VizConfig(max_flow=max_flow, bound=bound, legend=legend, fps=fps, format=fmt),
                         lambda i, n: bar.update(task, completed=i, total=n))
    click.echo(f"wrote {len(written)} file(s) to {out}")


# -- make-flow-data ------------------------------------------------------------------------------
@click.command("make-flow-data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--per-kind", type=click.IntRange(min=1), default=100, show_default=True,
              help="Pairs of each kind of scene.")
@click.option("--kinds", default="driving,sintel,chairs,small", show_default=True,
              help="Kinds of scene (motion like KITTI, Sintel, FlyingChairs, Middlebury), comma separated.")
@click.option("--size", default="256x340", show_default=True, help="Frame size HxW.")
@click.option("--textures", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Images or videos (files or folders) to cut textures from, besides the procedural ones. "
                   "Their licences decide whether weights trained on the result may be shipped.")
@click.option("--procedural", type=click.IntRange(min=0), default=8, show_default=True,
              help="Procedural textures (owe nothing to any data set).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files.")
def make_flow_data(out: Path, per_kind: int, kinds: str, size: str, textures: tuple[Path, ...], procedural: int,
                   seed: int) -> None:
    """Generate frame pairs with exact optical flow into OUT (FlyingChairs layout), for
    `tvnet train` and `tvnet epe`: textured layers moved by their own homographies, with
    occlusions, lighting changes and noise."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..data.synthetic import KINDS, training_textures, write_dataset
    from ..errors import TVNetError

    chosen = _names(kinds)
    if not chosen or not set(chosen) <= set(KINDS):
        raise TVNetError(f"--kinds must be among {', '.join(KINDS)}, not {kinds!r}")
    tex = training_textures(textures, procedural, seed=seed)
    if not tex:
        raise TVNetError("no textures: give --textures or --procedural >= 1")
    console = Console(stderr=True)
    cols = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("render", total=per_kind * len(chosen))
        n = write_dataset(out, tex, per_kind, chosen, _size(size), seed,
                          progress=lambda done, total: bar.update(task, completed=done))
    console.print(f"{n} pairs with exact flow in {out} ({len(tex)} textures)")
