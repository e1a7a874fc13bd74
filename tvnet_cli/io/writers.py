"""Per-video flow outputs, written under a temporary name and renamed when complete.

Two kinds of output, each the unit of resume (it exists under its final name only when
every file of the video is in it):

- `DirOutput`: a folder `<out>/<rel>/` of per-field files - TSN/mmaction2 JPEGs
  (`flow_x_00001.jpg`, `flow_y_00001.jpg`, `img_00001.jpg`), Middlebury `.flo`
  (`flow_00001.flo`, (H, W, 2)) and/or `.npy` (`flow_00001.npy`, (2, H, W) float32).
  Written into `<out>/<parent>/.<stem>.partial/`, renamed at the end.
- `H5Output`: one HDF5 file `<out>/<rel>.h5`, dataset `flow` (N-1, 2, H, W), one chunk
  per field. Written as `.<stem>.h5.partial`, renamed at the end.

Writes may come from several threads; each field is one call. HDF5 calls are serialised
with one process-wide lock (h5py must not be used from two threads at once).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np

from ..errors import TVNetError
from .flowio import write_flo

DIR_FORMATS = ("jpeg", "flo", "npy")
H5_DTYPES = ("float16", "float32", "uint8")
_H5_LOCK = threading.Lock()


def partial_dir(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


def partial_h5(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move `tmp` to `final`; an existing `final` (overwrite) is removed only afterwards."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old"
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        if self.tmp.exists():  # left by an interrupted run
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

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
        from PIL import Image

        Image.fromarray(rgb).save(self.tmp / f"img_{index + self.start:05d}.jpg", quality=self.quality)

    def write_flow(self, index: int, rep: dict[str, np.ndarray]) -> None:
        """Flow field `index` (0-based): `rep["q"]` `(2, H, W)` uint8, `rep["f32"]` `(2, H, W)`."""
        n = index + self.start
        if "jpeg" in self.formats:
            from PIL import Image

            q = rep["q"]
            Image.fromarray(q[0]).save(self.tmp / f"flow_x_{n:05d}.jpg", quality=self.quality)
            Image.fromarray(q[1]).save(self.tmp / f"flow_y_{n:05d}.jpg", quality=self.quality)
        if "flo" in self.formats:
            write_flo(self.tmp / f"flow_{n:05d}.flo", np.moveaxis(rep["f32"], 0, -1))
        if "npy" in self.formats:
            np.save(self.tmp / f"flow_{n:05d}.npy", np.ascontiguousarray(rep["f32"], dtype=np.float32))

    def finish(self, meta: dict) -> None:
        _replace_dir(self.tmp, self.final)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class H5Output:
    """One HDF5 file per video: dataset `flow` `(N-1, 2, H, W)`, chunked per field."""

    def __init__(self, final: Path, dtype: str, bound: float) -> None:
        if dtype not in H5_DTYPES:
            raise TVNetError(f"HDF5 dtype must be one of {', '.join(H5_DTYPES)}, not {dtype!r}")
        self.final = final
        self.dtype = dtype
        self.bound = bound
        self.tmp = partial_h5(final)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.unlink(missing_ok=True)
        self._file = None
        self._n = 0

    @property
    def wants(self) -> set[str]:
        return {"uint8": {"q"}, "float16": {"f16"}, "float32": {"f32"}}[self.dtype]

    def write_frame(self, index: int, rgb: np.ndarray) -> None:
        return None

    def write_flow(self, index: int, rep: dict[str, np.ndarray]) -> None:
        import h5py

        arr = rep[{"uint8": "q", "float16": "f16", "float32": "f32"}[self.dtype]]  # (2, H, W)
        with _H5_LOCK:
            if self._file is None:
                self._file = h5py.File(self.tmp, "w")
                self._file.create_dataset("flow", shape=(0, *arr.shape), maxshape=(None, *arr.shape),
                                          dtype=self.dtype, chunks=(1, *arr.shape))
            ds = self._file["flow"]
            if index >= ds.shape[0]:
                ds.resize(index + 1, axis=0)
            ds[index] = arr
            self._n = max(self._n, index + 1)

    def finish(self, meta: dict) -> None:
        with _H5_LOCK:
            if self._file is None:
                raise TVNetError(f"{self.final}: no flow fields were written")
            attrs = self._file.attrs
            for k, v in meta.items():
                attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v
            attrs["dtype"] = self.dtype
            attrs["layout"] = "flow[i] = (u, v) in pixels from frame i to frame i+step; u +x right, v +y down"
            if self.dtype == "uint8":
                attrs["bound"] = self.bound
                attrs["quantization"] = "q = clip(round(255 * (v + bound) / (2 * bound)), 0, 255)"
            self._file.close()
            self._file = None
        self.tmp.replace(self.final)

    def abort(self) -> None:
        with _H5_LOCK:
            if self._file is not None:
                try:
                    self._file.close()
                except (OSError, RuntimeError):
                    pass
                self._file = None
        self.tmp.unlink(missing_ok=True)


def count_outputs(final_dir: Path) -> tuple[int, int]:
    """(flow fields, RGB frames) in a finished folder (for the annotation list on resume)."""
    names = [e.name for e in final_dir.iterdir()]
    frames = sum(n.startswith("img_") for n in names)
    for prefix, suffix in (("flow_x_", ".jpg"), ("flow_", ".flo"), ("flow_", ".npy")):
        flows = sum(n.startswith(prefix) and n.endswith(suffix) for n in names)
        if flows:
            return flows, frames
    return 0, frames


def h5_counts(path: Path) -> tuple[int, int]:
    """(flow fields, decoded frames) recorded in a finished HDF5 file."""
    import h5py

    with _H5_LOCK, h5py.File(path, "r") as f:
        return int(f["flow"].shape[0]), int(f.attrs.get("frames", f["flow"].shape[0] + 1))
