"""What every training run shares: the checkpoint file (atomic save, checked strict load),
the resume policy, the CSV log and the device/threads/torchrun set-up.

Resume policy (one rule for every trainer): a run resumes a checkpoint only when every
config field equals the checkpoint's, except the fields the trainer lists as `may_change`
(those that leave the trained trajectory alone, or that it chose to allow). A field added
later therefore has to match unless it is listed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from ..checkpoint import load_dict, save_atomic
from ..errors import TVNetError
from ..runtime import DistEnv, on_device, resolve_devices

CHECKPOINT_VERSION = 1  # of every training checkpoint (flow `<out>.ckpt`, action `checkpoint.pt`)


# -- checkpoint file ------------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` plus {"version"} atomically (a crash never leaves half a file)."""
    save_atomic({"version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: Path, what: str, need: Iterable[str] = ()) -> dict:
    """Read a training checkpoint: a dict with an integer version this tvnet knows and the
    `need` keys. Raises TVNetError "<path>: <what> not found" / "not a <what> ..." / "... newer"."""
    state = load_dict(path, what)
    version = state.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TVNetError(f"{path}: not a {what} of this tvnet version")
    if version > CHECKPOINT_VERSION:
        raise TVNetError(f"{path}: {what} version {version} is newer than this tvnet")
    missing = sorted(set(need) - set(state))
    if missing:
        raise TVNetError(f"{path}: not a {what} (missing {missing})")
    return state


def load_state(module: torch.nn.Module, state_dict: dict, path: Path) -> None:
    """`module.load_state_dict(state_dict, strict=True)`; a mismatch is a TVNetError naming `path`."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise TVNetError(f"{path}: checkpoint does not match the model: {str(e).splitlines()[0]}") from None


# -- resume policy --------------------------------------------------------------------------------
def resume_differs(saved: dict, current: dict, may_change: Iterable[str]) -> list[str]:
    """The config fields (sorted) that differ between a checkpoint and this run, ignoring
    `may_change`; values compare by their JSON form (a stored list equals a tuple)."""
    allowed = set(may_change)
    keys = sorted((set(saved) | set(current)) - allowed)
    return [k for k in keys if json.dumps(saved.get(k)) != json.dumps(current.get(k))]


def will_resume(path: Path, resume: bool) -> bool:
    """The one rule for a checkpoint file at the start of a run: with `resume`, continue it
    when it exists and start afresh when it does not (a preempted job relaunched with the
    same command); without `resume`, an existing checkpoint is an error, so a run never
    overwrites another's progress by accident."""
    if Path(path).is_file():
        if not resume:
            raise TVNetError(f"{path}: a checkpoint exists; pass --resume to continue it or use another output")
        return True
    return False


def check_resume(path: Path, saved: dict, current: dict, may_change: Iterable[str]) -> None:
    """Raise TVNetError naming the differing fields unless the run may resume `path`."""
    differs = resume_differs(saved, current, may_change)
    if differs:
        raise TVNetError(f"{path}: checkpoint was made with different settings ({', '.join(differs)}); "
                         "match them or start afresh without --resume (or with another output)")


# -- log ------------------------------------------------------------------------------------------
class CsvLog:
    """A CSV training log rewritten whole (atomically) at each write, so a resumed run can
    keep exactly the rows up to its checkpoint step."""

    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path, self.fields = Path(path), tuple(fields)

    def read(self, upto: int) -> list[dict]:
        """The rows whose "step" is <= upto (none when there is no log yet)."""
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return [r for r in csv.DictReader(f) if int(r["step"]) <= upto]

    def write(self, rows: list[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.path)


# -- run environment ------------------------------------------------------------------------------
@contextmanager
def training_device(device: str, threads: int | None, env: DistEnv | None = None) -> Iterator[torch.device]:
    """Resolve `device` (runtime.resolve_devices; under torchrun cuda:LOCAL_RANK), make it
    current with `threads` torch threads (both restored on exit) and, in a torchrun job, start
    the process group (nccl on CUDA, gloo on the CPU) after the device is bound."""
    env = DistEnv.from_env() if env is None else env
    dev = resolve_devices(device, None, env)[0]
    with on_device(dev, threads):  # bound before NCCL makes its communicator
        started = False
        if env.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
                started = True
        if not started:
            yield dev
            return
        try:
            yield dev
            dist.barrier()  # no rank leaves while another still talks to it (e.g. rank 0 saving)
        finally:  # the group we started ends here, not in interpreter teardown (a rank once
            dist.destroy_process_group()  # aborted there under load, after rank 0 had finished)
