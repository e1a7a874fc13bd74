"""`tvnet presets`: list the named configurations and shipped weights."""

import click


@click.command()
def presets() -> None:
    """List model presets (untrained configurations and shipped trained weights)."""
    from ..model.presets import PRESETS, shipped_weights

    for name, cfg in sorted(PRESETS.items()):
        click.echo(f"{name:16s} untrained  {cfg.name.removeprefix('tvnet-')}  smooth_sigma {cfg.smooth_sigma:g}")
    for name, path in shipped_weights().items():
        click.echo(f"{name:16s} trained    {path.name}")
