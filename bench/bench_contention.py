"""`tvnet extract` on a busy machine: wall time with and without two busy-loop processes
beside it, at the default threads and at --threads 1, in one run (issue 13, must-show 4).

    python bench/bench_contention.py [--repeats 3] [--preset tvnet-50] [--batch 8] [--json out.json]

Each repeat runs every (load, threads) case once, round robin; the table gives the median
wall seconds of the whole command (process start included) and flows/s. The busy loops are
`python -c "while True: pass"`, started before and stopped (by pid) after each busy case.
"before" runs the same CLI with OMP_WAIT_POLICY removed again before torch loads: libgomp's
default (idle threads spin a while before sleeping), what `tvnet extract` did before it set
OMP_WAIT_POLICY=PASSIVE itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "examples" / "test.avi"  # 164 frames, 320x240: 163 flow fields
CASES = [("default threads", [], False), ("--threads 1", ["--threads", "1"], False),
         ("default threads, before (libgomp's default wait policy)", [], True)]
BEFORE = ("import os, sys, tvnet_cli.cli as c; os.environ.pop('OMP_WAIT_POLICY', None); "
          "sys.argv[0] = 'tvnet'; c.main()")


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def extract(args: list[str], before: bool, preset: str, batch: int) -> float:
    """Wall seconds of one `tvnet extract` of VIDEO into a fresh folder."""
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("OMP_WAIT_POLICY", None)  # the CLI's own default
        entry = ["-c", BEFORE] if before else ["-m", "tvnet_cli"]
        t = time.perf_counter()
        subprocess.run([sys.executable, *entry, "extract", str(VIDEO), "-o", out, "--preset", preset,
                        "--batch", str(batch), "--device", "cpu", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="tvnet-50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes in the busy cases")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    load0 = os.getloadavg()
    for r in range(args.repeats):
        for load in ("quiet", f"{args.busy} busy loops"):
            procs = busy(args.busy) if load != "quiet" else []
            try:
                time.sleep(0.5 if procs else 0)
                for name, extra, before in CASES:
                    s = extract(extra, before, args.preset, args.batch)
                    times.setdefault((load, name), []).append(s)
                    print(f"repeat {r} | {load} | {name} | {s:.2f} s", file=sys.stderr, flush=True)
            finally:
                stop(procs)
    pairs = 163
    print(f"\n`tvnet extract` of examples/test.avi ({pairs} flow fields, 320x240), preset {args.preset}, "
          f"--batch {args.batch}, CPU; median of {args.repeats}; {os.cpu_count()} cores, load average "
          f"{load0[0]:.1f} at the start\n")
    print("| load | threads | median s | flows/s | all runs (s) |")
    print("|---|---|---:|---:|---|")
    rows = []
    for (load, name), ts in times.items():
        med = statistics.median(ts)
        rows.append({"load": load, "threads": name, "median_s": med, "runs_s": ts, "flows_per_s": pairs / med})
        print(f"| {load} | {name} | {med:.2f} | {pairs / med:.0f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "batch": args.batch, "load_start": load0,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
