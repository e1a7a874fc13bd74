"""The one flow quantiser: float pixels <-> uint8, as TSN/mmaction2 flow JPEGs expect.

q = clip(round(255 * (v + b) / (2 b)), 0, 255) with bound b; zero motion is 128.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_BOUND = 20.0


def quantize(flow: torch.Tensor, bound: float = DEFAULT_BOUND) -> torch.Tensor:
    """Flow (any shape, pixels) -> uint8 on the same device (quantise on the GPU, move bytes)."""
    q = torch.round((flow.float() + bound) * (255.0 / (2.0 * bound)))
    return q.clamp_(0, 255).to(torch.uint8)


def dequantize(q: np.ndarray | torch.Tensor, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """uint8 codes -> float32 flow in pixels (the centre of each code's bin)."""
    q = q.cpu().numpy() if isinstance(q, torch.Tensor) else np.asarray(q)
    return q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)
