"""The TV-L1 inference iterations as one hand-written Triton kernel (the GPU sibling of the
C kernel `tvl1_cpu.c`): `iterate` applies `tv_l1_step` n times with the same arithmetic.

Why: an iteration is ~30 flops per pixel over 16 planes, so on a GPU it is bound by memory
bandwidth. Eager PyTorch runs it as ~40 kernels that each stream whole planes (about 8x the
bytes below). Here one launch per iteration reads the state (u, px, py: 6 planes) and the
fixed planes (grad_i: 2, grad_sq, rho_c) and writes the new state (6 planes): about 64 bytes
per pixel per iteration from DRAM. The u after the data/divergence half-step is needed at
the +x and +y neighbours too; each program recomputes it there from the old state (cheap
arithmetic, the extra loads hit L1/L2), so no second launch or grid-wide sync is needed.
Scalars are kernel arguments and the taps are read through a pointer: no host work and
zero host synchronisations per call, whatever n is.

Estimate on one H200 (~4.3 TB/s measured copy bandwidth), 340x256 pairs, large batches:
- TVNet-50 (1-1-50): 87,040 px x 50 iterations x 64 B = 279 MB per pair -> at most about
  15,400 pairs/s from the iterations; with the eager pre-processing (grey, normalise, blur,
  gradients: a few hundred B/px once) and ~80% of copy bandwidth, about 10,000-12,000.
- tvl1 (5-5-50, zfactor 0.5: 5 levels, 1.33x the finest level's pixels, 250 iterations per
  level): 116,000 px x 250 x 64 B = 1.86 GB per pair -> at most about 2,300 pairs/s; about
  1,500-1,900 with the warps between iterations and launch latency at the coarse levels.

Under `TRITON_INTERPRET=1` the same kernel runs on CPU tensors (tests and CI); blocks are
then large (a whole small image per program) because the interpreter pays per program.
The `steps` > 1 variant (several iterations per launch, temporal blocking) is below.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Taps = tuple[torch.Tensor, torch.Tensor]


@triton.jit
def _half_step(u_ptr, px_ptr, py_ptr, gi_ptr, gsq_ptr, rc_ptr, r, c, h, w,
               gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x,
               bx0, bx1, by0, by1, lt, theta):
    """u' = u - clamp(rho / |grad I|^2, -lt, lt) grad I + theta div p at rows `r`, columns
    `c` (both flow channels; 0 off the image). State pointers point at one (2, h, w) image."""
    plane = h * w
    inside = (r < h) & (c < w)
    s = r * w + c
    u0 = tl.load(u_ptr + s, mask=inside, other=0.0)
    u1 = tl.load(u_ptr + plane + s, mask=inside, other=0.0)
    gi = gi_ptr + r * gi_r + c * gi_x
    g0 = tl.load(gi, mask=inside, other=0.0)
    g1 = tl.load(gi + gi_c, mask=inside, other=0.0)
    gsq = tl.load(gsq_ptr + r * gsq_r + c * gsq_x, mask=inside, other=1.0)
    rc = tl.load(rc_ptr + r * rc_r + c * rc_x, mask=inside, other=0.0)
    rho = rc + (g0 * u0 + g1 * u1)
    t = tl.minimum(tl.maximum(rho / gsq, -lt), lt)
    # divergence with ops.divergence's borders: p[x] counts for x < w-1, p[x-1] for x >= 1
    mx1 = inside & (c < w - 1)
    mx0 = inside & (c >= 1)
    my1 = inside & (r < h - 1)
    my0 = inside & (r >= 1)
    d0 = (bx1 * tl.load(px_ptr + s, mask=mx1, other=0.0)
          + bx0 * tl.load(px_ptr + s - 1, mask=mx0, other=0.0)) \
        + (by1 * tl.load(py_ptr + s, mask=my1, other=0.0)
           + by0 * tl.load(py_ptr + s - w, mask=my0, other=0.0))
    d1 = (bx1 * tl.load(px_ptr + plane + s, mask=mx1, other=0.0)
          + bx0 * tl.load(px_ptr + plane + s - 1, mask=mx0, other=0.0)) \
        + (by1 * tl.load(py_ptr + plane + s, mask=my1, other=0.0)
           + by0 * tl.load(py_ptr + plane + s - w, mask=my0, other=0.0))
    return (u0 - t * g0) + theta * d0, (u1 - t * g1) + theta * d1


@triton.jit
def _dual(p_x, p_y, ux, uy, taut, eps):
    """p' = (p + taut grad u) / (1 + taut |grad u|) for one flow channel."""
    norm = 1.0 + taut * tl.sqrt(ux * ux + uy * uy + eps)
    return (p_x + taut * ux) / norm, (p_y + taut * uy) / norm


