"""The one registry of output formats: which exist, how each is recognised on disk, read
and counted, what reading it needs; plus the run record `OUT/tvnet.json`.

Formats (what `tvnet extract --format` writes, per video):

- `jpeg`: folder of TSN/mmaction2 `flow_x_NNNNN.jpg` / `flow_y_NNNNN.jpg` (uint8, quantised
  with a bound; reading needs that bound: `bound=`, else `OUT/tvnet.json`, else 20 px);
- `h5`: one HDF5 file, dataset `flow` `(N, 2, H, W)` (float16/float32, or uint8 with a
  `bound` attribute), attributes on the dataset and the file;
- `flo`: folder of Middlebury `flow_NNNNN.flo` `(H, W, 2)` float32;
- `npy`: folder of `flow_NNNNN.npy` `(2, H, W)` float32.

Every reader gives `(2, H, W)` float32 fields in pixels (u right, v down). Metadata (fps,
bound, source and sizes) comes from `OUT/tvnet.json` when present (found in the folders
above the path), else from HDF5 attributes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from ..errors import TVNetError
from .flowio import read_flo
from .quantize import DEFAULT_BOUND, dequantize

RECORD = "tvnet.json"
_FLOW_X = re.compile(r"^flow_x_(\d+)\.jpg$")
_FLOW_N = {"flo": re.compile(r"^flow_(\d+)\.flo$"), "npy": re.compile(r"^flow_(\d+)\.npy$")}

Field = tuple[str, np.ndarray]  # (name, flow (2, H, W) float32)


@dataclass(frozen=True)
class FlowInfo:
    """What is known about a flow output besides the fields themselves."""

    format: str
    fields: int
    bound: float | None = None  # quantisation bound used to read (jpeg, h5 uint8)
    fps: float | None = None  # the source video's frame rate; None when unknown
    source: str | None = None  # the source video
    source_size: tuple[int, int] | None = None  # (H, W) of the source video (upright)
    output_size: tuple[int, int] | None = None  # (H, W) of the frames flow was computed on
    step: int | None = None

    @property
    def resized(self) -> bool | None:
        if self.source_size is None or self.output_size is None:
            return None
        return self.source_size != self.output_size


class FlowData(NamedTuple):
    """`read_flow`'s answer: `flow` `(N, 2, H, W)` float32, field names, metadata."""

    flow: np.ndarray
    names: list[str]
    info: FlowInfo


@dataclass(frozen=True)
class Format:
    """One output format: how to recognise, count and read it, and what reading needs."""

    name: str
    kind: str  # "dir" (one file per field in a folder) or "file" (one file per video)
    needs: str
    matches: Callable[[Path], bool]  # a file or folder of this format
    count: Callable[[Path], int]  # fields present
    fields: Callable[[Path, float], Iterator[Field]]  # path, bound -> fields in order
    layout: str = ""  # what extract writes per video, relative to OUT


# -- per-format readers ---------------------------------------------------------------------
def _numbered(folder: Path, pattern: re.Pattern) -> list[Path]:
    files = [p for p in folder.iterdir() if pattern.match(p.name)]
    return sorted(files, key=lambda p: int(pattern.match(p.name)[1]))


def _jpeg_pair(fx: Path, bound: float) -> Field:
    from PIL import Image

    idx = _FLOW_X.match(fx.name)[1]
    fy = fx.with_name(f"flow_y_{idx}.jpg")
    if not fy.is_file():
        raise TVNetError(f"{fy}: missing (its flow_x file exists)")
    try:
        qx, qy = (np.asarray(Image.open(p).convert("L")) for p in (fx, fy))
    except OSError as e:
        raise TVNetError(f"{fx.parent}: cannot read flow JPEG ({e})") from None
    if qx.shape != qy.shape:
        raise TVNetError(f"{fy}: size differs from {fx.name}")
    return f"flow_{idx}", np.stack([dequantize(qx, bound), dequantize(qy, bound)])


def _jpeg_fields(path: Path, bound: float) -> Iterator[Field]:
    xs = [path] if path.is_file() else _numbered(path, _FLOW_X)
    for fx in xs:
        yield _jpeg_pair(fx, bound)


def _flo_fields(path: Path, bound: float) -> Iterator[Field]:
    for f in [path] if path.is_file() else _numbered(path, _FLOW_N["flo"]):
        yield f.stem, np.ascontiguousarray(np.moveaxis(read_flo(f), -1, 0))


def _npy_fields(path: Path, bound: float) -> Iterator[Field]:
    for f in [path] if path.is_file() else _numbered(path, _FLOW_N["npy"]):
        try:
            a = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise TVNetError(f"{f}: not a .npy array ({str(e).splitlines()[0]})") from None
        if a.ndim != 3 or a.shape[0] != 2:
            raise TVNetError(f"{f}: a flow .npy must be (2, H, W), got {a.shape}")
        yield f.stem, a.astype(np.float32, copy=False)


