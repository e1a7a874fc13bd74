#!/usr/bin/env bash
# Issue 11's GPU measurements in one call of the device tool, on a freshly lent machine that has
# only this repository (its own python3, torch, triton; no network, no PyAV, no ../shared):
#
#   run(command="bash bench/gpu_session.sh", timeout_s=600)        # ends within 8 minutes
#   bash bench/gpu_session.sh --dry-run      # the same steps on the CPU at tiny sizes (well under a
#                                            # minute idle; about 1.5 min on a busy 2-core machine)
#
# Steps, each under `timeout` (clipped so the whole script ends within 8 minutes); a failing
# step is reported and the next one runs:
#   1. install the package into a temporary --target folder (pip, offline; where pip cannot
#      build, a copy of tvnet_cli/ with weights/ as tvnet_cli/weights) and put it first on
#      PYTHONPATH; nothing is installed into the machine's site-packages
#   2. versions: python, torch, CUDA, triton, GPU (nvidia-smi), CPUs -> $OUT/versions.txt
#   3. the CUDA tests (-k cuda: names or the `cuda` marker) of tests/test_fastpath.py and
#      tests/test_kernel_triton.py, plus (real run) tests/test_triton_model.py and
#      tests/test_host_sync.py on CUDA, where they exist -> $OUT/cuda_tests.txt
#   4. engine pairs/s, TVNet-50, tvl1-half, tvl1-fast and tvl1 at 340x256, batch 256 and batch 1, backends triton
#      and torch, frames resident on the device -> $OUT/engine.json, engine.txt
#   5. `tvnet extract` flows/s end to end: 16 copies of examples/test.avi, --gpus 0,
#      --procs-per-device 1..4, JPEG to a temporary folder -> $OUT/extract.json, extract.txt
#   6. a summary table -> stdout and $OUT/summary.txt; exit status 1 if any step failed.
# $OUT (default /tmp/tvnet-gpu-session) receives at most 8 files (install.txt is the 8th).
#
# Optional carries (prepare here; both folders git-ignored, e.g. through .git/info/exclude):
#   PyAV, for step 5 (without it step 5 is skipped and says so):
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl av==18.1.0
#   the shared data, so the data-driven CUDA tests run instead of skipping:
#     mkdir -p .devdata && cp -r ../shared/data/{videos,chairs,middlebury} .devdata/
#   then run(command="bash bench/gpu_session.sh", carry=[".whl", ".devdata"], timeout_s=600).
# Environment: TVNET_BACKEND is honoured by the model in steps 3 and 5 (step 4 sets backends).
set -uo pipefail

mode=real
case "${1:-}" in
  --dry-run) mode=dry ;;
  "") ;;
  *) echo "usage: bash bench/gpu_session.sh [--dry-run]" >&2; exit 2 ;;
esac
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/tvnet-gpu-session}
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/tvnet-gpu-session.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1  # never the repository: `python3 -m` would import its uninstalled tvnet_cli
export PYTHONUNBUFFERED=1
[[ -z ${TVNET_SHARED_DATA:-} && -d $repo/.devdata ]] && export TVNET_SHARED_DATA=$repo/.devdata

if [[ $mode == dry ]]; then  # the CPU, tiny sizes
  budget=300 gpus="" copies=2 procs="1 2"  # (budget: a guard for a loaded machine)
  engine_args=(--device cpu --size 64x48 --pairs 2 --batch 2 --slow-pairs 1 --repeats 1)
  engine_presets=tvnet-10,tvnet-2-2-5  # same kinds (one level; a pyramid with warps), few iterations:
  # on the CPU the triton backend runs in Triton's interpreter, ~30 ms a launch
  extract_args=(--width 160 --height 120)
else
  budget=450 gpus=0 copies=16 procs="1 2 3 4"
  engine_args=(--device cuda:0 --size 340x256 --pairs 256 --batch 256 --slow-pairs 4 --repeats 3)
  engine_presets=tvnet-50,tvl1-half,tvl1-fast,tvl1  # tvl1-fast: the default of `tvnet extract`; tvl1-half: its median on the GPU
  extract_args=()
fi
deadline=$((SECONDS + budget))  # 450 s of steps + summary: within the 8 minutes (480 s)
results=$work/results.tsv  # name, status (pass/fail/skip), seconds, value, unit, note
: > "$results"

