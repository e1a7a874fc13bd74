"""`tvnet` command line: a click group whose commands live in `tvnet_cli/commands/`.

Commands only parse options, build a config and call one library function. torch and av
are imported inside the commands so `tvnet --help` is instant. Expected failures raise
`TVNetError`, printed here as one line (exit status 1, or the error's `exit_code`); usage
errors exit with 2.
"""

from __future__ import annotations

import importlib
import os

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise). Read once,
# when torch loads libgomp, so it is set here, before any command imports torch. With spinning
# threads TVNet-50 at 2 threads ran 10-60x slower beside two busy processes (issue 13).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click

from . import __version__
from .errors import TVNetError

# command name -> "module:function" in tvnet_cli.commands (loaded on first use)
COMMANDS = {
    "extract": "extract:extract",
    "epe": "flow:epe",
    "train": "flow:train",
    "viz": "flow:viz",
    "make-flow-data": "flow:make_flow_data",
    "train-action": "action:train_action",
    "eval-action": "action:eval_action",
    "make-toy-actions": "action:make_toy_actions",
    "presets": "presets:presets",
}


class LazyGroup(click.Group):
    """Loads each command's module only when that command runs (or is listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if self._load(n) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        mod, func = COMMANDS[name].split(":")
        try:
            module = importlib.import_module(f".commands.{mod}", __package__)
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.commands.{mod}":
                return None  # command not built yet
            raise
        return getattr(module, func, None)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TVNetError as e:
            err = click.ClickException(str(e))
            err.exit_code = getattr(e, "exit_code", 1)  # OutputBusy: 2
            raise err from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tvnet")
def main() -> None:
    """TVNet optical flow for whole video datasets: extract, evaluate, train."""