def _h5_open(path: Path):
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise TVNetError(f"{path}: cannot open HDF5 file ({str(e).splitlines()[0]})") from None
    ds = f.get("flow")
    if not isinstance(ds, h5py.Dataset):
        f.close()
        what = " (it is a group)" if isinstance(ds, h5py.Group) else ""
        raise TVNetError(f"{path}: no dataset 'flow' in the HDF5 file{what}")
    if ds.ndim != 4 or ds.shape[1] != 2:
        f.close()
        raise TVNetError(f"{path}: dataset 'flow' must be (N, 2, H, W), got {ds.shape}")
    return f, ds


def _h5_fields(path: Path, bound: float) -> Iterator[Field]:
    f, ds = _h5_open(path)
    with f:
        quantised = ds.dtype == np.uint8
        for i in range(ds.shape[0]):
            x = ds[i]  # (2, H, W)
            yield f"{path.stem}_{i + 1:05d}", dequantize(x, bound) if quantised else x.astype(np.float32)


def _h5_count(path: Path) -> int:
    f, ds = _h5_open(path)
    with f:
        return int(ds.shape[0])


def h5_attrs(path: Path) -> dict[str, Any]:
    """File attributes overlaid with the `flow` dataset's (JSON strings decoded)."""
    f, ds = _h5_open(path)
    with f:
        out = {}
        for k, v in [*f.attrs.items(), *ds.attrs.items()]:
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v
        return out


def _is_dir_of(pattern: re.Pattern) -> Callable[[Path], bool]:
    return lambda p: p.is_dir() and any(pattern.match(e.name) for e in p.iterdir())


def _is_file(pattern_or_suffixes) -> Callable[[Path], bool]:
    if isinstance(pattern_or_suffixes, re.Pattern):
        return lambda p: p.is_file() and bool(pattern_or_suffixes.match(p.name))
    return lambda p: p.is_file() and p.suffix.lower() in pattern_or_suffixes


def _dir_count(pattern: re.Pattern) -> Callable[[Path], int]:
    return lambda p: 1 if p.is_file() else sum(bool(pattern.match(e.name)) for e in p.iterdir())


REGISTRY: dict[str, Format] = {
    "jpeg": Format("jpeg", "dir", "the quantisation bound (tvnet.json, or bound=; default 20 px); Pillow",
                   lambda p: _is_dir_of(_FLOW_X)(p) or _is_file(_FLOW_X)(p), _dir_count(_FLOW_X), _jpeg_fields,
                   "<video>/flow_x_*.jpg, flow_y_*.jpg (+ img_*.jpg)"),
    "h5": Format("h5", "file", "h5py", _is_file((".h5", ".hdf5")), _h5_count, _h5_fields, "<video>.h5"),
    "flo": Format("flo", "dir", "nothing", lambda p: _is_dir_of(_FLOW_N["flo"])(p) or _is_file((".flo",))(p),
                  _dir_count(_FLOW_N["flo"]), _flo_fields, "<video>/flow_*.flo"),
    "npy": Format("npy", "dir", "nothing", lambda p: _is_dir_of(_FLOW_N["npy"])(p) or _is_file((".npy",))(p),
                  _dir_count(_FLOW_N["npy"]), _npy_fields, "<video>/flow_*.npy"),
}
FORMATS = tuple(REGISTRY)  # the formats `tvnet extract` writes
DIR_FORMATS = tuple(n for n, f in REGISTRY.items() if f.kind == "dir")
READ_ORDER = ("h5", "npy", "flo", "jpeg")  # a folder holding several: exact floats first


def detect(path: str | Path, fmt: str | None = None) -> Format:
    """The format of `path` (a file or a per-video folder); `fmt` picks one of several."""
    path = Path(path)
    if not path.exists():
        raise TVNetError(f"{path}: not found")
    if fmt is not None:
        if fmt not in REGISTRY:
            raise TVNetError(f"unknown flow format {fmt!r}; formats: {', '.join(FORMATS)}")
        if not REGISTRY[fmt].matches(path):
            raise TVNetError(f"{path}: no {fmt} flow here")
        return REGISTRY[fmt]
    for name in READ_ORDER:
        if REGISTRY[name].matches(path):
            return REGISTRY[name]
    raise TVNetError(f"{path}: not a flow output (an .h5/.flo/.npy file, flow_x_NNNNN.jpg, or a folder of "
                     f"flow_x_NNNNN.jpg/flow_y_NNNNN.jpg, flow_NNNNN.flo or flow_NNNNN.npy)")


# -- the run record OUT/tvnet.json ------------------------------------------------------------
def find_record(path: str | Path, levels: int = 8) -> tuple[Path, dict] | None:
    """(folder, record) of the nearest `tvnet.json` at or above `path`; None when there is none."""
    p = Path(path).resolve()
    for d in [p if p.is_dir() else p.parent, *(p if p.is_dir() else p.parent).parents][:levels]:
        rec = d / RECORD
        if rec.is_file():
            try:
                return d, json.loads(rec.read_text())
            except (OSError, ValueError):
                return None
    return None


