"""`tvnet presets`: the named configurations and shipped weights, as a table."""

import click

NOTES = {  # what each named preset is for (README "Presets" has the measurements)
    "tvnet-50": "the paper's fast TVNet-50",
    "tvnet-4-1-12": "about TVNet-50's cost, far better on large motion",
    "tvnet-3-1-10": "multi-scale, fast",
    "tvl1": "the paper's TV-L1 baseline, faithful to OpenCV's DualTVL1 at 5-5-50",
    "tvl1-accurate": "most accurate: more coarse warps, exposure changes ignored (OpenCV DeepFlow's time class)",
    "tvl1-half": "pyramid solved to half resolution: below OpenCV DIS-medium's CPU time, more accurate on real GT",
    "tvl1-fast": "TV-L1 pyramid at about TVNet-50's cost (coarse levels get the work)",
    "tvl1-medium": "TV-L1 pyramid at about 1/3 of tvl1's cost",
    "tvnet-50-trained": "TVNet-50 with trained filters (weights/tvnet-50-trained.md)",
    "tvl1-half-trained": "tvl1-half (same cost) with its finest levels' scalars trained on generated pairs "
                         "(weights/tvl1-half-trained.md)",
}


def unnamed_settings(cfg) -> str:
    """What a config sets that its `tvnet-S-W-I` name does not say (so the name alone, used as a
    preset, is a different model): brightness "bias" (exposure-robust), median, extra coarse
    levels, per-level parameters, scalars off their defaults."""
    from ..model import TVNetConfig

    base = TVNetConfig()
    parts = []
    if cfg.brightness != base.brightness:
        parts.append(cfg.brightness)
    if cfg.median > 1:
        parts.append(f"median {cfg.median}")
    if cfg.coarsest_side:
        parts.append(f"levels to {cfg.coarsest_side}px")
    if cfg.per_level:
        parts.append("per level")
    parts += [f"{k} {getattr(cfg, k):g}" for k in ("tau", "lam", "theta") if getattr(cfg, k) != getattr(base, k)]
    return ", ".join(parts)


@click.command()
def presets() -> None:
    """List model presets: untrained schedules and shipped trained weights.

    A schedule S-W-I is S pyramid scales x W warps per scale x I TV-L1 iterations per warp
    (per-level lists, finest level first, joined by dots); any `tvnet-S-W-I` works as a preset
    name too. sigma: pre-smoothing."""
    from rich.console import Console
    from rich.table import Table

    from ..extract.config import ExtractConfig
    from ..model import TVNet
    from ..model.presets import PRESETS, shipped_weights

    default = ExtractConfig.__dataclass_fields__["preset"].default
    table = Table(title="tvnet presets", caption="S-W-I = scales x warps x iterations per warp (-fK: solved "
                  "K levels above full resolution, then upsampled); also = settings the S-W-I name does not "
                  "carry (bias: exposure-robust); * = the default of `tvnet extract`; any tvnet-S-W-I is a preset too")
    for col in ("preset", "kind", "S-W-I", "sigma", "also", "use"):
        table.add_column(col, no_wrap=col not in ("also", "use"), ratio=2 if col == "use" else 1 if col == "also" else None)
    rows = [(name, "untrained", cfg) for name, cfg in sorted(PRESETS.items())]
    rows += [(name, "trained", TVNet.from_file(path).config) for name, path in shipped_weights().items()]
    for name, kind, cfg in rows:
        mark = "*" if name == default else ""
        table.add_row(f"{name}{mark}", kind, cfg.name.removeprefix("tvnet-"), f"{cfg.smooth_sigma:g}",
                      unnamed_settings(cfg), NOTES.get(name, ""))
    Console(width=120).print(table)