# run_step NAME LIMIT_S LOG CMD...: CMD under `timeout` (limit clipped to the time left),
# output appended to LOG; sets rc (124 = timed out or not run), dt (seconds) and from (the
# first line of LOG that this step wrote).
run_step() {
  local name=$1 limit=$2 log=$3 left t0
  shift 3
  left=$((deadline - SECONDS))
  from=$(($(wc -l < "$log") + 1))
  echo "--- $name"
  if ((left < 10)); then
    rc=124 dt=0
    echo "--- $name: not run, out of time" >> "$log"
    return
  fi
  ((limit > left)) && limit=$left
  echo "--- $name (limit ${limit} s): $*" >> "$log"
  t0=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
}

# record NAME STATUS [VALUE UNIT NOTE] (uses dt); a failure shows the end of LOG
record() {
  local name=$1 status=$2 value=${3:-} unit=${4:-} note=${5:-}
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$value" "$unit" "$note" >> "$results"
  echo "    $status (${dt} s) ${value:+$value $unit }$note"
}
failed_tail() {  # LOG: the last lines that the failed step wrote, on stdout
  tail -n "+$from" "$1" | tail -n 15 | sed 's/^/    | /'
}
why() {  # the note for a non-zero rc
  case $rc in
    124 | 137) echo "timed out or out of time (rc $rc)" ;;
    *) echo "rc $rc" ;;
  esac
}

echo "=== tvnet GPU session ($mode run) from $repo; results in $out"

# 1. install: pip from a copy of the sources (no build/ or egg-info left in the repository)
log=$out/install.txt
: > "$log"
site=$work/site
mkdir -p "$work/src"
for f in pyproject.toml README.md LICENSE tvnet_cli weights; do
  [[ -e $repo/$f ]] && cp -r "$repo/$f" "$work/src/"
done
run_step install 90 "$log" python3 -m pip install --no-deps --no-build-isolation --no-index \
  --no-compile --disable-pip-version-check --target "$site" "$work/src"
if ((rc == 0)); then
  record install pass "" "" "pip --target $site"
else
  note="pip failed ($(why)): copied tvnet_cli/ + weights/ into $site instead"
  echo "!!! $note (see install.txt)" | tee -a "$log"
  rm -rf "$site" && mkdir -p "$site" && cp -r "$work/src/tvnet_cli" "$site/" \
    && cp -r "$work/src/weights" "$site/tvnet_cli/weights"
  if (($? == 0)); then record install pass "" "" "$note"; else record install fail "" "" "$note: copy failed"; fi
fi
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
have_av=1
if ! python3 -c "import av" >> "$log" 2>&1; then
  whl=$(ls "$repo"/.whl/av-*.whl 2>/dev/null | head -n 1)
  if [[ -n $whl ]]; then
    run_step "install PyAV" 60 "$log" python3 -m pip install --no-deps --no-index --no-compile \
      --disable-pip-version-check --target "$site" "$whl"
    ((rc == 0)) || python3 -m zipfile -e "$whl" "$site" >> "$log" 2>&1  # a wheel is a zip
  fi
  if python3 -c "import av" >> "$log" 2>&1; then
    record "install PyAV" pass "" "" "$(basename "$whl")"
  else
    have_av=0
    [[ -n $whl ]] && record "install PyAV" fail "" "" "$(basename "$whl") does not import (see install.txt)"
    echo "!!! PyAV (av) is not importable (${whl:+the carried $(basename "$whl") failed; }no PyAV in this" \
      "python): 'tvnet extract' cannot decode videos, so the extract step is SKIPPED (carry .whl/av-*.whl:" \
      "see the header for the one-line prep)" | tee -a "$log"
  fi
fi

# 2. versions
log=$out/versions.txt
: > "$log"
run_step versions 60 "$log" python3 - "$mode" "$site" "$repo" <<'EOF'
import os, platform, shutil, subprocess, sys

mode, site, repo = sys.argv[1:4]
problems = []


def version(module: str) -> str:
    try:
        m = __import__(module)
    except Exception as e:  # absent or broken: say which
        return f"absent ({type(e).__name__}: {e})"
    return getattr(m, "__version__", "?")


git = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%h %cI %s"], capture_output=True, text=True)
print(f"commit       {git.stdout.strip() if git.returncode == 0 else 'unknown (no git here)'}")
print(f"python       {platform.python_version()} ({sys.executable})")
print(f"CPUs         {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), {platform.machine()}")
import torch