@triton.jit
def _tvl1_step_kernel(u_ptr, px_ptr, py_ptr, uo_ptr, pxo_ptr, pyo_ptr,
                      gi_ptr, gsq_ptr, rc_ptr, taps_ptr, h, w,
                      gi_b, gi_c, gi_r, gi_x, gsq_b, gsq_r, gsq_x, rc_b, rc_r, rc_x,
                      lt, theta, taut, eps, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """One TV-L1 iteration on a BLOCK_H x BLOCK_W tile of image program_id(2)."""
    b = tl.program_id(2).to(tl.int64)
    plane = h * w
    state = b * 2 * plane  # the state is contiguous (B, 2, h, w)
    u_ptr += state
    px_ptr += state
    py_ptr += state
    gi_ptr += b * gi_b
    gsq_ptr += b * gsq_b
    rc_ptr += b * rc_b
    f00 = tl.load(taps_ptr)
    f01 = tl.load(taps_ptr + 1)
    f10 = tl.load(taps_ptr + 2)
    f11 = tl.load(taps_ptr + 3)
    bx0 = tl.load(taps_ptr + 4)
    bx1 = tl.load(taps_ptr + 5)
    by0 = tl.load(taps_ptr + 6)
    by1 = tl.load(taps_ptr + 7)
    r = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]  # (BLOCK_H, 1)
    c = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]  # (1, BLOCK_W)
    a0, a1 = _half_step(u_ptr, px_ptr, py_ptr, gi_ptr, gsq_ptr, rc_ptr, r, c, h, w,
                        gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x, bx0, bx1, by0, by1, lt, theta)
    e0, e1 = _half_step(u_ptr, px_ptr, py_ptr, gi_ptr, gsq_ptr, rc_ptr, r, c + 1, h, w,
                        gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x, bx0, bx1, by0, by1, lt, theta)
    s0, s1 = _half_step(u_ptr, px_ptr, py_ptr, gi_ptr, gsq_ptr, rc_ptr, r + 1, c, h, w,
                        gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x, bx0, bx1, by0, by1, lt, theta)
    # forward gradient of u' (ops.forward_gradient): 0 on the last column / last row
    has_x = c < w - 1
    has_y = r < h - 1
    ux0 = tl.where(has_x, f00 * a0 + f01 * e0, 0.0)
    ux1 = tl.where(has_x, f00 * a1 + f01 * e1, 0.0)
    uy0 = tl.where(has_y, f10 * a0 + f11 * s0, 0.0)
    uy1 = tl.where(has_y, f10 * a1 + f11 * s1, 0.0)
    inside = (r < h) & (c < w)
    s = r * w + c
    qx0, qy0 = _dual(tl.load(px_ptr + s, mask=inside, other=0.0),
                     tl.load(py_ptr + s, mask=inside, other=0.0), ux0, uy0, taut, eps)
    qx1, qy1 = _dual(tl.load(px_ptr + plane + s, mask=inside, other=0.0),
                     tl.load(py_ptr + plane + s, mask=inside, other=0.0), ux1, uy1, taut, eps)
    uo_ptr += state
    pxo_ptr += state
    pyo_ptr += state
    tl.store(uo_ptr + s, a0, mask=inside)
    tl.store(uo_ptr + plane + s, a1, mask=inside)
    tl.store(pxo_ptr + s, qx0, mask=inside)
    tl.store(pxo_ptr + plane + s, qx1, mask=inside)
    tl.store(pyo_ptr + s, qy0, mask=inside)
    tl.store(pyo_ptr + plane + s, qy1, mask=inside)


def _blocks(h: int, w: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_W, num_warps): ~1k-pixel tiles, 64 columns wide, on a GPU; under the
    interpreter (CPU tensors) one program covers up to 64k pixels (a whole small image)."""
    bw = triton.next_power_of_2(w)
    bh = triton.next_power_of_2(h)
    if device.type == "cpu":
        bw = min(bw, 256)
        return min(bh, max(1, 65536 // bw)), bw, 1
    bw = min(bw, 64)
    return min(bh, max(1, 1024 // bw)), bw, 4


def iterate(u: torch.Tensor, px: torch.Tensor, py: torch.Tensor, grad_i: torch.Tensor,
            grad_sq: torch.Tensor, rho_c: torch.Tensor, taps: Taps,
            consts: tuple[float, float, float, float], n: int, block: tuple[int, int] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`n` applications of `tv_l1_step` (same arguments) on float32 tensors of one device.

    `u`, `px`, `py`, `grad_i` `(B, 2, h, w)`; `grad_sq`, `rho_c` `(B, 1, h, w)` (any strides:
    the fixed planes are read in place). `taps` (forward (2, 2), backward (2, 2)) stay on the
    device; `consts` (lambda*theta, theta, tau/theta, eps) are Python floats. Inputs are not
    modified; returns new (u, px, py). One launch per iteration, no host synchronisation.
    `block` (BLOCK_H, BLOCK_W), powers of two, overrides the tile (tests: GPU-like tiles on
    the interpreter).
    """
    if any(isinstance(k, torch.Tensor) for k in consts):
        raise TypeError("triton_tvl1.iterate: consts must be Python floats (a tensor would need a host read)")
    lt, theta, taut, eps = (float(k) for k in consts)
    for t in (u, px, py, grad_i, grad_sq, rho_c):
        if t.dtype != torch.float32 or t.device != u.device:
            raise TypeError(f"triton_tvl1.iterate: float32 tensors on {u.device} expected, "
                            f"got {t.dtype} on {t.device}")
    b, _, h, w = u.shape
    state = [t.detach().contiguous() for t in (u, px, py)]  # (B, 2, h, w); no copy if contiguous
    if n <= 0:
        return tuple(t.clone() for t in state)
    tap = torch.cat([t.detach().reshape(-1) for t in taps]).to(device=u.device, dtype=torch.float32)  # (8,)
    gi, gsq, rc = grad_i.detach(), grad_sq.detach(), rho_c.detach()
    bh, bw, warps = _blocks(h, w, u.device)
    if block is not None:
        bh, bw = block
    grid = (triton.cdiv(w, bw), triton.cdiv(h, bh), b)
    bufs = [[torch.empty_like(t) for t in state] for _ in range(min(n, 2))]
    for i in range(n):
        out = bufs[i % 2]
        _tvl1_step_kernel[grid](
            *state, *out, gi, gsq, rc, tap, h, w,
            gi.stride(0), gi.stride(1), gi.stride(2), gi.stride(3),
            gsq.stride(0), gsq.stride(2), gsq.stride(3), rc.stride(0), rc.stride(2), rc.stride(3),
            lt, theta, taut, eps, BLOCK_H=bh, BLOCK_W=bw, num_warps=warps)
        state = out
    return state[0], state[1], state[2]
