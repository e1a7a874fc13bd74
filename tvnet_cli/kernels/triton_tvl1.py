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

`iterate(..., steps=k)`, k > 1, runs k iterations per launch (temporal blocking): each
program iterates on its tile plus a k-pixel halo in two private scratch buffers (global
memory, meant to stay in L1/L2; 2 x 6 planes of 32 x 32 per program, about 2 GB for batch
256 at 340x256 with k = 4), with a block barrier between iterations. DRAM traffic drops
to about 64/k B per pixel per iteration (plus halo overlap), at the price of recomputing
the halo. Bit-identical to steps=1 under the interpreter; both kernels compile for sm_90
without spills, but neither has run on a GPU yet, so the default stays 1 until a GPU
session compares the two.

Under `TRITON_INTERPRET=1` the same kernels run on CPU tensors (tests and CI); blocks are
then large (a whole small image per program) because the interpreter pays per program.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ..errors import TVNetError

Taps = tuple[torch.Tensor, torch.Tensor]


@triton.jit
def _half_step(u_ptr, px_ptr, py_ptr, s, srow, splane, ok, ok_x0, ok_y0,
               gi_ptr, gsq_ptr, rc_ptr, r, c, h, w, gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x,
               bx0, bx1, by0, by1, lt, theta):
    """u' = u - clamp(rho / |grad I|^2, -lt, lt) grad I + theta div p at image rows `r`,
    columns `c` (both flow channels; 0 off the image). The state is read at offsets `s`
    (row stride `srow`, channel stride `splane`) where `ok`; `ok_x0`/`ok_y0` say whether
    the left/upper neighbours are stored there too."""
    inside = ok & (r >= 0) & (c >= 0) & (r < h) & (c < w)
    u0 = tl.load(u_ptr + s, mask=inside, other=0.0)
    u1 = tl.load(u_ptr + splane + s, mask=inside, other=0.0)
    gi = gi_ptr + r * gi_r + c * gi_x
    g0 = tl.load(gi, mask=inside, other=0.0)
    g1 = tl.load(gi + gi_c, mask=inside, other=0.0)
    gsq = tl.load(gsq_ptr + r * gsq_r + c * gsq_x, mask=inside, other=1.0)
    rc = tl.load(rc_ptr + r * rc_r + c * rc_x, mask=inside, other=0.0)
    rho = rc + (g0 * u0 + g1 * u1)
    t = tl.minimum(tl.maximum(rho / gsq, -lt), lt)
    # divergence with ops.divergence's borders: p[x] counts for x < w-1, p[x-1] for x >= 1
    mx1 = inside & (c < w - 1)
    mx0 = inside & (c >= 1) & ok_x0
    my1 = inside & (r < h - 1)
    my0 = inside & (r >= 1) & ok_y0
    d0 = (bx1 * tl.load(px_ptr + s, mask=mx1, other=0.0)
          + bx0 * tl.load(px_ptr + s - 1, mask=mx0, other=0.0)) \
        + (by1 * tl.load(py_ptr + s, mask=my1, other=0.0)
           + by0 * tl.load(py_ptr + s - srow, mask=my0, other=0.0))
    d1 = (bx1 * tl.load(px_ptr + splane + s, mask=mx1, other=0.0)
          + bx0 * tl.load(px_ptr + splane + s - 1, mask=mx0, other=0.0)) \
        + (by1 * tl.load(py_ptr + splane + s, mask=my1, other=0.0)
           + by0 * tl.load(py_ptr + splane + s - srow, mask=my0, other=0.0))
    return (u0 - t * g0) + theta * d0, (u1 - t * g1) + theta * d1


@triton.jit
def _dual(p_x, p_y, ux, uy, taut, eps):
    """p' = (p + taut grad u) / (1 + taut |grad u|) for one flow channel."""
    norm = 1.0 + taut * tl.sqrt(ux * ux + uy * uy + eps)
    return (p_x + taut * ux) / norm, (p_y + taut * uy) / norm


