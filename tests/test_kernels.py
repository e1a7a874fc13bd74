"""The backend selector and the kernel cache: which kernel runs, and what may be loaded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tvnet_cli import TVNet
from tvnet_cli.errors import TVNetError
from tvnet_cli.kernels import cache, cpu, resolve

CPU = torch.device("cpu")


def test_auto_picks_c_on_cpu_float32_and_torch_for_float64(monkeypatch):
    monkeypatch.delenv("TVNET_BACKEND", raising=False)
    assert resolve("auto", CPU, torch.float32) == "c"
    assert resolve("auto", CPU, torch.float64) == "torch"
    assert resolve("torch", CPU, torch.float32) == "torch"


def test_tvnet_backend_environment_variable_steers_auto(monkeypatch):
    monkeypatch.setenv("TVNET_BACKEND", "torch")
    model = TVNet.from_preset("tvnet-10")
    x = torch.rand(1, 1, 12, 16) * 255
    model.predict(x, torch.roll(x, 1, 3))
    assert model.last_backend == "torch"
    monkeypatch.setenv("TVNET_BACKEND", "bogus")
    with pytest.raises(TVNetError, match="backend must be one of"):
        model.predict(x, x)


def test_an_impossible_explicit_backend_is_an_error_naming_the_reason(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(TVNetError, match="float32 only"):
        resolve("c", CPU, torch.float64)
    with pytest.raises(TVNetError, match="runs on CUDA"):
        resolve("triton", CPU, torch.float32)
    with pytest.raises(TVNetError, match="backend must be one of"):
        resolve("fused", CPU, torch.float32)


def test_auto_without_a_compiler_warns_with_the_reason_and_runs_torch(tmp_path):
    """No C compiler and an empty cache: auto says why and runs the PyTorch step."""
    code = textwrap.dedent("""
        import warnings, torch
        from tvnet_cli import TVNet
        m = TVNet.from_preset('tvnet-10')
        x = torch.rand(1, 1, 12, 16) * 255
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            m.predict(x, torch.roll(x, 1, 3))
        print(m.last_backend, '|', ' '.join(str(i.message) for i in w))
    """)
    env = {**os.environ, "TVNET_CACHE": str(tmp_path / "cache"), "CC": str(tmp_path / "no-such-cc"),
           "TMPDIR": str(tmp_path / "tmp"), "PATH": "/nonexistent"}
    (tmp_path / "tmp").mkdir()
    env.pop("TVNET_BACKEND", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    backend, message = r.stdout.split("|", 1)
    assert backend.strip() == "torch"
    assert "C kernel could not be built" in message and "no-such-cc" in message


EVIL = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w"); if (f) { fputs("ran", f); fclose(f); }
}
int tvl1_image(void) { return 0; }
int tvl1_band(void) { return 0; }
"""


def _plant(path: Path, marker: Path) -> None:
    src = path.with_suffix(".c")
    src.write_text(EVIL % marker)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(path), str(src)], check=True)
    src.unlink()


def _load_in_child(env: dict) -> subprocess.CompletedProcess:
    code = ("import torch; from tvnet_cli.kernels import cpu; lib = cpu.library(); print(lib._name); "
            "u = torch.ones(1, 2, 3, 4); z = torch.zeros_like(u); g = torch.ones(1, 1, 3, 4); "
            "t = (torch.tensor([[-1., 1.], [-1., 1.]]),) * 2; "
            "print(float(cpu.iterate(u, z, z, u, g, g, t, (0.045, 0.3, 0.83, 1e-12), 3)[0].sum()))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_a_planted_library_in_the_shared_temp_folder_is_not_loaded(tmp_path):
    """The cache folder is unusable, so the kernel falls back to $TMPDIR/tvnet-kernels-<uid>;
    another user created that folder first (world-writable) and put a library under the
    predictable name there. It must not be loaded: the kernel is built in a private folder."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    tmp = tmp_path / "tmp"
    planted_dir = tmp / f"tvnet-kernels-{os.geteuid()}"
    planted_dir.mkdir(parents=True)
    os.chmod(planted_dir, 0o777)
    marker = tmp_path / "planted-code-ran"
    _plant(planted_dir / f"tvl1_cpu-{cpu._key()}.so", marker)
    r = _load_in_child({**os.environ, "TVNET_CACHE": str(blocker / "cache"), "TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not marker.exists(), "the planted library's code ran"
    loaded = Path(r.stdout.splitlines()[0])
    # compare folders, not strings: a private folder may be named tvnet-kernels-0abc123 when uid is 0
    assert loaded.parent != planted_dir and loaded.parent.name.startswith("tvnet-kernels-")
    assert float(r.stdout.splitlines()[1]) != 0.0  # the real kernel ran


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file owned by another user")
def test_files_or_folders_of_another_user_or_writable_by_others_are_not_loaded(tmp_path):
    marker = tmp_path / "planted-code-ran"
    cache_dir = tmp_path / "cache" / "kernels"
    cache_dir.mkdir(parents=True, mode=0o700)
    lib = cache_dir / f"tvl1_cpu-{cpu._key()}.so"
    _plant(lib, marker)
    os.chmod(lib, 0o777)  # our folder, but a file that anyone could have replaced
    assert not cache.safe_file(lib)
    r = _load_in_child({**os.environ, "TVNET_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not marker.exists()
    assert cache.safe_file(lib)  # rebuilt in place, private
    _plant(lib, marker)
    os.chown(lib, 65534, 65534)  # a file of another user ("nobody") in our folder
    assert not cache.safe_file(lib)
    os.chown(cache_dir, 65534, 65534)  # ... and a folder of another user
    assert not cache.safe_folder(cache_dir)
    r = _load_in_child({**os.environ, "TVNET_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not marker.exists()
    assert str(cache_dir) not in r.stdout.splitlines()[0]
