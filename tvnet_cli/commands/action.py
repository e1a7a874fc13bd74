"""`tvnet train-action`, `tvnet eval-action`, `tvnet make-toy-actions`: thin click wrappers
around `tvnet_cli.train.action` and `tvnet_cli.toy_actions` (rich progress lives here)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from .common import check_devices, device_option


@contextlib.contextmanager
def _progress(description: str, total: int | None = None):
    """A rich progress bar and the `(done, total, metrics)` callback that updates it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}")) as bar:
        task = bar.add_task(description, total=total, info="")

        def update(done: int, total: int, metrics: dict) -> None:
            info = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                             if k in ("loss", "loss_c", "loss_f", "acc", "lr"))
            bar.update(task, completed=done, total=total, info=info)

        yield update


def _print_eval(res: dict, classes_n: int) -> None:
    click.echo(f"videos {res['videos']}  top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%  "
               f"mean class accuracy {100 * res['mean_class_acc']:.2f}%  ({classes_n} classes)")


@click.command("train-action")
@click.option("--dataset", type=click.Choice(["ucf101", "hmdb51", "list"]), default="ucf101", show_default=True)
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of the videos (<root>/<Class>/<video>.avi; list paths are relative to it).")
@click.option("--annotations", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the official split files (default: found in or beside --root).")
@click.option("--split", type=click.IntRange(1, 3), default=1, show_default=True)
@click.option("--list", "train_list", type=click.Path(dir_okay=False, path_type=Path),
              help="Generic training list: '<video path> <label>' lines (with --dataset list).")
@click.option("--test-list", type=click.Path(dir_okay=False, path_type=Path), help="Generic test list.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/action"), show_default=True)
@click.option("--preset", "tvnet", default="tvnet-50", show_default=True, help="TVNet preset.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="TVNet weights file.")
@click.option("--freeze-tvnet", is_flag=True, help="Keep TVNet fixed (paper ablation 'no training').")
@click.option("--flow-loss", type=float, default=0.1, show_default=True, help="lambda of L = L_c + lambda L_f.")
@click.option("--modality", type=click.Choice(["flow", "rgb", "two-stream"]), default="flow", show_default=True)
@click.option("--depth", type=click.Choice(["10", "18", "34"]), default="18", show_default=True, help="ResNet depth.")
@click.option("--width", type=int, default=64, show_default=True, help="ResNet width (64 = standard).")
@click.option("--dropout", type=float, default=0.5, show_default=True)
@click.option("--frame-size", nargs=2, type=int, default=(256, 340), show_default=True, help="Decode size H W.")
@click.option("--input-size", type=int, default=224, show_default=True)
@click.option("--length", type=int, default=6, show_default=True, help="Frames per stack (6 -> 5 flows).")
@click.option("--segments", type=int, default=1, show_default=True, help="TSN segments per training clip.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Random horizontal flips.")
@click.option("--batch", type=int, default=128, show_default=True, help="Global batch size.")
@click.option("--lr", type=float, default=0.005, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--steps", type=int, help="Training steps [paper: ucf101 18000, hmdb51 7000].")
@click.option("--lr-steps", help="Comma-separated decay steps [paper: 10000,16000 / 4000,6000].")
@click.option("--flow-bound", type=float, default=20.0, show_default=True, help="Flow scale into the classifier.")
@click.option("--checkpoint-pairs", type=int, default=0, show_default=True,
              help="Recompute TVNet in the backward pass, this many frame pairs a chunk (saves memory).")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision (CUDA only).")
@device_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=4, show_default=True, help="Data loader processes.")
@click.option("--cache-videos", type=int, default=0, show_default=True, help="Decoded videos kept per worker.")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--eval-only", is_flag=True, help="Only evaluate OUT/checkpoint.pt.")
@click.option("--no-eval", is_flag=True, help="Skip the test-set evaluation after training.")
@click.option("--test-segments", type=int, default=25, show_default=True)
@click.option("--test-crops", type=click.Choice(["1", "10"]), default="1", show_default=True)
@click.option("--threads", type=int, help="torch CPU threads.")
def train_action(resume: bool, eval_only: bool, no_eval: bool, steps: int | None,
                 lr_steps: str | None, depth: str, test_crops: str, **kw) -> None:
    """Train TVNet + a classifier end to end on UCF101 / HMDB51 / a list (paper Sec. 5.2)."""
    check_devices(kw["device"])
    from ..errors import TVNetError
    from ..runtime import DistEnv
    from ..train.action import PAPER_SCHEDULE, ActionTrainConfig, evaluate_action
    from ..train.action import train_action as run

    sched = PAPER_SCHEDULE.get(kw["dataset"], PAPER_SCHEDULE["ucf101"])
    if lr_steps is not None:
        try:
            decay = tuple(int(s) for s in lr_steps.split(",") if s.strip())
        except ValueError:
            raise TVNetError(f"--lr-steps must be comma-separated integers, not {lr_steps!r}") from None
    else:
        decay = sched[1] if steps is None else tuple(s for s in sched[1] if s < steps)
    kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()}
    config = ActionTrainConfig(steps=steps or sched[0], lr_steps=decay, depth=int(depth),
                               test_crops=int(test_crops), **kw)
    ckpt = Path(config.out) / "checkpoint.pt"
    if not eval_only:
        if DistEnv.from_env().rank != 0:  # other torchrun ranks train silently; rank 0 reports and tests
            run(config, resume=resume)
            return
        with _progress("train") as cb:
            res = run(config, progress=cb, resume=resume)
        click.echo(f"trained {res['step']} steps: loss {res['loss']:.4g}, batch accuracy {res['acc']:.3f}; "
                   f"checkpoint {res['checkpoint']}, TVNet weights {res['tvnet']}")
    if no_eval:
        return
    with _progress("test") as cb:
        ev = evaluate_action(ckpt, root=config.root, annotations=config.annotations,
                             test_list=config.test_list if config.dataset == "list" else None,
                             segments=config.test_segments, crops=config.test_crops, device=config.device,
                             workers=config.workers, progress=cb, threads=config.threads)
    _print_eval(ev, ev["confusion"].shape[0])
    click.echo(f"confusion matrix: {Path(config.out) / 'confusion.png'}")