@triton.jit
def _iteration(u_ptr, px_ptr, py_ptr, s, srow, splane, ok_x0, ok_y0, ok_x1, ok_y1,
               gi_ptr, gsq_ptr, rc_ptr, r, c, h, w, gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x,
               taps_ptr, lt, theta, taut, eps):
    """One TV-L1 iteration at image rows `r`, columns `c` from the state stored at offsets
    `s` (strides `srow`, `splane`): the new (u0, u1, px0, py0, px1, py1). u' at the +x and
    +y neighbours is recomputed here; `ok_*` say whether the -x, -y, +x, +y neighbours are
    stored (always, for whole images; not at the edge of a scratch tile)."""
    f00 = tl.load(taps_ptr)
    f01 = tl.load(taps_ptr + 1)
    f10 = tl.load(taps_ptr + 2)
    f11 = tl.load(taps_ptr + 3)
    bx0 = tl.load(taps_ptr + 4)
    bx1 = tl.load(taps_ptr + 5)
    by0 = tl.load(taps_ptr + 6)
    by1 = tl.load(taps_ptr + 7)
    a0, a1 = _half_step(u_ptr, px_ptr, py_ptr, s, srow, splane, True, ok_x0, ok_y0,
                        gi_ptr, gsq_ptr, rc_ptr, r, c, h, w, gi_c, gi_r, gi_x, gsq_r, gsq_x,
                        rc_r, rc_x, bx0, bx1, by0, by1, lt, theta)
    e0, e1 = _half_step(u_ptr, px_ptr, py_ptr, s + 1, srow, splane, ok_x1, True, ok_y0,
                        gi_ptr, gsq_ptr, rc_ptr, r, c + 1, h, w, gi_c, gi_r, gi_x, gsq_r, gsq_x,
                        rc_r, rc_x, bx0, bx1, by0, by1, lt, theta)
    s0, s1 = _half_step(u_ptr, px_ptr, py_ptr, s + srow, srow, splane, ok_y1, ok_x0, True,
                        gi_ptr, gsq_ptr, rc_ptr, r + 1, c, h, w, gi_c, gi_r, gi_x, gsq_r, gsq_x,
                        rc_r, rc_x, bx0, bx1, by0, by1, lt, theta)
    # forward gradient of u' (ops.forward_gradient): 0 on the last column / last row
    has_x = c < w - 1
    has_y = r < h - 1
    ux0 = tl.where(has_x, f00 * a0 + f01 * e0, 0.0)
    ux1 = tl.where(has_x, f00 * a1 + f01 * e1, 0.0)
    uy0 = tl.where(has_y, f10 * a0 + f11 * s0, 0.0)
    uy1 = tl.where(has_y, f10 * a1 + f11 * s1, 0.0)
    inside = (r >= 0) & (c >= 0) & (r < h) & (c < w)
    qx0, qy0 = _dual(tl.load(px_ptr + s, mask=inside, other=0.0),
                     tl.load(py_ptr + s, mask=inside, other=0.0), ux0, uy0, taut, eps)
    qx1, qy1 = _dual(tl.load(px_ptr + splane + s, mask=inside, other=0.0),
                     tl.load(py_ptr + splane + s, mask=inside, other=0.0), ux1, uy1, taut, eps)
    return a0, a1, qx0, qy0, qx1, qy1


@triton.jit
def _tvl1_step_kernel(u_ptr, px_ptr, py_ptr, uo_ptr, pxo_ptr, pyo_ptr,
                      gi_ptr, gsq_ptr, rc_ptr, taps_ptr, h, w,
                      gi_b, gi_c, gi_r, gi_x, gsq_b, gsq_r, gsq_x, rc_b, rc_r, rc_x,
                      lt, theta, taut, eps, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """One TV-L1 iteration on a BLOCK_H x BLOCK_W tile of image program_id(2)."""
    b = tl.program_id(2).to(tl.int64)
    plane = h * w
    state = b * 2 * plane  # the state is contiguous (B, 2, h, w)
    r = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]  # (BLOCK_H, 1)
    c = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]  # (1, BLOCK_W)
    s = r * w + c
    a0, a1, qx0, qy0, qx1, qy1 = _iteration(
        u_ptr + state, px_ptr + state, py_ptr + state, s, w, plane, True, True, True, True,
        gi_ptr + b * gi_b, gsq_ptr + b * gsq_b, rc_ptr + b * rc_b, r, c, h, w,
        gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x, taps_ptr, lt, theta, taut, eps)
    inside = (r < h) & (c < w)
    tl.store(uo_ptr + state + s, a0, mask=inside)
    tl.store(uo_ptr + state + plane + s, a1, mask=inside)
    tl.store(pxo_ptr + state + s, qx0, mask=inside)
    tl.store(pxo_ptr + state + plane + s, qx1, mask=inside)
    tl.store(pyo_ptr + state + s, qy0, mask=inside)
    tl.store(pyo_ptr + state + plane + s, qy1, mask=inside)