print(f"torch        {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print(f"triton       {version('triton')}")
for name, module in (("numpy", "numpy"), ("PyAV", "av"), ("OpenCV", "cv2"), ("setuptools", "setuptools")):
    print(f"{name:12s} {version(module)}")
import tvnet_cli

print(f"tvnet_cli    {tvnet_cli.__version__} from {os.path.dirname(tvnet_cli.__file__)}")
if not tvnet_cli.__file__.startswith(site):
    problems.append(f"tvnet_cli imported from {tvnet_cli.__file__}, not the installed copy in {site}")
print(f"TVNET_BACKEND={os.environ.get('TVNET_BACKEND', '')!r}")
print(f"CUDA devices {torch.cuda.device_count()} (available: {torch.cuda.is_available()})")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i}     {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
          f"capability {p.major}.{p.minor}")
if shutil.which("nvidia-smi"):
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    print(f"nvidia-smi   {smi.stdout.strip() or smi.stderr.strip()}")
    if smi.returncode and mode == "real":
        problems.append(f"nvidia-smi failed: {smi.stderr.strip()}")
else:
    print("nvidia-smi   not found")
    if mode == "real":
        problems.append("nvidia-smi not found")
if mode == "real" and not torch.cuda.is_available():
    problems.append("torch sees no CUDA device")
for p in problems:
    print(f"PROBLEM: {p}")
sys.exit(1 if problems else 0)
EOF
tail -n +2 "$log" | sed 's/^/    /'
if ((rc == 0)); then record versions pass; else record versions fail "" "" "$(why), see PROBLEM lines"; fi

# 3. CUDA tests (skipped on the CPU, which a dry run accepts)
log=$out/cuda_tests.txt
: > "$log"
tests=()
for f in tests/test_fastpath.py tests/test_kernel_triton.py tests/test_triton_model.py tests/test_host_sync.py; do
  [[ -f $repo/$f ]] && tests+=("$repo/$f")