@click.command("eval-action")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Videos root (default: as trained).")
@click.option("--annotations", type=click.Path(file_okay=False, path_type=Path))
@click.option("--test-list", type=click.Path(dir_okay=False, path_type=Path), help="'<video> <label>' lines.")
@click.option("--segments", type=int, default=25, show_default=True, help="TSN test segments per video.")
@click.option("--crops", type=click.Choice(["1", "10"]), default="1", show_default=True,
              help="1 = centre crop, 10 = 4 corners + centre, flipped.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Where eval.json/confusion.png go.")
@device_option
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--threads", type=int, help="torch CPU threads.")
def eval_action(checkpoint: Path, root, annotations, test_list, segments: int, crops: str, out, device: str,
                workers: int, threads: int | None) -> None:
    """TSN test protocol on a train-action checkpoint: top-1/top-5, mean class accuracy, confusion PNG."""
    check_devices(device)
    from ..train.action import evaluate_action

    s = (lambda p: None if p is None else str(p))
    with _progress("test") as cb:
        ev = evaluate_action(checkpoint, root=s(root), annotations=s(annotations), test_list=s(test_list),
                             segments=segments, crops=int(crops), out=out, device=device,
                             workers=workers, progress=cb, threads=threads)
    _print_eval(ev, ev["confusion"].shape[0])
    click.echo(f"confusion matrix: {(out or checkpoint.parent) / 'confusion.png'}")


@click.command("make-toy-actions")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--textures", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of images to cut textures from (default: procedural noise).")
@click.option("--classes", default="MoveRight,MoveLeft,MoveDown,MoveUp", show_default=True,
              help="Comma-separated; also RotateCW, RotateCCW, ZoomIn, ZoomOut.")
@click.option("--groups", type=int, default=6, show_default=True)
@click.option("--clips", type=int, default=2, show_default=True, help="Clips per group.")
@click.option("--test-groups", type=int, default=2, show_default=True, help="Groups 1..N form the test list.")
@click.option("--frames", type=int, default=10, show_default=True)
@click.option("--size", nargs=2, type=int, default=(64, 64), show_default=True, help="H W.")
@click.option("--speed", type=float, default=2.0, show_default=True, help="Pixels per frame.")
@click.option("--seed", type=int, default=0, show_default=True)
def make_toy_actions(out: Path, textures: Path | None, classes: str, **kw) -> None:
    """Write a small UCF101-layout dataset whose classes differ only in motion."""
    from ..toy_actions import ToyConfig
    from ..toy_actions import make_toy_actions as run

    cfg = ToyConfig(classes=tuple(c.strip() for c in classes.split(",") if c.strip()), **kw)
    with _progress("videos") as cb:
        n = run(out, cfg, textures, progress=lambda d, t: cb(d, t, {}))
    click.echo(f"{out}: {n['classes']} classes, {n['train']} training and {n['test']} test videos "
               f"(split files in {out / 'ucfTrainTestlist'})")