@triton.jit
def _tvl1_steps_kernel(u_ptr, px_ptr, py_ptr, uo_ptr, pxo_ptr, pyo_ptr,
                       gi_ptr, gsq_ptr, rc_ptr, taps_ptr, scratch_ptr, h, w,
                       gi_b, gi_c, gi_r, gi_x, gsq_b, gsq_r, gsq_x, rc_b, rc_r, rc_x,
                       lt, theta, taut, eps, n_steps,
                       HALO: tl.constexpr, EXT_H: tl.constexpr, EXT_W: tl.constexpr):
    """`n_steps` <= HALO iterations in one launch (temporal blocking). A program owns an
    (EXT_H - 2 HALO) x (EXT_W - 2 HALO) tile and iterates on it with HALO pixels around
    it, in two private scratch buffers (6 planes each) that stay in L1/L2. The halo takes
    the wrong values of a cut-off border, which travel inwards one pixel per iteration,
    so after n_steps <= HALO iterations the tile itself is exact and is written out."""
    tx = tl.program_id(0)
    ty = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    plane = h * w
    state = b * 2 * plane
    ext = EXT_H * EXT_W
    prog = (b * tl.num_programs(1) + ty) * tl.num_programs(0) + tx
    buf = scratch_ptr + prog * (12 * ext)
    i = tl.arange(0, EXT_H)[:, None]  # (EXT_H, 1) rows of the extended tile
    j = tl.arange(0, EXT_W)[None, :]  # (1, EXT_W)
    r = ty * (EXT_H - 2 * HALO) - HALO + i
    c = tx * (EXT_W - 2 * HALO) - HALO + j
    img = (r >= 0) & (c >= 0) & (r < h) & (c < w)
    gs = r * w + c  # offsets in the image's state (masked where off the image)
    ls = i * EXT_W + j  # offsets in a scratch plane
    tl.store(buf + ls, tl.load(u_ptr + state + gs, mask=img, other=0.0))
    tl.store(buf + ext + ls, tl.load(u_ptr + state + plane + gs, mask=img, other=0.0))
    tl.store(buf + 2 * ext + ls, tl.load(px_ptr + state + gs, mask=img, other=0.0))
    tl.store(buf + 3 * ext + ls, tl.load(px_ptr + state + plane + gs, mask=img, other=0.0))
    tl.store(buf + 4 * ext + ls, tl.load(py_ptr + state + gs, mask=img, other=0.0))
    tl.store(buf + 5 * ext + ls, tl.load(py_ptr + state + plane + gs, mask=img, other=0.0))
    tl.debug_barrier()
    gi_ptr += b * gi_b
    gsq_ptr += b * gsq_b
    rc_ptr += b * rc_b
    for k in range(n_steps):
        src = buf + (k % 2) * (6 * ext)
        dst = buf + ((k + 1) % 2) * (6 * ext)
        a0, a1, qx0, qy0, qx1, qy1 = _iteration(
            src, src + 2 * ext, src + 4 * ext, ls, EXT_W, ext, j >= 1, i >= 1, j < EXT_W - 1,
            i < EXT_H - 1, gi_ptr, gsq_ptr, rc_ptr, r, c, h, w,
            gi_c, gi_r, gi_x, gsq_r, gsq_x, rc_r, rc_x, taps_ptr, lt, theta, taut, eps)
        tl.store(dst + ls, a0)
        tl.store(dst + ext + ls, a1)
        tl.store(dst + 2 * ext + ls, qx0)
        tl.store(dst + 3 * ext + ls, qx1)
        tl.store(dst + 4 * ext + ls, qy0)
        tl.store(dst + 5 * ext + ls, qy1)
        tl.debug_barrier()  # every thread's writes before any thread's next reads
    fin = buf + (n_steps % 2) * (6 * ext)
    own = img & (i >= HALO) & (i < EXT_H - HALO) & (j >= HALO) & (j < EXT_W - HALO)
    tl.store(uo_ptr + state + gs, tl.load(fin + ls), mask=own)
    tl.store(uo_ptr + state + plane + gs, tl.load(fin + ext + ls), mask=own)
    tl.store(pxo_ptr + state + gs, tl.load(fin + 2 * ext + ls), mask=own)
    tl.store(pxo_ptr + state + plane + gs, tl.load(fin + 3 * ext + ls), mask=own)
    tl.store(pyo_ptr + state + gs, tl.load(fin + 4 * ext + ls), mask=own)
    tl.store(pyo_ptr + state + plane + gs, tl.load(fin + 5 * ext + ls), mask=own)


# True when TRITON_INTERPRET=1 was set before this module was imported (CPU tensors work)
INTERPRETED = not isinstance(_tvl1_step_kernel, triton.runtime.JITFunction)


