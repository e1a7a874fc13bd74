"""Named TVNet configurations and the shipped weight files in `weights/`.

`tvnet-S-W-I` is S scales x W warps x I iterations, as in the paper; `tvnet-I` is 1-1-I.
W and I may also be per-level lists, finest level first, joined by dots (`tvnet-4-1-10.20.40.80`);
a suffix `-fK` stops the solve K levels above full resolution (`finest_level`).
A preset name that matches a file `weights/<name>.pt` loads those trained weights.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from ..errors import TVNetError
from .tvnet import TVNet, TVNetConfig

PRESETS: dict[str, TVNetConfig] = {
    "tvnet-10": TVNetConfig(1, 1, 10),
    "tvnet-30": TVNetConfig(1, 1, 30),
    "tvnet-50": TVNetConfig(1, 1, 50),
    "tvnet-3-1-10": TVNetConfig(3, 1, 10),
    "tvnet-4-1-12": TVNetConfig(4, 1, 12),  # about TVNet-50's cost, far better on large motion
    "tvnet-1-3-10": TVNetConfig(1, 3, 10),
    # the paper's TV-L1 baseline, 5-5-50, without pre-smoothing (as OpenCV): a converged pyramid
    # gains nothing from it on average and it made the worst pairs worse (issue 13: worst ratio to
    # OpenCV 5-5-50 1.016 vs 1.024 on our real pairs, 1.18 vs 1.25 on synthetic ones, 1.09 vs 1.34
    # on the issue author's KITTI pair; BENCHMARKS.md "Speed/accuracy front"; re-measured with
    # the border fixes of TVNetConfig: 1.008 real, 1.126 synthetic, "TV-L1 at the image border")
    "tvl1": TVNetConfig(5, 5, 50, smooth_sigma=0.0),
    # Per-level schedules (finest level first): coarse levels cost 1/4, 1/16, ... of the finest,
    # so they get the warps and iterations. Chosen by mean EPE on synthetic pairs with exact flow
    # (not on the real ground truth), each the best of the sweep in its cost class (issue 13):
    # about TVNet-50's cost (1.2x), and about twice it (~1/3 of tvl1).
    # Both with brightness="bias" (a global exposure change is not motion): synthetic EPE -23 %,
    # real pairs without such a change unchanged or better (BENCHMARKS.md, issue 13).
    # All four with coarsest_side=48: frames wider than 768 px get extra coarse levels for large
    # motion, as OpenCV DIS sizes its pyramid (`tvl1` keeps OpenCV TV-L1's fixed 5 levels).
    "tvl1-fast": TVNetConfig(5, 1, 10, level_warps=(1, 1, 2, 3, 5), level_iters=(10, 20, 30, 50, 50),
                             brightness="bias", coarsest_side=48),
    "tvl1-medium": TVNetConfig(5, 2, 10, level_warps=(2, 3, 5, 5, 5), level_iters=(10, 20, 30, 50, 50),
                               smooth_sigma=0.0, brightness="bias", coarsest_side=48),
    # The most accurate: 10 warps on the coarse levels, where they cost little (OpenCV DeepFlow's
    # time class). Chosen by synthetic EPE among 5-5-50-like schedules with brightness="bias".
    "tvl1-accurate": TVNetConfig(5, 5, 50, level_warps=(5, 10, 10, 10, 10), smooth_sigma=0.0, brightness="bias",
                                  coarsest_side=48),
    # Half resolution (finest_level=1, as OpenCV DIS's finest scale): ~1/4 of the work, for DIS's
    # cost. 10 iterations per warp at every level: 20.30.50 at the coarse ones measured no better.
    # A 5x5 median after every warp (a 10x10 window at full size): EPE -6.5 % real, -5.4 %
    # generated, -25 % on 375x1242 scenes, for ~+30 % CPU; the full-size presets gained <2 % or
    # lost from it (BENCHMARKS.md, "Median filtering").
    "tvl1-half": TVNetConfig(4, 2, 10, level_warps=(2, 3, 5, 5), smooth_sigma=0.0, brightness="bias", finest_level=1,
                              coarsest_side=48, median=5),
}

_PATTERN = re.compile(r"^tvnet-(\d+)-(\d+(?:\.\d+)*)-(\d+(?:\.\d+)*)(?:-f(\d+))?$")


def presmoothing(finest_warps: int) -> float:
    """Pre-smoothing sigma by schedule: 0.8 when the finest level runs one warp (one
    linearisation: smoothing widens its range), 0 when it runs several (the warps do that, and
    smoothing only blurs detail; it made TV-L1's worst pairs worse). Measured on real and
    synthetic pairs (BENCHMARKS.md, "Speed/accuracy front")."""
    return 0.8 if finest_warps == 1 else 0.0


def weights_dir() -> Path:
    """Folder of the shipped weight files: installed with the package as `tvnet_cli.weights`,
    or `weights/` beside the package when it runs from a source tree that is not installed."""
    try:
        return Path(str(resources.files("tvnet_cli.weights")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "weights"


def shipped_weights() -> dict[str, Path]:
    """Shipped trained weights by preset name (file stem)."""
    return {p.stem: p for p in sorted(weights_dir().glob("*.pt"))}


def preset_names() -> list[str]:
    return sorted(PRESETS) + sorted(shipped_weights())


def preset_config(name: str) -> TVNetConfig:
    """Config of an untrained preset: a name in PRESETS or any `tvnet-S-W-I`."""
    if name in PRESETS:
        return PRESETS[name]
    m = _PATTERN.match(name)
    if m:
        scales, (warps, iters) = int(m.group(1)), ([int(v) for v in g.split(".")] for g in m.groups()[1:3])
        return TVNetConfig(scales, warps[0], iters[0],
                           level_warps=tuple(warps) if len(warps) > 1 else None,
                           level_iters=tuple(iters) if len(iters) > 1 else None,
                           smooth_sigma=presmoothing(warps[0]), finest_level=int(m.group(4) or 0))
    raise TVNetError(f"unknown preset {name!r}; known: {', '.join(preset_names())} or tvnet-S-W-I")


def load_preset(name: str, **overrides) -> TVNet:
    """TVNet for a preset name: shipped weights if a file has that name, else untrained."""
    weights = shipped_weights()
    if name in weights:
        return TVNet.from_file(weights[name], **overrides)
    cfg = preset_config(name)
    return TVNet(cfg.replace(**overrides) if overrides else cfg)
