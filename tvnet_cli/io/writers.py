"""Per-video flow outputs, written under a temporary name and renamed when complete.

Two kinds of output, each the unit of resume (it exists under its final name only when
every file of the video is in it):

- `DirOutput`: a folder `<out>/<rel>/` of per-field files - TSN/mmaction2 JPEGs
  (`flow_x_00001.jpg`, `flow_y_00001.jpg`, `img_00001.jpg`), Middlebury `.flo`
  (`flow_00001.flo`, (H, W, 2)) and/or `.npy` (`flow_00001.npy`, (2, H, W) float32).
  Written into `<out>/<parent>/.<stem>.partial-<pid>-<random>/`, renamed at the end.
- `H5Output`: one HDF5 file `<out>/<rel>.h5`, dataset `flow` (N-1, 2, H, W), one chunk
  per field. Written as `.<stem>.h5.partial-<pid>-<random>`, renamed at the end.

Temporary names are unique per output object (pid + random), so no run ever opens,
deletes or renames another's; those left by a killed run are removed by the next run
(`clean_stale`, under the output lock). What tvnet wrote is recognisable (`output_state`):
a folder holding only field files named as above (at least one flow field), an HDF5 file
with a 4-d `flow` dataset. Anything else under an output name is never deleted or
overwritten; only field files are ever removed from a folder (`remove_fields`).

Writes may come from several threads; each field is one call. HDF5 calls are serialised
with one process-wide lock (h5py must not be used from two threads at once).

Failing writes (full disk, read-only file system, file size limit): every write raises an
`OSError` whose filename is the file written and whose strerror names the cause, e.g.
"No space left on device [ENOSPC]"; the caller fails that one video and calls `abort`,
which never raises. HDF5 is opened without a chunk cache, so a field that cannot be
written fails in its own `write_flow` call instead of in a later flush: HDF5 silently
drops errors of flushes made when h5py releases an object, and a file whose cached chunks
cannot be flushed crashed the process (SIGSEGV) at close or exit. After its first error an
`H5Output` is closed once, quietly, and never touched again.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import stat
import threading
from pathlib import Path

import numpy as np

from ..errors import TVNetError
from .flowio import flo_bytes
from .formats import DIR_FORMATS, REGISTRY  # the one list of formats (re-exported here)
H5_DTYPES = ("float16", "float32", "uint8")
# HDF5 filters: lzf is the default (examples/test.avi, 163 fields 320x240: float16 50 -> 37 MB, uint8
# 25 -> 7.1 MB at 1.8 / 0.7 ms a field); gzip (level 4, shuffle) is smallest (30 MB / 3.4 MB) at
# 6.2 / 1.5 ms a field, and HDF5 writes are serialised by one lock.
H5_COMPRESSIONS = {"lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
                   "none": {}}
_H5_LOCK = threading.Lock()


FIELD_NAME = re.compile(r"(?:(?:flow_[xy]|img)_\d{5,}\.jpg|flow_\d{5,}\.(?:flo|npy))")
FLOW_NAME = re.compile(r"(?:flow_x_\d{5,}\.jpg|flow_\d{5,}\.(?:flo|npy))")
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?:partial|old)(?:-\d+-[0-9a-f]{8})?")  # (legacy: no suffix)


def temp_path(final: Path, kind: str = "partial") -> Path:
    """A hidden name beside `final` that no other output object, run or process uses."""
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def partial_dir(final: Path) -> Path:
    return temp_path(final)


def partial_h5(final: Path) -> Path:
    return temp_path(final)


def remove_fields(folder: Path) -> bool:
    """Remove the field files (regular files named like tvnet's) of `folder`, then the folder
    if that left it empty; never follows a link, never removes anything else. True when the
    folder is gone."""
    try:
        with os.scandir(folder) as it:
            for e in it:
                if FIELD_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                    os.unlink(e.path)
        os.rmdir(folder)
        return True
    except OSError:
        return False


def _foreign_names(folder: Path, any_flow: bool) -> tuple[list[str], int]:
    """(names in `folder` that are not regular tvnet field files, number of flow files);
    `any_flow`: stop at the first flow file (a rerun only needs to know it is finished)."""
    other, flows = [], 0
    with os.scandir(folder) as it:
        for e in it:
            if FIELD_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                flows += bool(FLOW_NAME.fullmatch(e.name))
                if flows and any_flow:
                    break
            else:
                other.append(e.name)
    return sorted(other), flows


def output_state(path: Path, kind: str, replace: bool = False) -> str:
    """What lies under the output name `path` (`kind` "dir" or "h5"): "absent", "ours"
    (a complete tvnet output) or "stale" (tvnet's but unfinished, or an empty folder: may
    be replaced). Raises `TVNetError` naming what is there when it is not tvnet's (a link,
    a file of another kind, a folder with other files, a foreign HDF5 file): such a path is
    never touched. `replace`: the caller will replace it, so a tvnet folder that also holds
    other files is refused too (they would be lost)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    except NotADirectoryError:
        raise TVNetError(f"{_file_on_path(path)}: a file where an output folder goes; "
                         f"move it away") from None
    except OSError as e:
        raise TVNetError(f"{path}: cannot check the output ({e.strerror})") from None
    what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else None
    if kind == "dir":
        if what is None and not stat.S_ISDIR(st.st_mode):
            what = "a file, not an output folder"
        if what is None:
            try:
                other, flows = _foreign_names(path, any_flow=not replace)
            except OSError as e:
                raise TVNetError(f"{path}: cannot read the output folder ({e.strerror})") from None
            if not other:
                return "ours" if flows else "stale"
            if flows and not replace:
                return "ours"  # a finished folder someone added notes to: complete
            shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
            what = f"a folder holding files tvnet did not write ({shown})"
    elif what is None and not stat.S_ISREG(st.st_mode):
        what = "not a regular file"
    elif what is None:
        return _h5_state(path)
    raise TVNetError(f"{path}: {what}; tvnet writes nothing there, move it away or choose another --out")