def _blocks(h: int, w: int, device: torch.device, halo: int = 0) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_W, num_warps) of a program's tile, halo included.

    On a GPU one pixel per thread: ptxas (sm_90, Triton 3.9) gives ~62 registers then, 106
    at two pixels and 235-255 with spills at eight (one iteration keeps ~50 values live per
    pixel). So 4 x 64 tiles of 8 warps, narrower where the image is; 32 x 32 tiles of 32
    warps with a halo. Under the interpreter (CPU tensors) up to 64k pixels per program (a
    whole small image), as it pays per program, not per pixel."""
    if device.type == "cpu":
        bw = triton.next_power_of_2(min(w, 256) + 2 * halo)
        return triton.next_power_of_2(min(h, max(1, 65536 // bw)) + 2 * halo), bw, 1
    if halo:
        return 32, 32, 32
    bw = min(triton.next_power_of_2(w), 64)
    bh = min(triton.next_power_of_2(h), max(1, 256 // bw))
    return bh, bw, max(1, bh * bw // 32)


def iterate(u: torch.Tensor, px: torch.Tensor, py: torch.Tensor, grad_i: torch.Tensor,
            grad_sq: torch.Tensor, rho_c: torch.Tensor, taps: Taps,
            consts: tuple[float, float, float, float], n: int, steps: int = 1,
            block: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`n` applications of `tv_l1_step` (same arguments) on float32 tensors of one device.

    `u`, `px`, `py`, `grad_i` `(B, 2, h, w)`; `grad_sq`, `rho_c` `(B, 1, h, w)` (any strides:
    the fixed planes are read in place). `taps` (forward (2, 2), backward (2, 2)) stay on the
    device; `consts` (lambda*theta, theta, tau/theta, eps) are Python floats. Inputs are not
    modified; returns new (u, px, py). No host synchronisation; one launch per iteration,
    or per `steps` iterations when `steps` > 1 (temporal blocking, unmeasured on a GPU yet).
    `block` (BLOCK_H, BLOCK_W), powers of two (halo included), overrides the tile (tests:
    GPU-like tiles on the interpreter).
    """
    if any(isinstance(k, torch.Tensor) for k in consts):
        raise TypeError("triton_tvl1.iterate: consts must be Python floats (a tensor would need a host read)")
    lt, theta, taut, eps = (float(k) for k in consts)
    for t in (u, px, py, grad_i, grad_sq, rho_c):
        if t.dtype != torch.float32 or t.device != u.device:
            raise TypeError(f"triton_tvl1.iterate: float32 tensors on {u.device} expected, "
                            f"got {t.dtype} on {t.device}")
    if u.device.type == "cpu" and not INTERPRETED:
        raise TVNetError("the Triton TV-L1 kernel runs on CPU tensors only under TRITON_INTERPRET=1, "
                         "set before tvnet_cli.kernels.triton_tvl1 is imported")
    b, _, h, w = u.shape
    state = [t.detach().contiguous() for t in (u, px, py)]  # (B, 2, h, w); no copy if contiguous
    if n <= 0:
        return tuple(t.clone() for t in state)
    tap = torch.cat([t.detach().reshape(-1) for t in taps]).to(device=u.device, dtype=torch.float32)  # (8,)
    gi, gsq, rc = grad_i.detach(), grad_sq.detach(), rho_c.detach()
    strides = (gi.stride(0), gi.stride(1), gi.stride(2), gi.stride(3), gsq.stride(0), gsq.stride(2),
               gsq.stride(3), rc.stride(0), rc.stride(2), rc.stride(3))
    halo = steps if steps > 1 else 0
    bh, bw, warps = _blocks(h, w, u.device, halo)
    if block is not None:
        bh, bw = block
    if min(bh, bw) <= 2 * halo:
        raise ValueError(f"triton_tvl1.iterate: tile {bh}x{bw} too small for {steps} steps per launch")
    grid = (triton.cdiv(w, bw - 2 * halo), triton.cdiv(h, bh - 2 * halo), b)
    per = max(steps, 1)  # iterations per launch
    bufs = [[torch.empty_like(t) for t in state] for _ in range(min(-(-n // per), 2))]
    if halo:  # two private 6-plane buffers per program, reused by every launch
        scratch = torch.empty(grid[0] * grid[1] * b * 12 * bh * bw, dtype=torch.float32, device=u.device)
    # Triton launches on the current CUDA device: make it the tensors' (cuda:1 from cuda:0)
    on_device = torch.cuda.device(u.device) if u.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        for launch, done in enumerate(range(0, n, per)):
            out = bufs[launch % 2]
            if halo:
                _tvl1_steps_kernel[grid](*state, *out, gi, gsq, rc, tap, scratch, h, w, *strides,
                                         lt, theta, taut, eps, min(per, n - done),
                                         HALO=halo, EXT_H=bh, EXT_W=bw, num_warps=warps)
            else:
                _tvl1_step_kernel[grid](*state, *out, gi, gsq, rc, tap, h, w, *strides,
                                        lt, theta, taut, eps, BLOCK_H=bh, BLOCK_W=bw, num_warps=warps)
            state = out
    return state[0], state[1], state[2]
