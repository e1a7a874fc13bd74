#!/usr/bin/env bash
# Issue 7's GPU measurements in one call of the device tool (H100/H200, about 8 minutes).
#
# Prepare once, here (both folders are git-ignored through .git/info/exclude; the GPU image
# has torch, click, h5py, pillow, rich and pytest, but no PyAV, and ../shared does not travel):
#   printf '/.whl/\n/.devdata/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl av
#   mkdir -p .devdata && cp -r ../shared/data/{videos,chairs,middlebury} .devdata/
# Then: run(command="bash bench/gpu_session.sh", carry=[".whl", ".devdata"], timeout_s=600)
# Results come back under $OUT: fast-path tests on CUDA, engine pairs/s (targets: TVNet-50
# >= 10,000 pairs/s, 5-5-50 >= 500 at 340x256), extract flows/s and where the time goes.
set -uo pipefail
out=${OUT:-/tmp/tvnet-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD TVNET_SHARED_DATA=$PWD/.devdata PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider tests/test_fastpath.py 2>&1 | tee "$out/fastpath.txt"
python3 bench/bench_engine.py --device cuda:0 --pairs 256 --batch 256 --repeats 3 --slow-pairs 8 \
    --skip-opencv --skip-memory --json "$out/engine.json" 2>&1 | tee "$out/engine.txt"
python3 bench/bench_extract.py --device cuda:0 --frames 301 --batch 64 --skip-opencv --skip-memory \
    2>&1 | tee "$out/extract.txt"