def _file_on_path(path: Path) -> Path:
    """The first ancestor of `path` that exists and is not a folder."""
    for p in reversed(path.parents):
        if p.exists() and not p.is_dir():
            return p
    return path


def _h5_state(path: Path) -> str:
    import h5py

    try:
        with _H5_LOCK, h5py.File(path, "r") as f:
            flow = f.get("flow")
            if isinstance(flow, h5py.Dataset) and flow.ndim == 4:
                return "ours" if "frames" in f.attrs and "flows" in f.attrs else "stale"
    except (OSError, RuntimeError, ValueError):
        pass
    raise TVNetError(f"{path}: a file that is not a tvnet HDF5 output; tvnet writes nothing there, "
                     f"move it away or choose another --out")


def clean_stale(folder: Path, names: set[str]) -> None:
    """Remove the temporary outputs (`.<name>.partial-*`, `.<name>.old-*`, legacy
    `.<name>.partial`) of the output names `names` in `folder`, left by killed or interrupted
    runs. Only under the output lock (no other run is writing them). Folders lose only their
    field files (see `remove_fields`); nothing else is touched."""
    try:
        with os.scandir(folder) as it:
            stale = [e for e in it if (m := TEMP_NAME.fullmatch(e.name)) and m["name"] in names]
    except OSError:
        return
    for e in stale:
        try:
            if e.is_dir(follow_symlinks=False):
                remove_fields(Path(e.path))
            elif e.is_file(follow_symlinks=False):
                os.unlink(e.path)
        except OSError:
            pass


def os_error(e: BaseException, path: Path | str) -> OSError:
    """`e` (an OSError, or an h5py error that carries an errno in its text) -> an OSError
    naming `path` whose strerror is short and names the cause: "File too large [EFBIG]"."""
    code = getattr(e, "errno", None)
    if not code:
        m = re.search(r"errno = (\d+)", str(e))
        code = int(m[1]) if m else None
    if code:
        return OSError(code, f"{os.strerror(code)} [{errno.errorcode.get(code, code)}]", str(path))
    return OSError(errno.EIO, str(e).splitlines()[0] if str(e) else type(e).__name__, str(path))