def _video_key(path: Path, root: Path) -> str:
    """The record's key of the video whose output is `path`: "Class/v_x"."""
    p = path.resolve()
    if p.is_file() and p.suffix.lower() not in (".h5", ".hdf5"):
        p = p.parent  # one field file: its video folder
    rel = PurePosixPath(p.relative_to(root).as_posix())
    return str(rel.with_suffix("")) if rel.suffix.lower() in (".h5", ".hdf5") else str(rel)


def _size(v: Any) -> tuple[int, int] | None:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) and len(v) == 2 else None


def info_of(path: str | Path, fmt: str | None = None, bound: float | None = None) -> FlowInfo:
    """Metadata of a flow output: tvnet.json's entry for its video, else HDF5 attributes."""
    path = Path(path)
    f = detect(path, fmt)
    meta: dict[str, Any] = {}
    if f.name == "h5":
        meta.update(h5_attrs(path))
    found = find_record(path)
    if found is not None:
        root, rec = found
        try:
            video = rec.get("videos", {}).get(_video_key(path, root), {})
        except ValueError:
            video = {}
        meta.update({k: rec[k] for k in ("bound", "step") if k in rec})
        meta.update(video)
    b = bound if bound is not None else meta.get("bound")
    quantised = f.name == "jpeg" or meta.get("dtype") == "uint8"
    fps = meta.get("fps")
    return FlowInfo(
        format=f.name, fields=f.count(path),
        bound=(float(b) if b is not None else DEFAULT_BOUND) if quantised else None,
        fps=float(fps) if fps else None, source=meta.get("source"),
        source_size=_size(meta.get("source_size")), output_size=_size(meta.get("output_size")),
        step=int(meta["step"]) if "step" in meta else None)


def iter_flow(path: str | Path, fmt: str | None = None, bound: float | None = None) -> tuple[FlowInfo, Iterator[Field]]:
    """(metadata, fields streamed one at a time) of any flow output; for long videos."""
    info = info_of(path, fmt, bound)
    return info, REGISTRY[info.format].fields(Path(path), info.bound if info.bound is not None else DEFAULT_BOUND)


def read_flow(path: str | Path, bound: float | None = None, fmt: str | None = None) -> FlowData:
    """Every field of a flow output -> `FlowData(flow (N, 2, H, W) float32, names, info)`.

    `path`: a jpeg/flo/npy folder, an .h5 file, one .flo/.npy file or one flow_x_NNNNN.jpg
    (with its flow_y partner). JPEG codes are de-quantised with `bound`, else the bound in
    `tvnet.json` or the HDF5 attributes, else 20 px.
    """
    info, fields = iter_flow(path, fmt, bound)
    names, arrays = [], []
    for name, a in fields:
        names.append(name)
        arrays.append(a)
    if not arrays:
        raise TVNetError(f"{path}: no flow fields")
    return FlowData(np.stack(arrays), names, info)


def write_run_record(config, results: Iterable) -> list[Path]:
    """Add this run to `<out>/tvnet.json`: model, bound, step, start index, formats, size
    setting, and per finished video its source, fps, source and output sizes (H, W).

    `config`: an `ExtractConfig`; `results`: its `VideoResult`s ("done" ones are recorded;
    "skipped" ones keep an earlier run's entry, or get one when that run was killed first). Several processes may call it at once (the
    folder is locked). Returns [the record], or [] when no video finished and none exists.
    """
    from .. import __version__
    from .video import output_size, probe

    c = config
    run = {"model": str(c.weights) if c.weights else c.preset,
           "overrides": {k: getattr(c, k) for k in ("scales", "warps", "iters") if getattr(c, k) is not None},
           "bound": float(c.bound), "step": int(c.step), "start_index": int(c.start_index),
           "formats": list(c.formats), "h5_dtype": c.h5_dtype,
           "size": {k: getattr(c, k) for k in ("width", "height", "short_side")}}
    out = Path(c.out)
    path = out / RECORD
    try:
        known = json.loads(path.read_text()).get("videos", {}) if path.is_file() else {}
    except ValueError:
        known = {}
    videos = {}
    for r in results:
        if r.status not in ("done", "skipped") or (r.status == "skipped" and str(r.rel) in known):
            continue
        entry: dict[str, Any] = {"source": str(r.src), "frames": r.frames, "flows": r.flows,
                                 "bound": run["bound"], "step": run["step"], "model": run["model"]}
        try:
            vi = probe(r.src, autorotate=c.autorotate)
            entry.update(fps=vi.fps or None, source_size=[vi.height, vi.width],
                         output_size=list(output_size(vi.width, vi.height, c.width, c.height, c.short_side,
                                                      notice=False)))
        except TVNetError:
            pass
        videos[str(r.rel)] = entry
    if not videos and not path.is_file():
        return []
    fd = os.open(out, os.O_RDONLY)  # lock the folder itself: no lock file left behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            old = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            old = {}
        rec = {"tvnet": __version__, **run, "videos": {**old.get("videos", {}), **videos}}
        tmp = out / f".{RECORD}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(rec, indent=1, sort_keys=True))
        tmp.replace(path)
    finally:
        os.close(fd)  # releases the lock
    return [path]
