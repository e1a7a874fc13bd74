"""The CLI entry makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) before torch loads,
unless the user set the variable: spinning threads made extraction 3-10x slower beside busy
processes (issue 13; bench/bench_contention.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import sys, os, tvnet_cli.cli; loaded = 'torch' in sys.modules; import torch; "
         "print(os.environ.get('OMP_WAIT_POLICY'), loaded)")


def _probe(policy: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("policy, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE"), ("passive", "passive")])
def test_cli_entry_sets_passive_wait_policy_before_torch_loads(policy, expected):
    assert _probe(policy) == [expected, "False"]


def test_tvnet_command_runs_with_it():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "tvnet_cli", "presets"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "tvl1" in out.stdout and "5-5-50" in out.stdout