def _write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write a whole file; any failure (open, write, close) raises `os_error` naming `path`."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise os_error(e, path) from None


def _jpeg(array: np.ndarray, quality: int) -> memoryview:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getbuffer()


def _npy(array: np.ndarray) -> memoryview:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getbuffer()


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move `tmp` to `final`. An existing `final` (overwrite) must be tvnet's alone: it is
    moved aside and loses its field files only once the new one is in place."""
    old = None
    try:
        if output_state(final, "dir", replace=True) != "absent":
            old = temp_path(final, "old")
            final.rename(old)
        tmp.rename(final)
    except OSError as e:
        if old is not None and old.exists() and not final.exists():
            try:
                old.rename(final)  # the previous complete output comes back
            except OSError:
                pass
        raise os_error(e, e.filename or final) from None
    if old is not None:
        remove_fields(old)


class DirOutput:
    """TSN-style folder of per-field files for one video."""

    def __init__(self, final: Path, formats: tuple[str, ...], *, frames: bool, start_index: int,
                 jpeg_quality: int) -> None:
        self.final = final
        self.formats = tuple(f for f in formats if f in DIR_FORMATS)
        self.frames = frames and "jpeg" in self.formats
        self.start = start_index
        self.quality = jpeg_quality
        self.tmp = partial_dir(final)
        try:
            self.tmp.mkdir(parents=True)
        except OSError as e:
            raise os_error(e, e.filename or self.tmp) from None

    @property
    def wants(self) -> set[str]:
        """Which flow representations `write_flow` needs: "q" (uint8 codes), "f32"."""
        w = set()
        if "jpeg" in self.formats:
            w.add("q")
        if "flo" in self.formats or "npy" in self.formats:
            w.add("f32")
        return w

    def write_frame(self, index: int, rgb: np.ndarray) -> None:
        """RGB frame `(H, W, 3)` uint8 -> `img_%05d.jpg` (frame `index`, 0-based)."""
        if not self.frames:
            return
        _write_bytes(self.tmp / f"img_{index + self.start:05d}.jpg", _jpeg(rgb, self.quality))

    def write_flow(self, index: int, rep: dict[str, np.ndarray]) -> None:
        """Flow field `index` (0-based): `rep["q"]` `(2, H, W)` uint8, `rep["f32"]` `(2, H, W)`."""
        n = index + self.start
        if "jpeg" in self.formats:
            q = rep["q"]
            _write_bytes(self.tmp / f"flow_x_{n:05d}.jpg", _jpeg(q[0], self.quality))
            _write_bytes(self.tmp / f"flow_y_{n:05d}.jpg", _jpeg(q[1], self.quality))
        if "flo" in self.formats:
            _write_bytes(self.tmp / f"flow_{n:05d}.flo", flo_bytes(np.moveaxis(rep["f32"], 0, -1)))
        if "npy" in self.formats:
            _write_bytes(self.tmp / f"flow_{n:05d}.npy", _npy(np.ascontiguousarray(rep["f32"], dtype=np.float32)))

    def finish(self, meta: dict) -> None:
        _replace_dir(self.tmp, self.final)

    def abort(self) -> None:
        remove_fields(self.tmp)


class H5Output:
    """One HDF5 file per video: dataset `flow` `(N-1, 2, H, W)`, chunked per field."""

    def __init__(self, final: Path, dtype: str, bound: float, compression: str = "lzf") -> None:
        if dtype not in H5_DTYPES:
            raise TVNetError(f"HDF5 dtype must be one of {', '.join(H5_DTYPES)}, not {dtype!r}")
        if compression not in H5_COMPRESSIONS:
            raise TVNetError(f"HDF5 compression must be one of {', '.join(H5_COMPRESSIONS)}, not {compression!r}")
        self.compression = compression
        self.final = final
        self.dtype = dtype
        self.bound = bound
        self.tmp = partial_h5(final)
        try:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, e.filename or self.tmp) from None
        self._file = None
        self._ds = None
        self._error: OSError | None = None  # the first failure; the file is closed then
        self._n = 0

    @property
    def wants(self) -> set[str]:
        return {"uint8": {"q"}, "float16": {"f16"}, "float32": {"f32"}}[self.dtype]

    def write_frame(self, index: int, rgb: np.ndarray) -> None:
        return None

    def _failed(self, e: BaseException) -> OSError:
        """Record the first failure and close the file once, quietly (under _H5_LOCK)."""
        if self._error is None:
            self._error = os_error(e, self.tmp)
        self._ds = None
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except Exception:  # noqa: BLE001 - the write error is what gets reported
                pass
        return self._error

    def write_flow(self, index: int, rep: dict[str, np.ndarray]) -> None:
        import h5py

        arr = rep[{"uint8": "q", "float16": "f16", "float32": "f32"}[self.dtype]]  # (2, H, W)
        with _H5_LOCK:
            if self._error is not None:
                raise self._error
            try:
                if self._file is None:
                    self._file = h5py.File(self.tmp, "w", rdcc_nbytes=0)  # no chunk cache: see module doc
                    self._ds = self._file.create_dataset(
                        "flow", shape=(0, *arr.shape), maxshape=(None, *arr.shape),
                        dtype=self.dtype, chunks=(1, *arr.shape), **H5_COMPRESSIONS[self.compression])
                if index >= self._ds.shape[0]:
                    self._ds.resize(index + 1, axis=0)
                self._ds[index] = arr
            except (OSError, RuntimeError, ValueError) as e:
                raise self._failed(e) from None
            self._n = max(self._n, index + 1)

    def finish(self, meta: dict) -> None:
        with _H5_LOCK:
            if self._error is not None:
                raise self._error
            if self._file is None:
                raise TVNetError(f"{self.final}: no flow fields were written")
            try:
                meta = {**meta, "dtype": self.dtype, "compression": self.compression,
                        "output_size": list(self._ds.shape[2:]),  # (H, W) the flow is in pixels of
                        "layout": "flow[i] = (u, v) in pixels from frame i to frame i+step; u +x right, v +y down"}
                if "source_size" in meta:
                    meta["resized"] = list(meta["source_size"]) != meta["output_size"]
                if self.dtype == "uint8":
                    meta.update(bound=self.bound,
                                quantization="q = clip(round(255 * (v + bound) / (2 * bound)), 0, 255)")
                for attrs in (self._file.attrs, self._ds.attrs):  # the dataset travels alone too
                    for k, v in meta.items():
                        attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) or v is None else v
                self._ds = None
                f, self._file = self._file, None
                f.close()
            except (OSError, RuntimeError, ValueError) as e:
                raise self._failed(e) from None
        try:
            output_state(self.final, "h5", replace=True)  # never over a file that is not tvnet's
            self.tmp.replace(self.final)
        except OSError as e:
            raise os_error(e, self.final) from None

    def abort(self) -> None:
        """Close (quietly) and remove the temporary file; never raises."""
        with _H5_LOCK:
            if self._file is not None:
                self._failed(RuntimeError("aborted"))
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError:
            pass


def count_outputs(final_dir: Path) -> tuple[int, int]:
    """(flow fields, RGB frames) in a finished folder (for the annotation list on resume):
    fields counted by the first folder format of the registry present in it."""
    frames = sum(e.name.startswith("img_") for e in final_dir.iterdir())
    for fmt in DIR_FORMATS:
        flows = REGISTRY[fmt].count(final_dir)
        if flows:
            return flows, frames
    return 0, frames


def h5_counts(path: Path) -> tuple[int, int]:
    """(flow fields, decoded frames) recorded in a finished HDF5 file, read as the registry's
    `h5` format reads it; `TVNetError` when it cannot be read as one."""
    from .formats import h5_attrs

    try:
        with _H5_LOCK:
            fields = REGISTRY["h5"].count(path)
            return fields, int(h5_attrs(path).get("frames", fields + 1))
    except TVNetError as e:
        raise TVNetError(f"{e}; remove it or use --overwrite") from None