done
if ((${#tests[@]} == 0)); then
  dt=0 record "CUDA tests" fail "" "" "no test files found"
else
  # the real run adds the whole-model Triton tests and the host-sync count, which run on CUDA
  # where it is there (on the CPU they need Triton's interpreter: minutes, so not in a dry run)
  select="cuda"; [[ $mode == real ]] && select="cuda or triton_model or host_sync"
  run_step "CUDA tests" 150 "$log" python3 -m pytest -q -p no:cacheprovider -k "$select" "${tests[@]}"
  counts=$(grep -E '(passed|failed|skipped|error|no tests ran|deselected)' "$log" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
  passed=$(grep -oE '[0-9]+ passed' <<<"$counts" | grep -oE '[0-9]+' || echo 0)
  if ((rc == 0)) && [[ $mode == dry || ${passed:-0} -gt 0 ]]; then
    record "CUDA tests" pass "" "" "$counts"
  else
    if ((rc == 0)); then counts="$counts (none ran on the GPU)"; else counts="$counts, $(why)"; fi
    record "CUDA tests" fail "" "" "$counts"
    failed_tail "$log"
  fi
fi

# 4. engine pairs/s per backend
log=$out/engine.txt
: > "$log"
for backend in triton torch; do
  run_step "engine $backend" 150 "$log" python3 "$repo/bench/bench_engine.py" "${engine_args[@]}" \
    --presets "$engine_presets" --backends "$backend" --skip-opencv --skip-startup --skip-memory \
    --json "$work/engine-$backend.json"
  if ((rc == 0)); then
    record "engine $backend" pass
  elif ((rc == 3)) && [[ $mode == dry ]]; then  # bench_engine: no such backend in this tvnet_cli
    record "engine $backend" skip "" "" "no '$backend' backend in this tvnet_cli"
  else
    record "engine $backend" fail "" "" "$(why)"
    failed_tail "$log"
  fi
done

# 5. tvnet extract end to end, flows/s from wall time and the flow files written
log=$out/extract.txt
: > "$log"
if ((have_av == 0)); then
  echo "--- extract"
  dt=0 record extract skip "" "" "no PyAV: carry .whl/av-*.whl (see the header)"
else
  mkdir -p "$work/videos" "$work/warm"
  video=$repo/examples/test.avi  # 164 frames, 320x240
  if [[ $mode == dry ]] && python3 -c "import sys; from tvnet_cli.io.video import read_frames, write_video; \
write_video(sys.argv[2], read_frames(sys.argv[1], max_frames=24), 'mpeg4')" "$video" "$work/short.avi" >> "$log" 2>&1
  then
    video=$work/short.avi  # a dry run's short videos: the first 24 frames
  fi
  for i in $(seq -w 1 "$copies"); do cp "$video" "$work/videos/test_$i.avi"; done
  cp "$video" "$work/warm/"
  run_extract() {  # NAME INPUT PROCS: one `tvnet extract` run, recorded with its flows/s
    local name=$1 input=$2 p=$3 flows_dir=$work/flows
    rm -rf "$flows_dir"
    run_step "$name" 90 "$log" python3 -m tvnet_cli extract "$input" --out "$flows_dir" --gpus "$gpus" \
      --procs-per-device "$p" "${extract_args[@]}"
    # flow files written, and flows/s between the first and the last of them (start-up excluded)
    local n steady
    read -r n steady < <(find "$flows_dir" -name 'flow_x_*.jpg' -printf '%T@\n' 2>/dev/null | sort -n |
      awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%d %s\n", NR, (b > a ? sprintf("%.1f", (NR - 1) / (b - a)) : "-") }')
    rm -rf "$flows_dir"
    if ((rc == 0 && n > 0)); then
      record "$name" pass "$(awk -v n="$n" -v t="$dt" 'BEGIN { printf "%.1f", n / t }')" flows/s \
        "$n flows, $steady flows/s from the first to the last flow file"
    else
      record "$name" fail "" "" "$n flows, $(why)"
      failed_tail "$log"
    fi
  }
  # one-time costs (kernel compile, caches) outside the measured runs
  [[ $mode == real ]] && run_extract "extract warm-up" "$work/warm" 1
  for p in $procs; do
    run_extract "extract procs=$p" "$work/videos" "$p"
  done
fi

# 6. summary (and the JSON files)
python3 - "$results" "$work" "$out" "$mode" "$copies" <<'EOF' | tee "$out/summary.txt"
import csv, glob, json, os, re, sys

results, work, out, mode, copies = sys.argv[1:6]
rows = list(csv.reader(open(results), delimiter="\t", quoting=csv.QUOTE_NONE))
engine = {}
for path in sorted(glob.glob(os.path.join(work, "engine-*.json"))):
    engine[os.path.basename(path)[len("engine-"):-len(".json")]] = json.load(open(path))
with open(os.path.join(out, "engine.json"), "w") as f:
    json.dump({"mode": mode, "backends": engine}, f, indent=2)


def steady(note: str) -> float | None:
    """flows/s between the first and the last flow file written, from the run's note."""
    m = re.search(r"([0-9.]+) flows/s from the first", note)
    return float(m.group(1)) if m else None


extract = [{"run": name, "status": status, "seconds": float(sec), "note": note,
            "flows": int(note.split()[0]) if note[:1].isdigit() else 0,
            "flows_per_s": float(value) if value else None,  # end to end: wall time of the command
            "steady_flows_per_s": steady(note), "videos": int(copies)}
           for name, status, sec, value, unit, note in rows if name.startswith("extract")]
with open(os.path.join(out, "extract.json"), "w") as f:
    json.dump({"mode": mode, "runs": extract}, f, indent=2)


def engine_result(backend: str) -> str:
    parts = []
    for row in engine.get(backend, {}).get("rows", {}).values():
        warn = " (warned)" if row.get("warnings") else ""
        label = {"tvnet-50": "TVNet-50", "tvl1": "tvl1"}.get(row["preset"], row["preset"])
        parts.append(f"{label} b{row['batch']} {row['pairs_per_s']:,.1f}{warn}")
    return "pairs/s: " + ", ".join(parts) if parts else ""


print(f"\n=== summary ({mode} run)")
print(f"{'step':22s} {'status':6s} {'seconds':>8s}  result")
for name, status, sec, value, unit, note in rows:
    result = engine_result(name.split()[1]) if name.startswith("engine ") and status == "pass" else ""
    if value:
        result = f"{float(value):,.1f} {unit}"
    result = "; ".join(x for x in (result, note) if x)
    print(f"{name:22s} {status:6s} {float(sec):8.1f}  {result}")
fails = sum(status == "fail" for _, status, *_ in rows)
print(f"{len(rows)} steps: {sum(s == 'pass' for _, s, *_ in rows)} passed, {fails} failed, "
      f"{sum(s == 'skip' for _, s, *_ in rows)} skipped")
EOF
[[ ${PIPESTATUS[0]} == 0 ]] || { echo "summary failed"; exit 1; }
if cut -f2 "$results" | grep -qx fail; then exit 1; fi
exit 0
