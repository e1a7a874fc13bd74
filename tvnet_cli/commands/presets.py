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
                  "K levels above full resolution, then upsampled); "
                  "* = the default of `tvnet extract`; any tvnet-S-W-I is a preset too")
    for col in ("preset", "kind", "S-W-I", "sigma", "use"):
        table.add_column(col)
    rows = [(name, "untrained", cfg) for name, cfg in sorted(PRESETS.items())]
    rows += [(name, "trained", TVNet.from_file(path).config) for name, path in shipped_weights().items()]
    for name, kind, cfg in rows:
        mark = "*" if name == default else ""
        table.add_row(f"{name}{mark}", kind, cfg.name.removeprefix("tvnet-"), f"{cfg.smooth_sigma:g}",
                      NOTES.get(name, ""))
    Console(width=120).print(table)
