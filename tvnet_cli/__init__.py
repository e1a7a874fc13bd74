"""tvnet: optical flow for whole video datasets with TVNet (CVPR 2018), trainable end to end."""

__version__ = "0.1.0"

__all__ = ["FlowData", "TVNet", "TVNetConfig", "TVNetError", "__version__", "read_flow"]

from .errors import TVNetError


def __getattr__(name: str):
    # Import torch lazily so `tvnet --help` stays instant.
    if name in ("TVNet", "TVNetConfig"):
        from .model import tvnet

        return getattr(tvnet, name)
    if name in ("read_flow", "FlowData"):  # any output of `tvnet extract`: io/formats.py
        from .io import formats

        return getattr(formats, name)
    raise AttributeError(name)
