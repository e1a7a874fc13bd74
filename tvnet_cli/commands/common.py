"""Options shared by several commands (--device, --backend) and the one check of devices."""

from __future__ import annotations

import click

BACKEND_CHOICES = ("auto", "torch", "c", "triton")  # = runtime.BACKENDS (kept torch-free here)

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="auto (cuda:0, or cuda:LOCAL_RANK under torchrun, where CUDA is present; else cpu), "
         "cpu, cuda, cuda:N or mps.")
backend_option = click.option(
    "--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
    help="TV-L1 inference kernel: auto (C on CPU float32, Triton on CUDA, else PyTorch), torch, c or triton.")


class OptionError(click.ClickException):
    """A bad option value found after parsing: one line 'Error: ...', exit status 2."""

    exit_code = 2


def check_devices(device: str | None, gpus: str | None = None) -> tuple[str, ...]:
    """`runtime.resolve_devices` for the command line: device names, or an `OptionError`."""
    from ..errors import TVNetError
    from ..runtime import resolve_devices

    try:
        return tuple(str(d) for d in resolve_devices(device, gpus))
    except TVNetError as e:
        raise OptionError(str(e)) from None
