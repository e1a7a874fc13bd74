"""`python -m tvnet_cli ...` = `tvnet ...` (e.g. under torchrun)."""

from .cli import main

main()
