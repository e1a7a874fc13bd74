"""The CPU TV-L1 kernel (`tvl1_cpu.c`): compiled once per machine, run from Python threads.

The C file is compiled with the system C compiler (`cc`, or `$CC`) in about a second, and
cached in a private kernel folder (`cache.py`: loaded only from folders and files that this
user owns and others cannot write), keyed by the source, the compiler flags and the CPU's
instruction set. It is called through ctypes, which releases the GIL, so a small thread pool
runs images (or row bands of one image) in parallel. Without a compiler `library()` returns
None (with the reason in `unavailable`) and the selector says so and uses the PyTorch step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from .cache import kernel_folders, safe_file

SOURCE = Path(__file__).with_name("tvl1_cpu.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fPIC", "-shared",
         "-std=gnu99", "-pthread"]
# -ffp-contract=off: no fused multiply-adds, so each product and sum rounds as in PyTorch's ops;
# -fno-trapping-math: floorf vectorises (no value changes: nothing here traps on FP exceptions)
GROUP = 8  # iterations per sweep: rows in flight x 16 planes stay in L2 at video widths
ROUND = 16  # iterations per round of row bands (ghost rows = ROUND + 2 on each inner side)
_LIB: list = []  # [CDLL or None] once tried
unavailable = ""  # why the kernel could not be built or loaded (for the selector's warning)
_POOL: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (pid, threads) -> pool


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compile(path: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH; install gcc or set $CC")
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.so")
    out = subprocess.run([cc, *FLAGS, "-o", str(tmp), str(SOURCE), "-lm"], capture_output=True, text=True)
    if out.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{cc} failed: {(out.stderr.strip().splitlines() or [''])[0][:200]}")
    os.chmod(tmp, 0o700)
    tmp.replace(path)


def _key() -> str:
    src = SOURCE.read_bytes()
    return hashlib.sha1(src + " ".join(FLAGS).encode() + _cpu_flags().encode()
                        + platform.machine().encode()).hexdigest()[:16]


def library() -> ctypes.CDLL | None:
    """The compiled kernel, building it on first use; None if impossible (reason in `unavailable`).

    A cached file is loaded only if `cache.safe_file` accepts it; otherwise it is rebuilt."""
    global unavailable
    if _LIB:
        return _LIB[0]
    name = f"tvl1_cpu-{_key()}.so"
    lib, errors = None, []
    for folder in kernel_folders():
        path = folder / name
        try:
            if not safe_file(path):
                _compile(path)
            if not safe_file(path):
                raise OSError(f"{path} is not a private file after building it")
            lib = ctypes.CDLL(str(path))
            break
        except (OSError, RuntimeError) as e:  # unwritable folder, no compiler: next folder / give up
            errors.append(str(e))
            if isinstance(e, RuntimeError):
                break
    if lib is not None:
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.tvl1_image.argtypes = [i, i, i, i] + [p] * 8
        lib.tvl1_band.argtypes = [i] * 6 + [p] * 11
        lib.tvl1_solve.argtypes = [i, i, p, p, p, i, p, p, i, i, i, p]
        lib.tvl1_resize.argtypes = lib.tvl1_resize_flow.argtypes = [i, i, p, i, i, p]
        lib.tvl1_centred_gradient.argtypes = [i, i, p, p, i, p, p]
        lib.tvl1_warp.argtypes = [i, i, i, p, p, i, p]
        lib.tvl1_median.argtypes = [i, i, i, p, p]
        lib.tvl1_band_threshold.argtypes = lib.tvl1_thread_backoff.argtypes = [i]
        for f in (lib.tvl1_image, lib.tvl1_band, lib.tvl1_solve, lib.tvl1_resize, lib.tvl1_resize_flow,
                  lib.tvl1_centred_gradient, lib.tvl1_warp, lib.tvl1_median, lib.tvl1_band_threshold, lib.tvl1_thread_backoff):
            f.restype = i
    else:
        unavailable = (errors[-1] if errors else "no kernel folder")[:300]
    _LIB.append(lib)
    return lib


def _pool(threads: int) -> ThreadPoolExecutor:
    """One pool per process and size (a forked child, e.g. a data-loader worker, has none of
    its parent's threads, so it must not reuse the parent's pool)."""
    key = (os.getpid(), threads)
    if key not in _POOL:
        for old in [k for k in _POOL if k[0] == key[0]]:
            _POOL.pop(old).shutdown()
        _POOL[key] = ThreadPoolExecutor(threads, thread_name_prefix="tvnet-tvl1")
    return _POOL[key]


def _bands(batch: int, h: int, threads: int) -> int:
    """Row bands per image: 1 when the batch alone keeps every thread busy."""
    if batch >= threads:
        return 1
    return max(1, min(-(-threads // batch), h // (4 * ROUND)))


def iterate(u: torch.Tensor, px: torch.Tensor, py: torch.Tensor, grad_i: torch.Tensor,
            grad_sq: torch.Tensor, rho_c: torch.Tensor, taps: tuple[torch.Tensor, torch.Tensor],
            consts: tuple[float, float, float, float], iters: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`iters` applications of `tv_l1_step` (same arguments) on float32 CPU tensors.

    `u`, `px`, `py`, `grad_i` `(B, 2, h, w)`; `grad_sq`, `rho_c` `(B, 1, h, w)`. Inputs are
    not modified; returns new (u, px, py).
    """
    lib = library()
    assert lib is not None, "call library() first"
    b, _, h, w = u.shape
    state = [t.detach().contiguous().clone() for t in (u, px, py)]
    fixed = [t.detach().contiguous() for t in (grad_i, grad_sq, rho_c)]
    tap = torch.cat([t.detach().float().reshape(-1) for t in taps]).contiguous()  # (8,)
    const = (ctypes.c_float * 4)(*(float(c) for c in consts))  # host floats: no tensor, no sync
    threads = max(1, torch.get_num_threads())
    nb = _bands(b, h, threads)
    img, one = 2 * h * w * 4, h * w * 4  # bytes per (2, h, w) and (h, w) image
    ptr = [t.data_ptr() for t in state + fixed]
    extra = (tap.data_ptr(), ctypes.addressof(const))

    def whole(i: int) -> int:
        s = [p + i * img for p in ptr[:4]] + [p + i * one for p in ptr[4:]]
        return lib.tvl1_image(h, w, iters, GROUP, *s, *extra)

    if nb == 1:
        codes = list(_pool(threads).map(whole, range(b))) if b > 1 else [whole(0)]
    else:  # bands of each image, in rounds of ROUND iterations, double-buffered
        out = [torch.empty_like(t) for t in state]
        edges = [round(k * h / nb) for k in range(nb + 1)]
        jobs = [(i, edges[k], edges[k + 1]) for i in range(b) for k in range(nb)]
        codes = []
        for done in range(0, iters, ROUND):
            n = min(ROUND, iters - done)
            src, dst = [t.data_ptr() for t in state], [t.data_ptr() for t in out]

            def band(job: tuple[int, int, int], n=n, src=src, dst=dst) -> int:
                i, r0, r1 = job
                return lib.tvl1_band(h, w, r0, r1, n, GROUP, *[p + i * img for p in src],
                                     *[p + i * img for p in dst], ptr[3] + i * img,
                                     ptr[4] + i * one, ptr[5] + i * one, *extra)

            codes += list(_pool(threads).map(band, jobs))
            state, out = out, state
    if any(codes):
        raise MemoryError("CPU TV-L1 kernel: out of memory for its band buffers")
    return state[0], state[1], state[2]


