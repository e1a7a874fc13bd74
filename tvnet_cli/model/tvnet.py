"""TVNet: the TV-L1 solver unrolled into layers (scales x warps x iterations).

Untrained it is TV-L1 (Zach et al. 2007, as in Algorithm 1 of the paper). Trainable, as in
paper Sec. 4.2: the taps of the image gradient, flow gradient and divergence filters, and
the initial flow u0. u0 is stored on a small fixed grid and resampled to the coarsest
pyramid level, so one model works at any input size. Also trainable here: the TV-L1
scalars tau, lambda and theta, each as a log-multiplier of its config value (0 = untrained).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoint import load_dict, save_atomic, validate_weights
from ..config import ConfigMixin
from ..errors import TVNetError
from .. import kernels
from ..kernels import Iterate
from . import ops

WEIGHTS_VERSION = 1
SCALARS = ("tau", "lam", "theta")  # trainable TV-L1 scalars (config field names)
TRAINABLE_PARTS = ("filters", "u0", "scalars")
EXTRA_LEVEL_MIN_SIDE = 8  # shorter side of the coarsest extra level (`coarsest_side`): a 12x39
# level of a 375x1242 frame helps large motion, while a 12x16 one traps a 384x512 frame


@dataclass(frozen=True)
class TVNetConfig(ConfigMixin):
    """Everything that defines a TVNet. Defaults: the paper's TVNet-50 (1-1-50)."""

    label: ClassVar[str] = "TVNet config"

    scales: int = 1  # pyramid levels at most (fewer when the image is small)
    warps: int = 1  # warps per level (every level, unless level_warps is given)
    iters: int = 50  # TV-L1 iterations per warp (every level, unless level_iters is given)
    tau: float = 0.25  # dual time step
    lam: float = 0.15  # data-term weight (lambda)
    theta: float = 0.3  # coupling of u and v
    zfactor: float = 0.5  # pyramid down-sampling factor
    min_level: int = 16  # no pyramid level (but the first) with a side below this (OpenCV: 16;
    # 0 = the authors' rule alone, whose 12x16-pixel levels trap the finer ones in wrong flow)
    eps: float = 1e-12  # stabiliser of the divisions (paper Eq. 11)
    stop_tol: float = 0.0  # inference only: stop a warp when mean |du|^2 < stop_tol^2 (0 = never)
    smooth_sigma: float = 0.8  # 5x5 gaussian pre-smoothing of both frames (0 = off); measured
    # better on every real GT pair at TVNet-50 and 10x better on sub-pixel motion (BENCHMARKS.md)
    u0_grid: tuple[int, int] = (32, 32)  # resolution of the trainable initial flow
    grad_border: str = "zero"  # image gradient on the border: "zero" (the paper's Eq. 3) or
    # "replicate" (one-sided, as OpenCV); with data_outside and min_level below, "zero" measured
    # better on real and generated ground truth (BENCHMARKS.md, "TV-L1 at the image border")
    data_outside: str = "off"  # where x + u leaves the image: "off" = no data term there (as
    # Pock's and OpenCV-style solvers), "border" = compare with the replicated border (older tvnet)
    warp: str = "bicubic"  # interpolation of the warp: "bicubic" (as OpenCV's TV-L1; measured
    # closer to ground truth at 5-5-50 on every real GT pair) or "bilinear" (the paper's Eq. 10)
    # Per-level schedule, finest level first, one entry per level of `scales` (None = uniform):
    # the finest level costs ~4x the next, so coarse warps and iterations are nearly free.
    level_warps: tuple[int, ...] | None = None
    level_iters: tuple[int, ...] | None = None
    finest_level: int = 0  # pyramid levels skipped at the fine end: the solve stops there and its
    # flow is upsampled (1 = half resolution, as OpenCV DIS's finest scale; each level is ~4x cheaper)
    brightness: str = "constant"  # "constant": TV-L1's brightness constancy; "bias": at every warp
    # the warped frame 1 is shifted by the median of (frame 0 - it) over the pixels that stay
    # inside, so a global exposure change (auto-exposure, lighting) is not read as motion
    # (BENCHMARKS.md, issue 13: synthetic EPE -25 %, real pairs without such change unchanged)
    median: int = 0  # k x k median filter of the flow after every warp (0 = off; odd, 3..7): removes
    # the outliers a warp leaves at motion boundaries (Sun, Roth & Black 2010; OpenCV TV-L1's
    # medianFiltering). tvl1-half: 5, real EPE -6.5 %, generated -5.4 %, 375x1242 -25 % (BENCHMARKS.md)
    coarsest_side: int = 0  # large frames: levels are added past `scales` (each running the coarsest
    # level's schedule and parameters) while the coarsest level's longer side exceeds this, down to
    # a shorter side of EXTRA_LEVEL_MIN_SIDE; 0 = never. As OpenCV DIS sizes its pyramid by the
    # longer side: a fixed level count leaves a 1242-wide frame a 78-px coarsest level, too fine
    # for large motion (generated 375x1242 scenes: tvl1-half EPE 17.4 -> 8.4 with 48; frames up
    # to 768 px wide unchanged; BENCHMARKS.md, "Large frames and large motion")
    per_level: bool = False  # one set of filter taps and tau/lambda/theta per level (trained apart;
    # index 0 = the finest level solved); False = one set shared by every level (the paper)

    def __post_init__(self) -> None:
        for name in ("scales", "warps", "iters"):
            if getattr(self, name) < 1:
                raise TVNetError(f"TVNet config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("level_warps", "level_iters"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(int(v) for v in value)  # a list when read back from JSON
            if len(value) != self.scales or min(value) < 1:
                raise TVNetError(f"TVNet config: {name} needs {self.scales} entries (one per level, "
                                 f"finest first) each >= 1, got {list(value)}")
            object.__setattr__(self, name, value)
        if self.finest_level < 0:
            raise TVNetError(f"TVNet config: finest_level must be >= 0, got {self.finest_level}")
        if not 0.0 < self.zfactor < 1.0:
            raise TVNetError(f"TVNet config: zfactor must be in (0, 1), got {self.zfactor}")
        if self.grad_border not in ("replicate", "zero"):
            raise TVNetError(f"TVNet config: grad_border must be replicate or zero, got {self.grad_border!r}")
        if self.data_outside not in ("off", "border"):
            raise TVNetError(f"TVNet config: data_outside must be off or border, got {self.data_outside!r}")
        if self.brightness not in ("constant", "bias"):
            raise TVNetError(f"TVNet config: brightness must be constant or bias, got {self.brightness!r}")
        if self.median not in (0, 1, 3, 5, 7):
            raise TVNetError(f"TVNet config: median must be 0 (off) or an odd 1..7, got {self.median}")
        if self.warp not in ("bilinear", "bicubic"):
            raise TVNetError(f"TVNet config: warp must be bilinear or bicubic, got {self.warp!r}")
        for name in ("tau", "lam", "theta"):
            if getattr(self, name) <= 0:
                raise TVNetError(f"TVNet config: {name} must be > 0, got {getattr(self, name)}")
        object.__setattr__(self, "u0_grid", tuple(int(v) for v in self.u0_grid))

    def level_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Sizes of the levels solved for an `h` x `w` image, finest first: the pyramid without
        its `finest_level` finest levels (an image too small for them keeps its coarsest one)."""
        n = self.scales + self.finest_level
        sizes = ops.pyramid_sizes(h, w, n, self.zfactor, self.min_level)
        while self.coarsest_side and len(sizes) >= n and max(sizes[-1]) > self.coarsest_side:
            # a level past `scales`: only when the image had room for all of them
            nxt = ops.level_size(h, w, self.zfactor, len(sizes))
            if min(nxt) < EXTRA_LEVEL_MIN_SIDE:
                break
            sizes.append(nxt)
        return sizes[min(self.finest_level, len(sizes) - 1):]

    def replace(self, **changes) -> "TVNetConfig":
        """As `ConfigMixin.replace`; a new uniform `warps`/`iters` (e.g. `--iters 20`) drops the
        per-level list it would otherwise be shadowed by."""
        for uniform, per_level in (("warps", "level_warps"), ("iters", "level_iters")):
            if uniform in changes and per_level not in changes:
                changes[per_level] = None
        return super().replace(**changes)

    def schedule(self, levels: int | None = None) -> list[tuple[int, int]]:
        """(warps, iterations per warp) of each level, finest first: of the `scales` levels, or of
        the `levels` solved (fewer on a small image; more on a large one with `coarsest_side`,
        whose extra levels repeat the coarsest level's entry)."""
        warps = self.level_warps or (self.warps,) * self.scales
        iters = self.level_iters or (self.iters,) * self.scales
        rows = list(zip(warps, iters))
        return rows if levels is None else [rows[self.param_level(k)] for k in range(levels)]

    def param_level(self, level: int) -> int:
        """Which of the `scales` levels' schedule and parameters a solved `level` uses."""
        return min(level, self.scales - 1)

    @property
    def name(self) -> str:
        """`tvnet-S-W-I`; a per-level part is written finest first joined by dots
        (`tvnet-4-1-10.20.40.80`), and one whose levels are all equal as one number."""

        def part(values: tuple[int, ...]) -> str:
            return str(values[0]) if len(set(values)) == 1 else ".".join(map(str, values))

        warps, iters = zip(*self.schedule())
        skip = f"-f{self.finest_level}" if self.finest_level else ""
        return f"tvnet-{self.scales}-{part(warps)}-{part(iters)}{skip}"


def tv_l1_step(
    u: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    grad_i: torch.Tensor,
    grad_sq: torch.Tensor,
    rho_c: torch.Tensor,
    taps: tuple[torch.Tensor, torch.Tensor],
    lt: float | torch.Tensor,
    theta: float | torch.Tensor,
    taut: float | torch.Tensor,
    eps: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration of Algorithm 1 (one TVNet layer), pure and fusable.

    `u`, `px`, `py`, `grad_i` are `(B, 2, h, w)` (flow, dual x/y parts for u1 and u2,
    warped image gradient); `grad_sq`, `rho_c` are `(B, 1, h, w)`. Returns (u, px, py).
    The constants (lambda*theta, theta, tau/theta, eps) may be 0-d tensors (trained scalars).
    """
    forward, backward = taps
    rho = rho_c + ops.dot2(grad_i, u)
    # Thresholding step of Algorithm 1 as the proximal map of the L1 data term.
    v = u - (rho / grad_sq).clamp(-lt, lt) * grad_i
    u = v + theta * ops.divergence(px, py, backward)
    ux, uy = ops.forward_gradient(u, forward)
    norm = 1.0 + taut * torch.sqrt(ux * ux + uy * uy + eps)
    return u, (px + taut * ux) / norm, (py + taut * uy) / norm


def stepwise(step=tv_l1_step) -> Iterate:
    """An `Iterate` (u, px, py, grad_i, grad_sq, rho_c, taps, consts, n) -> (u, px, py) that
    applies a one-iteration `step` n times: the PyTorch reference (`kernels` hold the fast ones)."""

    def iterate(u, px, py, grad_i, grad_sq, rho_c, taps, consts, n):
        for _ in range(n):
            u, px, py = step(u, px, py, grad_i, grad_sq, rho_c, taps, *consts)
        return u, px, py

    return iterate


def _tv_l1_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    u: torch.Tensor,
    cfg: TVNetConfig,
    taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    iterate: Iterate,
    scalars: tuple,
    u_is_zero: bool,
    warps: int,
    iters: int,
) -> torch.Tensor:
    """`warps` x `iters` of TV-L1 at one pyramid level (the level's entry of `cfg.schedule()`).

    `i0`, `i1` grey `(B, 1, h, w)`; `u` initial flow `(B, 2, h, w)`; returns `(B, 2, h, w)`.
    The dual variables p start at zero once per level (as in the authors' code and OpenCV).
    `iterate` runs n iterations: `stepwise(...)` or a kernel (`kernels.iterate_for`).
    `scalars` (tau, lam, theta): floats, or 0-d tensors while they train (`solver_scalars`).
    `u_is_zero`: the caller knows `u` is zero (an untrained u0), so the first warp is the
    identity and is skipped. Known, not tested: a test of the values would wait for the device.
    No host read happens here unless `cfg.stop_tol > 0` (early stop reads one value per iteration).
    """
    centred, forward, backward = taps
    tau, lam, theta = scalars
    consts = (lam * theta, theta, tau / theta, cfg.eps)
    ix, iy = ops.centred_gradient(i1, centred, cfg.grad_border)  # (B, 1, h, w) each
    stack = torch.cat([i1, ix, iy], dim=1)  # warped together: one grid_sample per warp
    px = torch.zeros_like(u)  # (B, 2, h, w): x parts of the duals p1 (of u1) and p2 (of u2)
    py = torch.zeros_like(u)
    early_stop = cfg.stop_tol > 0 and not torch.is_grad_enabled()
    for k in range(warps):
        identity = k == 0 and u_is_zero  # a warp by zero flow: nothing to warp, nothing leaves
        w = stack if identity else ops.warp(stack, u, cfg.warp)
        i1w, grad_i = w[:, :1], w[:, 1:]  # (B, 1, h, w), (B, 2, h, w)
        inside = None if identity else ops.inside(u).to(u.dtype)  # (B, 1, h, w)
        if cfg.brightness == "bias":
            i1w = i1w + ops.median_offset(i0, i1w, inside)
        if cfg.data_outside == "off" and inside is not None:
            # no data term where x + u leaves the image: nothing there says where it went
            i1w, grad_i = i1w * inside + i0 * (1 - inside), grad_i * inside
        grad_sq = ops.dot2(grad_i, grad_i) + cfg.eps
        rho_c = i1w - ops.dot2(grad_i, u) - i0  # rho(u) = rho_c + gradI.u
        fixed = (grad_i, grad_sq, rho_c, (forward, backward), consts)
        if not early_stop:
            u, px, py = iterate(u, px, py, *fixed, iters)
        else:
            for _ in range(iters):
                u_new, px, py = iterate(u, px, py, *fixed, 1)
                done = (u_new - u).pow(2).sum(dim=1).mean() < cfg.stop_tol**2
                u = u_new
                if done:
                    break
        if cfg.median > 1:
            u = ops.median_filter(u, cfg.median)  # (B, 2, h, w)
    return u


def _checkpointed_step(*args):
    """`tv_l1_step` that stores only its inputs for backward and recomputes the rest."""
    return checkpoint(tv_l1_step, *args, use_reentrant=False)


class TVNet(nn.Module):
    """TVNet / TV-L1 optical flow: `flow = model(frame0, frame1)`.

    Frames are `(B, 3, H, W)` RGB or `(B, 1, H, W)` grey, uint8 or float (any range: each
    pair is stretched to 0..255 jointly). Output `(B, 2, H, W)`: the flow in pixels that
    takes frame0 to frame1, i.e. frame1(x + flow(x)) ~ frame0(x).
    """

    def __init__(self, config: TVNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or TVNetConfig()
        f = torch.float32
        lead = (self.config.scales,) if self.config.per_level else ()  # (L,) per level, () shared

        def taps(values: tuple) -> nn.Parameter:
            return nn.Parameter(torch.tensor(values, dtype=f).expand(*lead, -1, -1).clone())

        self.centred_taps = taps(ops.CENTRED_TAPS)  # ([L,] 2, 3)
        self.forward_taps = taps(ops.FORWARD_TAPS)  # ([L,] 2, 2)
        self.backward_taps = taps(ops.BACKWARD_TAPS)  # ([L,] 2, 2)
        self.u0 = nn.Parameter(torch.zeros(1, 2, *self.config.u0_grid, dtype=f))  # pixels
        # tau, lambda, theta = config value * exp(log-multiplier); ([L,]), untrained = exactly config
        self.log_scalars = nn.ParameterDict({k: nn.Parameter(torch.zeros(lead, dtype=f)) for k in SCALARS})
        # Inference kernel (`kernels`): "auto" (C on CPU, Triton on CUDA, or $TVNET_BACKEND),
        # "torch", "c" or "triton". Training always runs the differentiable PyTorch step.
        self.backend = "auto"
        self.last_backend: str | None = None  # the backend the last forward ran
        self._host_cache: dict[str, tuple] = {}  # host copies of parameters, keyed by version
        # Training: recompute each iteration in backward instead of storing its ~15
        # intermediates (about 4x less memory for ~1.3x compute; same gradients).
        self.checkpoint = True
        # Training only the `grad_levels` finest levels' per-level parameters (0 = all levels):
        # the coarser levels then run without autograd in `solve` (see there)
        self.grad_levels = 0

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TVNet":
        """A named configuration (`tvnet-50`, `tvnet-3-1-10`, `tvl1`, ...) or shipped weights."""
        from .presets import load_preset

        return load_preset(name, **overrides)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TVNet":
        """Load a weights file written by `save` (config + state, strict)."""
        ckpt = load_dict(path, "TVNet weights file")
        if not {"version", "config", "state_dict"} <= set(ckpt):
            raise TVNetError(f"{path}: not a TVNet weights file (missing version/config/state_dict)")
        validate_weights(path, ckpt)
        if ckpt["version"] > WEIGHTS_VERSION:
            raise TVNetError(f"{path}: weights version {ckpt['version']} is newer than this tvnet")
        cfg = TVNetConfig.from_dict(dict(ckpt["config"]))
        if overrides:
            cfg = cfg.replace(**overrides)
        model = cls(cfg)
        # trained scalars are folded into the saved config (see `save`): multipliers start at 0
        sd = {**{f"log_scalars.{k}": p.detach().clone() for k, p in model.log_scalars.items()},
              **ckpt["state_dict"]}
        if "u0" in sd and tuple(sd["u0"].shape[-2:]) != cfg.u0_grid:
            raise TVNetError(f"{path}: u0 grid {tuple(sd['u0'].shape[-2:])} != config {cfg.u0_grid}")
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise TVNetError(f"{path}: weights do not match the model: {str(e).splitlines()[0]}") from None
        model.meta = dict(ckpt.get("meta", {}))
        return model

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write `{"version", "config", "state_dict", "meta"}`; atomic (temp file + rename).

        Trained TV-L1 scalars shared by all levels are written as the config's tau/lam/theta,
        not as state, so the file reads like any weights file (older tvnet versions load it
        too); per-level ones stay in the state as log-multipliers of the config's values."""
        shared = not self.config.per_level
        state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()
                 if not (shared and k.startswith("log_scalars."))}
        cfg = self.config.replace(**self.scalar_values()) if shared else self.config
        save_atomic({"version": WEIGHTS_VERSION, "config": cfg.to_dict(),
                     "state_dict": state, "meta": dict(meta or {})}, path)

    def split_levels(self) -> "TVNet":
        """A `per_level` copy of this model: every level starts from the shared taps and
        scalars (the same flow), so that training can set them apart."""
        if self.config.per_level:
            return copy.deepcopy(self)
        model = TVNet(self.config.replace(per_level=True, **self.scalar_values())).to(self.u0.device)
        with torch.no_grad():
            for name in ("centred_taps", "forward_taps", "backward_taps"):
                getattr(model, name).copy_(getattr(self, name).detach().expand_as(getattr(model, name)))
            model.u0.copy_(self.u0.detach())
        model.backend = self.backend
        return model

    # -- what trains ----------------------------------------------------------------------
    def filter_parameters(self) -> list[nn.Parameter]:
        return [self.centred_taps, self.forward_taps, self.backward_taps]

    def scalar_parameters(self) -> list[nn.Parameter]:
        """Log-multipliers of tau, lambda, theta (0-d)."""
        return [self.log_scalars[k] for k in SCALARS]

    def scalar_values(self) -> dict[str, float | list[float]]:
        """Current tau, lam, theta (config value x exp(multiplier)): floats, or per level lists
        (finest first) with `per_level`; one device read."""
        logs = torch.stack([self.log_scalars[k].detach() for k in SCALARS]).tolist()

        def value(k: str, v: float | list[float]) -> float | list[float]:
            base = getattr(self.config, k)
            return [base * math.exp(x) for x in v] if isinstance(v, list) else base * math.exp(v)

        return {k: value(k, v) for k, v in zip(SCALARS, logs)}

    def _host_value(self, name: str, params: list[torch.Tensor], read: Callable[[], object]):
        """`read()` (a device read), cached until one of `params` changes (in place, by an
        optimiser or load_state_dict, or replaced by `.to()`): inference forwards then make
        no host read at all."""
        key = tuple((p._version, p.data_ptr(), p.device) for p in params)
        hit = self._host_cache.get(name)
        if hit is None or hit[0] != key:
            hit = (key, read())
            self._host_cache[name] = hit
        return hit[1]

    def solver_scalars(self, level: int = 0) -> tuple:
        """(tau, lam, theta) of pyramid `level` (0 = the finest solved) for the solver: 0-d
        tensors while they train, floats otherwise (exactly the config's while untrained)."""
        per = self.config.per_level
        level = self.config.param_level(level)
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.scalar_parameters()):
            return tuple(getattr(self.config, k) * (self.log_scalars[k][level] if per else self.log_scalars[k]).exp()
                         for k in SCALARS)
        values = self._host_value("scalars", self.scalar_parameters(), self.scalar_values)
        return tuple(values[k][level] if per else values[k] for k in SCALARS)

    def level_taps(self, level: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centred (2, 3), forward (2, 2), backward (2, 2)) taps of pyramid `level`."""
        taps = (self.centred_taps, self.forward_taps, self.backward_taps)
        return tuple(t[self.config.param_level(level)] for t in taps) if self.config.per_level else taps

    def u0_is_zero(self) -> bool:
        """True while u0 is untrained (all zeros): the first warp is then skipped."""
        if self.u0.requires_grad and torch.is_grad_enabled():
            return False
        return self._host_value("u0_zero", [self.u0], lambda: not bool(self.u0.detach().any()))

    def set_trainable(self, which: str) -> None:
        """`which`: "all" (filters, u0, scalars), "none", or parts joined by "+" from
        filters / u0 / scalars (e.g. "filters+scalars"): choose what `requires_grad`."""
        parts = set(TRAINABLE_PARTS) if which == "all" else set() if which == "none" else set(which.split("+"))
        if not parts <= set(TRAINABLE_PARTS) or (not parts and which != "none"):
            raise TVNetError(f"trainable part must be all, none or {'/'.join(TRAINABLE_PARTS)} "
                             f"joined by '+', not {which!r}")
        for p in self.filter_parameters():
            p.requires_grad_("filters" in parts)
        self.u0.requires_grad_("u0" in parts)
        for p in self.scalar_parameters():
            p.requires_grad_("scalars" in parts)

    # -- the computation --------------------------------------------------------------------
    def prepare(self, frame0: torch.Tensor, frame1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames -> the grey, jointly normalised (0..255), optionally smoothed pair
        `(B, 1, H, W)` x 2 that the solver and the energy work on."""
        if frame0.shape != frame1.shape:
            raise TVNetError(f"frame shapes differ: {tuple(frame0.shape)} vs {tuple(frame1.shape)}")
        dtype = self.u0.dtype
        i0 = ops.to_grey(frame0).to(dtype)
        i1 = ops.to_grey(frame1).to(dtype)
        i0, i1 = ops.normalize_pair(i0, i1)
        s = self.config.smooth_sigma
        return ops.gaussian_blur(i0, s), ops.gaussian_blur(i1, s)

    def initial_flow(self, size: tuple[int, int], full: tuple[int, int], batch: int) -> torch.Tensor:
        """u0 resampled to a pyramid level of `size`, in that level's pixels `(B, 2, h, w)`."""
        u0 = ops.scale_flow(ops.resize(self.u0, size), size[1] / full[1], size[0] / full[0])
        return u0.expand(batch, -1, -1, -1)

    def _c_plan(self, sizes: list[tuple[int, int]], schedule: list[tuple[int, int]], u_is_zero: bool):
        """The `kernels.cpu.Plan` of `solve`: levels coarsest first, each with its own taps and
        constants as host floats (cached: no device read per forward)."""
        from ..kernels.cpu import Level, Plan

        cfg, params = self.config, self.filter_parameters()
        rows = cfg.scales if cfg.per_level else 1
        taps = self._host_value("taps", params, lambda: list(zip(*(p.detach().reshape(rows, -1).tolist()
                                                                    for p in params))))
        levels = []
        for level in reversed(range(len(sizes))):
            tau, lam, theta = self.solver_scalars(level)
            centred, forward, backward = (tuple(t) for t in taps[cfg.param_level(level) if cfg.per_level else 0])
            warps, iters = schedule[level]
            levels.append(Level(sizes[level], warps, iters, centred, forward, backward,
                                (lam * theta, theta, tau / theta, cfg.eps)))
        return Plan(tuple(levels), cfg.grad_border, cfg.data_outside, cfg.warp, u_is_zero, cfg.brightness,
                    cfg.median if cfg.median > 1 else 0)

    def solve(self, i0: torch.Tensor, i1: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """Coarse-to-fine TV-L1 on prepared grey frames `(B, 1, H, W)` -> flow `(B, 2, H, W)`.
        `threads`: CPU threads of the C kernel (default: torch's)."""
        cfg = self.config
        b, _, h, w = i0.shape
        sizes = cfg.level_sizes(h, w)
        needs_grad = torch.is_grad_enabled() and (
            i0.requires_grad or i1.requires_grad or any(p.requires_grad for p in self.parameters()))
        if not needs_grad:  # inference, or a frozen TVNet on frozen inputs
            self.last_backend = kernels.resolve(self.backend, i0.device, i0.dtype)
            iterate = kernels.iterate_for(self.last_backend) or stepwise()
        else:
            self.last_backend = "torch"
            iterate = stepwise(_checkpointed_step if self.checkpoint else tv_l1_step)
        u_is_zero = self.u0_is_zero()
        u = self.initial_flow(sizes[-1], (h, w), b)
        schedule = cfg.schedule(len(sizes))
        if self.last_backend == "c" and cfg.stop_tol == 0:  # inference: all of it in C
            from ..kernels import cpu

            u = cpu.solve(i0, i1, u, self._c_plan(sizes, schedule, u_is_zero), threads=threads or torch.get_num_threads())
            return ops.resize_flow(u, (h, w))
        # With only the `grad_levels` finest levels training (per-level parameters, u0 and frames
        # fixed), nothing that trains reaches the coarser levels: they run without autograd, with
        # the same gradients (tvl1-half, finest level only: a training step 2.7x faster)
        frozen = (needs_grad and self.grad_levels and cfg.per_level and not self.u0.requires_grad
                  and not (i0.requires_grad or i1.requires_grad))
        for level in reversed(range(len(sizes))):  # coarsest first; images resampled from full size
            size, (warps, iters) = sizes[level], schedule[level]
            u = ops.resize_flow(u, size)
            with torch.no_grad() if frozen and level >= self.grad_levels else nullcontext():
                # scalars: host floats, cached (no device read per forward), or tensors while training
                u = _tv_l1_level(ops.resize(i0, size), ops.resize(i1, size), u, cfg, self.level_taps(level),
                                 iterate, self.solver_scalars(level), u_is_zero, warps, iters)
            u_is_zero = False
        return ops.resize_flow(u, (h, w))  # (B, 2, H, W): upsampled when finest_level > 0

    def energy(self, flow: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        """The exact TV-L1 energy `(B,)` of `flow` `(B, 2, H, W)` on prepared frames, with this
        model's warp, lambda and flow-gradient taps: the problem its solver solves. The taps
        enter detached: a loss on the energy must train the flow, not shrink the regulariser's
        filters towards zero (which would lower the energy of any flow)."""
        from .energy import tvl1_energy

        lam = self.solver_scalars(0)[1]  # the finest level's: the energy is that of the output flow
        return tvl1_energy(flow, i0, i1, lam, taps=self.level_taps(0)[1].detach(), warp=self.config.warp)

    def forward(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        # CPU inference on fewer images than threads: the few torch ops around the C solve (grey,
        # stretch, blur, upsample) run on one thread, as waking the others for each costs more
        # than it saves (4x at batch 1 with passive waiting); the C solve still gets every thread
        lean = frame0.device.type == "cpu" and frame0.shape[0] < threads and not torch.is_grad_enabled()
        if lean:
            from ..runtime import on_device  # (runtime imports this module)
        with on_device(frame0.device, threads=1) if lean else nullcontext():
            i0, i1 = self.prepare(frame0, frame1)
            return self.solve(i0, i1, threads)

    @torch.inference_mode()
    def predict(self, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
        """Inference fast path: no autograd bookkeeping; honours `stop_tol`."""
        return self.forward(frame0, frame1)

    def extra_repr(self) -> str:
        return repr(self.config)
