"""The exact TV-L1 energy (paper Eq. 1, with warping, not linearised).

Used as the unsupervised flow loss and as L_f in the action loss L = L_c + 0.1 L_f (Eq. 13).
"""

from __future__ import annotations

import torch

from . import ops


def tvl1_energy(
    flow: torch.Tensor,
    i0: torch.Tensor,
    i1: torch.Tensor,
    lam: float | torch.Tensor = 0.15,
    eps: float = 1e-6,
    taps: torch.Tensor | tuple = ops.FORWARD_TAPS,
    warp: str = "bilinear",
) -> torch.Tensor:
    """Mean per-pixel TV-L1 energy of `flow` `(B, 2, H, W)` for grey frames `(B, 1, H, W)`.

    E = |grad u1| + |grad u2| + lam * |I1(x + u) - I0(x)|, averaged over pixels, one value
    per batch item `(B,)`. `eps` keeps the square roots and |.| differentiable at 0.
    Pass frames prepared the same way as the model sees them (`TVNet.prepare`), and the
    model's own gradient taps and warp (`TVNet.energy` does both), so that a loss on this
    energy measures the problem the solver solves.
    """
    ux, uy = ops.forward_gradient(flow, taps)  # (B, 2, H, W) each
    smooth = torch.sqrt(ux * ux + uy * uy + eps).sum(dim=1)  # (B, H, W)
    residual = ops.warp(i1, flow, warp) - i0  # (B, 1, H, W)
    data = torch.sqrt(residual * residual + eps)[:, 0]
    return (smooth + lam * data).flatten(1).mean(dim=1)
