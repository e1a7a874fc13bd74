"""TVNet model: pure ops, the unrolled solver module, the TV-L1 energy and presets."""

from .energy import tvl1_energy
from .presets import PRESETS, load_preset
from .tvnet import TVNet, TVNetConfig

__all__ = ["PRESETS", "TVNet", "TVNetConfig", "load_preset", "tvl1_energy"]
