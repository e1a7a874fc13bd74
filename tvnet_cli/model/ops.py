"""Pure, differentiable tensor functions that TV-L1 / TVNet is built from.

No state and no nn.Module here: every function takes tensors (and, where the paper makes
them trainable, the filter taps as tensors) and returns tensors. Images are
`(B, C, H, W)`, flow is `(B, 2, H, W)` with channel 0 = u (pixels, +x right) and
channel 1 = v (pixels, +y down).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Default filter taps of Eq. 6, in correlation order (tap k multiplies pixel i - 1 + k for
# the 3-tap centred kernel, pixel i + k for the forward kernel, pixel i - 1 + k for the
# backward kernel). Row 0 is the x direction, row 1 the y direction.
CENTRED_TAPS = ((-0.5, 0.0, 0.5), (-0.5, 0.0, 0.5))
FORWARD_TAPS = ((-1.0, 1.0), (-1.0, 1.0))
BACKWARD_TAPS = ((-1.0, 1.0), (-1.0, 1.0))

# ITU-R BT.601 luma weights, as in the authors' code (they apply them to BGR in reverse order).
GREY_WEIGHTS = (0.299, 0.587, 0.114)


def _taps(taps: torch.Tensor | tuple, like: torch.Tensor) -> torch.Tensor:
    """Filter taps as a tensor on the device/dtype of `like` (trainable taps pass through)."""
    if isinstance(taps, torch.Tensor):
        return taps.to(dtype=like.dtype)
    return torch.tensor(taps, dtype=like.dtype, device=like.device)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """RGB `(B, 3, H, W)` or grey `(B, 1, H, W)` of any dtype -> float grey `(B, 1, H, W)`.

    uint8 input is converted to float first. No flooring (the authors floor to integers,
    which would cut gradients to the input).
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 1, H, W) or (B, 3, H, W) images, got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if x.shape[1] == 1:
        return x
    r, g, b = GREY_WEIGHTS
    return x[:, :1] * r + x[:, 1:2] * g + x[:, 2:] * b


