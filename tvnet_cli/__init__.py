"""tvnet: optical flow for whole video datasets with TVNet (CVPR 2018), trainable end to end."""

__version__ = "0.1.0"

__all__ = ["TVNet", "TVNetConfig", "TVNetError", "__version__"]

from .errors import TVNetError


def __getattr__(name: str):
    # Import torch lazily so `tvnet --help` stays instant.
    if name in ("TVNet", "TVNetConfig"):
        from .model import tvnet

        return getattr(tvnet, name)
    raise AttributeError(name)