@dataclass(frozen=True)
class Level:
    """One pyramid level of a `Plan`: its size, schedule and parameters as host floats."""

    size: tuple[int, int]  # (h, w)
    warps: int
    iters: int
    centred: tuple[float, ...]  # (2, 3) taps, flattened: x row then y row
    forward: tuple[float, ...]  # (2, 2)
    backward: tuple[float, ...]  # (2, 2)
    consts: tuple[float, float, float, float]  # lambda*theta, theta, tau/theta, eps


@dataclass(frozen=True)
class Plan:
    """What `solve` runs: levels coarsest first (the last one is the output size, which may be
    smaller than the frames), and the model's options (`TVNetConfig` fields of the same names).
    `u_is_zero`: the initial flow is zero, so the first warp is the identity and is skipped."""

    levels: tuple[Level, ...]
    grad_border: str = "zero"
    data_outside: str = "off"
    warp: str = "bicubic"
    u_is_zero: bool = False
    brightness: str = "constant"
    median: int = 0

    @cached_property
    def packed(self) -> tuple[ctypes.Array, ctypes.Array, int]:
        """(shape ints (L, 4), parameter floats (L, 18), flags) as `tvl1_solve` takes them."""
        ints = [v for lv in self.levels for v in (*lv.size, lv.warps, lv.iters)]
        floats = [float(v) for lv in self.levels for v in (*lv.centred, *lv.forward, *lv.backward, *lv.consts)]
        assert len(floats) == 18 * len(self.levels) and self.levels, "a level needs 6 + 4 + 4 taps and 4 consts"
        flags = ((self.grad_border == "replicate") | (self.data_outside == "border") << 1
                 | (self.warp == "bilinear") << 2 | bool(self.u_is_zero) << 3 | (self.brightness == "bias") << 4
                 | self.median << 8)
        return (ctypes.c_int * len(ints))(*ints), (ctypes.c_float * len(floats))(*floats), flags


def solve(i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, plan: Plan, threads: int = 1) -> torch.Tensor:
    """The whole coarse-to-fine TV-L1 solve in C (`TVNet.solve` without per-op dispatch).

    `i0`, `i1` prepared grey float32 frames `(B, 1, H, W)`; `u` the initial flow at the first
    (coarsest) level `(B, 2, h, w)`; returns the flow at the last level `(B, 2, h', w')`.
    With B >= threads, images run in parallel on `threads` pool threads, one C thread each;
    with fewer images, each image's solve gets `threads // B` C threads (row bands of its
    large levels), so batch 1 uses every core. The result does not depend on `threads`.
    Reads no tensor value.
    """
    lib = library()
    assert lib is not None, "call library() first"
    b, _, h, w = i0.shape
    first, last = plan.levels[0].size, plan.levels[-1].size
    assert tuple(u.shape) == (b, 2, *first), f"initial flow {tuple(u.shape)} != {(b, 2, *first)}"
    i0, i1, u = (t.detach().contiguous() for t in (i0, i1, u))
    out = torch.empty(b, 2, *last, dtype=torch.float32)
    shape, par, flags = plan.packed
    img, flow0, flow1 = h * w * 4, 2 * first[0] * first[1] * 4, 2 * last[0] * last[1] * 4  # bytes
    p0, p1, pu, po = i0.data_ptr(), i1.data_ptr(), u.data_ptr(), out.data_ptr()

    per_image = max(1, threads // b)  # C threads per image

    def one(i: int) -> int:
        return lib.tvl1_solve(h, w, p0 + i * img, p1 + i * img, pu + i * flow0, len(plan.levels),
                              shape, par, flags, GROUP, per_image, po + i * flow1)

    pool = max(1, min(threads, b))
    codes = list(_pool(pool).map(one, range(b))) if pool > 1 else [one(i) for i in range(b)]
    if any(codes):
        raise MemoryError("CPU TV-L1 solve: out of memory for its level buffers")
    return out
