"""One runtime for every command: model spec -> TVNet, options + torchrun + machine ->
devices, and a scoped binding of a device and torch's CPU threads.

    load_model(spec, overrides, backend)     preset name or weights file -> TVNet
    DistEnv.from_env()                       RANK / WORLD_SIZE / LOCAL_RANK, parsed once
    resolve_devices(device, gpus, env)       --device / --gpus / LOCAL_RANK / machine -> devices
    on_device(device, threads)               kernels launch on `device`; threads set, then restored

Bad values are `TVNetError`s with one line naming the option and what exists. Nothing here
touches a GPU: `Machine` says what the machine has, and tests pass one in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import TVNetError
from .model import TVNet
from .model.tvnet import TVNetConfig

from .kernels import BACKENDS  # which TV-L1 kernel runs inference (model.backend)


# -- model ------------------------------------------------------------------------------------
def load_model(spec: str | Path, overrides: Mapping[str, object] | None = None, backend: str = "auto") -> TVNet:
    """The one rule from a model spec to a TVNet.

    `spec`: a path to an existing file, or anything ending in `.pt`, loads weights
    (`TVNet.from_file`); anything else is a preset name (shipped weights by name, a named
    config, `tvnet-S-W-I`). `overrides` replace config fields (None values are ignored, so
    callers pass their optional options as they are). `backend` is set as `model.backend`.
    """
    if backend not in BACKENDS:
        raise TVNetError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    kw = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(kw) - {f.name for f in dataclasses.fields(TVNetConfig)})
    if unknown:
        raise TVNetError(f"{spec}: unknown model settings {', '.join(unknown)}")
    path = Path(spec)
    model = TVNet.from_file(path, **kw) if path.suffix == ".pt" or path.is_file() else TVNet.from_preset(str(spec), **kw)
    model.backend = backend
    return model


# -- torchrun environment -----------------------------------------------------------------------
@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job: (0, 1, None) when not under torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None  # GPU of this process on its node (torchrun's LOCAL_RANK)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "DistEnv":
        """Parse RANK, WORLD_SIZE, LOCAL_RANK (from `os.environ` by default)."""
        env = os.environ if env is None else env

        def number(name: str, default: int | None) -> int | None:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                return int(text)
            except ValueError:
                raise TVNetError(f"torchrun environment: {name}={text!r} is not a number") from None

        rank, world, local = number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", None)
        if world < 1 or not 0 <= rank < world:
            raise TVNetError(f"torchrun environment: RANK={rank} is outside WORLD_SIZE={world}")
        if local is not None and local < 0:
            raise TVNetError(f"torchrun environment: LOCAL_RANK={local} is negative")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# -- devices ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Machine:
    """The devices there are: CUDA device count and whether Apple's MPS is usable."""

    cuda: int = 0
    mps: bool = False

    @classmethod
    def here(cls) -> "Machine":
        mps = getattr(torch.backends, "mps", None)
        return cls(torch.cuda.device_count(), bool(mps is not None and mps.is_available()))

    def names(self) -> list[str]:
        return ["cpu"] + [f"cuda:{i}" for i in range(self.cuda)] + (["mps"] if self.mps else [])


_DEVICE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def resolve_devices(device: str | None = None, gpus: str | None = None, env: DistEnv | None = None,
                    machine: Machine | None = None) -> tuple[torch.device, ...]:
    """The devices to run on, each existing, CUDA ones always with an index.

    `device` (--device): auto/None, cpu, cuda, cuda:N, mps. `gpus` (--gpus): "0,1" = one
    device each, "" or "cpu" = CPU; give one of the two. auto/None: cuda:LOCAL_RANK under
    torchrun, else cuda:0, where CUDA is there; else cpu. "cuda" alone is the same CUDA choice.
    """
    env = DistEnv.from_env() if env is None else env
    machine = Machine.here() if machine is None else machine
    have = ", ".join(machine.names())
    auto = device is None or device.strip().lower() in ("", "auto")
    if gpus is not None:
        if not auto:
            raise TVNetError(f"give --device or --gpus, not both (--device {device}, --gpus {gpus})")
        return _parse_gpus(gpus, machine, have)
    name = "auto" if auto else device.strip().lower()
    if name in ("auto", "cuda"):
        if machine.cuda == 0:
            if name == "auto":
                return (torch.device("cpu"),)
            raise TVNetError(f"--device cuda: no CUDA device on this machine (it has {have})")
        index = env.local_rank or 0
        if index >= machine.cuda:
            raise TVNetError(f"--device {name}: LOCAL_RANK={index} but this machine has {have}")
        return (torch.device("cuda", index),)
    m = _DEVICE.match(name)
    if m is None:
        raise TVNetError(f"--device {device!r}: not a device; use auto, cpu, cuda, cuda:N or mps (here: {have})")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu" and index in (None, "0"):
        return (torch.device("cpu"),)
    if kind == "mps" and index in (None, "0") and machine.mps:
        return (torch.device("mps"),)
    if kind == "cuda" and int(index) < machine.cuda:
        return (torch.device("cuda", int(index)),)
    raise TVNetError(f"--device {device}: no such device on this machine (it has {have})")


def _parse_gpus(spec: str, machine: Machine, have: str) -> tuple[torch.device, ...]:
    """--gpus "0,1" -> cuda:0, cuda:1 (duplicates dropped); "" or "cpu" -> cpu."""
    text = spec.strip().lower()
    if text in ("", "cpu"):
        return (torch.device("cpu"),)
    try:
        ids = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise TVNetError(f"--gpus must be a list like 0,1 (or \"\" for CPU), not {spec!r}") from None
    missing = [i for i in ids if not 0 <= i < machine.cuda]
    if missing:
        raise TVNetError(f"--gpus {spec}: GPU {missing[0]} not available (this machine has {have})")
    return tuple(torch.device("cuda", i) for i in dict.fromkeys(ids))


# -- binding ------------------------------------------------------------------------------------
def cpu_share(workers: int, cores: int | None = None) -> int:
    """torch threads of one of `workers` CPU processes sharing the machine's cores (at least 1)."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers))


@contextlib.contextmanager
def on_device(device: str | torch.device, threads: int | None = None) -> Iterator[torch.device]:
    """Make `device` current in this thread (CUDA: kernels launch on its index, not cuda:0)
    and, when `threads` is given, set torch's intra-op threads; both restored on exit.

    The current CUDA device is per thread: a thread that launches kernels enters this itself.
    """
    device = torch.device(device)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(max(1, threads))
    try:
        if device.type == "cuda":
            with torch.cuda.device(device.index if device.index is not None else torch.cuda.current_device()):
                yield device
        else:
            yield device
    finally:
        torch.set_num_threads(before)