def normalize_pair(i0: torch.Tensor, i1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stretch both frames of each pair jointly to 0..255 by their common min/max.

    `(B, 1, H, W)` each. Joint (not per-frame) so a brightness change between the frames
    survives. A constant pair maps to zeros instead of dividing by zero.
    """
    lo = torch.minimum(i0.flatten(1).amin(dim=1), i1.flatten(1).amin(dim=1)).view(-1, 1, 1, 1)
    hi = torch.maximum(i0.flatten(1).amax(dim=1), i1.flatten(1).amax(dim=1)).view(-1, 1, 1, 1)
    scale = 255.0 / (hi - lo).clamp_min(1e-6)
    return (i0 - lo) * scale, (i1 - lo) * scale


def gaussian_kernel1d(sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D gaussian taps of length 2*radius+1."""
    x = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int = 2, shifted: bool | None = None) -> torch.Tensor:
    """Separable gaussian smoothing of `(B, C, H, W)`; radius 2 = the authors' 5x5 kernel.

    Pads by replicating the border (the authors pad with zeros, which darkens the image
    border and creates false edges there). On the CPU (`shifted` None -> CPU) it is written as
    weighted sums of shifted views, ~10x faster there than a depthwise conv2d at these sizes;
    elsewhere (GPU) as two depthwise convolutions: 4 launches that read and write each plane
    once, instead of ~40 that each stream a whole plane. Both give the same values.
    """
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, radius, x)
    h, w = x.shape[-2:]
    if shifted is None:
        shifted = x.device.type == "cpu"
    if not shifted:
        c = x.shape[1]
        xp = F.pad(x, (radius, radius, radius, radius), mode="replicate")
        x = F.conv2d(xp, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    xp = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    x = sum(k[i] * xp[..., :, i:i + w] for i in range(2 * radius + 1))
    xp = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return sum(k[i] * xp[..., i:i + h, :] for i in range(2 * radius + 1))


def dot2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel dot product of two `(B, 2, H, W)` fields -> `(B, 1, H, W)` (faster than
    `(a * b).sum(1)`, which reduces across planes)."""
    return a[:, :1] * b[:, :1] + a[:, 1:] * b[:, 1:]


def centred_gradient(
    x: torch.Tensor, taps: torch.Tensor | tuple = CENTRED_TAPS, border: str = "zero"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred difference of `(B, C, H, W)` (Eq. 3/7). `taps` is `(2, 3)`: row 0 for x, row 1
    for y. `border` "zero": zero on the first/last column (x) and row (y), as Eq. 3;
    "replicate": the image is extended by its border pixels first, which gives one-sided
    differences there (0.5 (x1 - x0) with the default taps, as OpenCV's TV-L1). The model's
    default is "zero" (`TVNetConfig.grad_border`; measured slightly better)."""
    t = _taps(taps, x)
    h, w = x.shape[-2:]
    if border == "replicate":
        xp = F.pad(x, (1, 1, 0, 0), mode="replicate")
        gx = t[0, 0] * xp[..., :, :-2] + t[0, 1] * xp[..., :, 1:-1] + t[0, 2] * xp[..., :, 2:]
        xp = F.pad(x, (0, 0, 1, 1), mode="replicate")
        gy = t[1, 0] * xp[..., :-2, :] + t[1, 1] * xp[..., 1:-1, :] + t[1, 2] * xp[..., 2:, :]
        return gx, gy
    # an image 1 or 2 pixels wide (high) is all border: its gradient is zero there
    gx = F.pad(t[0, 0] * x[..., :, :-2] + t[0, 1] * x[..., :, 1:-1] + t[0, 2] * x[..., :, 2:],
               (1, 1, 0, 0)) if w > 2 else torch.zeros_like(x)
    gy = F.pad(t[1, 0] * x[..., :-2, :] + t[1, 1] * x[..., 1:-1, :] + t[1, 2] * x[..., 2:, :],
               (0, 0, 1, 1)) if h > 2 else torch.zeros_like(x)
    return gx, gy


def forward_gradient(
    u: torch.Tensor, taps: torch.Tensor | tuple = FORWARD_TAPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward difference of `(B, C, H, W)` (Eq. 4/8): zero on the last column (x) and
    last row (y). `taps` is `(2, 2)`: row 0 for x, row 1 for y."""
    t = _taps(taps, u)
    gx = t[0, 0] * u[..., :, :-1] + t[0, 1] * u[..., :, 1:]
    gy = t[1, 0] * u[..., :-1, :] + t[1, 1] * u[..., 1:, :]
    return F.pad(gx, (0, 1, 0, 0)), F.pad(gy, (0, 0, 0, 1))


def divergence(
    px: torch.Tensor, py: torch.Tensor, taps: torch.Tensor | tuple = BACKWARD_TAPS
) -> torch.Tensor:
    """Backward-difference divergence of the field (px, py), each `(B, C, H, W)` (Eq. 5/9).

    With the default taps: p(i) - p(i-1) inside, p(i) on the first column/row and
    -p(i-1) on the last, i.e. the negative adjoint of `forward_gradient`.
    `taps` is `(2, 2)`: tap 0 multiplies p(i-1), tap 1 multiplies p(i).
    """
    t = _taps(taps, px)
    qx = px[..., :, :-1]  # the last column takes no part (Eq. 5, i = W)
    qy = py[..., :-1, :]
    dx = t[0, 1] * F.pad(qx, (0, 1, 0, 0)) + t[0, 0] * F.pad(qx, (1, 0, 0, 0))
    dy = t[1, 1] * F.pad(qy, (0, 0, 0, 1)) + t[1, 0] * F.pad(qy, (0, 0, 1, 0))
    return dx + dy


def base_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates `(1, 2, H, W)`: channel 0 = x, channel 1 = y."""
    ys = torch.arange(h, dtype=like.dtype, device=like.device)
    xs = torch.arange(w, dtype=like.dtype, device=like.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).unsqueeze(0)


def warp(x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Backward warp (Eq. 10): out(p) = x(p + flow(p)); `mode` "bilinear" (the paper) or "bicubic".

    `x` `(B, C, H, W)`, `flow` `(B, 2, H, W)` in pixels. Samples outside the image take the
    nearest border value (the authors return 0 on the left/top and extrapolate on the
    right/bottom, and sample at x + u*(W-1)/W; we sample exactly at x + u).
    Differentiable in both `x` and `flow`.
    """
    b, _, h, w = x.shape
    pos = base_grid(h, w, flow) + flow  # (B, 2, H, W) absolute pixel positions
    gx = pos[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = pos[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=True)


def inside(flow: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """`(B, 1, H, W)` bool: where x + flow(x) lies within the image, i.e. where the warp samples
    the image rather than its replicated border: pixel centres 0..W-1 (0..H-1) widened by
    `margin` (the pixels' own extent). The margin keeps the test away from the border pixels'
    own centres, where a near-zero flow would flip it with every rounding difference."""
    h, w = flow.shape[-2:]
    pos = base_grid(h, w, flow) + flow  # (B, 2, H, W)
    x, y = pos[:, :1], pos[:, 1:]
    return (x >= -margin) & (x <= w - 1 + margin) & (y >= -margin) & (y <= h - 1 + margin)


def median_offset(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """`(B, 1, 1, 1)`: the median of `a - b` over the pixels where `mask` `(B, 1, H, W)` is 1 (all
    if None), for `a`, `b` `(B, 1, H, W)`; the lower middle value for an even count (as
    `torch.median`), 0 where the mask is empty. A median, not a mean: where the flow is still
    wrong, misaligned pixels skew a mean, and on pairs without a brightness change that bias
    measured worse than none (issue 13)."""
    d = (a - b).flatten(1)  # (B, HW)
    if mask is not None:
        d = torch.where(mask.flatten(1) > 0, d, torch.nan)
    return d.nanmedian(dim=1).values.nan_to_num(0.0).view(-1, 1, 1, 1)


MEDIAN_CHUNK_BYTES = 256 << 20  # window copies of `median_filter` at once (a GPU batch of 256
# frames at 170x128 would otherwise copy 1.1 GB per warp)


def median_filter(u: torch.Tensor, k: int) -> torch.Tensor:
    """`(B, C, H, W)` -> the same: the median of each k x k window (k odd), border replicated
    (as OpenCV's `medianBlur` of a float image, which its TV-L1 runs after every warp). The
    k*k window copies are made for a few images at a time (MEDIAN_CHUNK_BYTES)."""
    b, c, h, w = u.shape
    r = k // 2
    step = max(1, MEDIAN_CHUNK_BYTES // (c * k * k * h * w * u.element_size()))

    def part(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        win = F.unfold(F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode="replicate"), k)  # (nC, k*k, HW)
        return win.median(dim=1).values.view(n, c, h, w)

    return part(u) if b <= step else torch.cat([part(u[i:i + step]) for i in range(0, b, step)])


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize `(B, C, H, W)` to `size`: area averaging when shrinking, bilinear otherwise.

    Area averaging from full resolution equals OpenCV's chain of 2x2 averages for
    zfactor 0.5, and measured better than anti-aliased bilinear (wider blur) and than the
    authors' plain bilinear subsampling (aliasing) on Grove3 and FlyingChairs.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def scale_flow(flow: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Flow `(B, 2, h, w)` with u multiplied by `sx` and v by `sy` (Python floats: no tensor is
    built from host values, so nothing waits for the device)."""
    return torch.cat([flow[:, :1] * sx, flow[:, 1:] * sy], dim=1)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize flow `(B, 2, h, w)` to `size` and rescale its pixel units to match."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    return scale_flow(resize(flow, size), size[1] / w, size[0] / h)


def pyramid_sizes(h: int, w: int, max_scales: int, zfactor: float, min_side: int = 0) -> list[tuple[int, int]]:
    """Image sizes from finest to coarsest.

    Number of levels as in the authors' code: min(1 + log(diag/4) / log(1/zfactor),
    max_scales), so the coarsest level keeps a diagonal of a few pixels or more; and, with
    `min_side`, no level after the first whose shorter side is below `min_side` pixels (as
    OpenCV's TV-L1 stops at 16: below that, aliasing and the border dominate a level, and its
    wrong flow traps the finer levels - measured on generated pairs with exact flow).
    """
    diag = math.hypot(h, w)
    n = 1 + int(math.log(max(diag / 4.0, 1.0)) / math.log(1.0 / zfactor))
    n = max(1, min(n, max_scales))
    sizes = [level_size(h, w, zfactor, s) for s in range(n)]
    return sizes[:1] + [s for s in sizes[1:] if min(s) >= min_side]


def level_size(h: int, w: int, zfactor: float, s: int) -> tuple[int, int]:
    """Size of pyramid level `s` (0 = full size): at least 2 pixels a side, but never more
    than the image has."""
    return max(min(2, h), round(h * zfactor**s)), max(min(2, w), round(w * zfactor**s))
