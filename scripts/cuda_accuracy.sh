#!/bin/bash
# The CUDA grid (tests/cuda_grid.py) in a real CUDA llama-server: build llama-server and
# llama-fit-params with -DGGML_CUDA=ON from the llama.cpp tree llama-cpp-python 0.3.36 vendors,
# plan each case with membudget, run the printed command (or llama-server's bare one) on
# 127.0.0.1 with -lv 4, and bring the logs back. tests/test_cuda_logs.py replays them offline.
#
# Meant for the device machine the project lends to some sessions, which cannot download
# anything, so what it needs travels under .device/ (git-ignored; name it in `carry`):
#
#   .device/llama.cpp.tar.xz   the sdist's vendor/llama.cpp without models/, docs/, tests/,
#                              examples/ (pip download --no-deps --no-binary :all:
#                              llama-cpp-python==0.3.36)
#   .device/wheels/            gguf's wheel (its needs, numpy, pyyaml, tqdm and requests, and
#                              typer, rich and psutil are on that machine already)
#
# Usage:   OUT=/tmp/out scripts/cuda_accuracy.sh [SECONDS]
# SECONDS (default 540) bounds the whole script: cases not started by then are left out, so the
# logs come back even when the build was slow. The build takes about 4 minutes on 16 cores for
# sm_90 (H100/H200); set CUDA_ARCH for another GPU.
set -uo pipefail
ROOT=$(pwd)
OUT=${OUT:?set OUT to a directory for the results}
LIMIT=${1:-540}
T0=$(date +%s)
export PATH="/usr/local/cuda/bin:/opt/torch/.venv/bin:$PATH"
NVCC=$(command -v nvcc || find /usr/local /opt -name nvcc -type f 2>/dev/null | head -1)
[ -n "$NVCC" ] || { echo "no nvcc"; exit 1; }
export CUDACXX="$NVCC" PATH="$(dirname "$NVCC"):$PATH"
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
"$NVCC" --version | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/mbpy .device/wheels/*.whl 2>&1 | tail -2
mkdir -p /tmp/llsrc && tar xJf .device/llama.cpp.tar.xz -C /tmp/llsrc
cmake -S /tmp/llsrc/llama.cpp -B /tmp/lbuild "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF > "$OUT/cmake.txt" 2>&1 \
  || { tail -30 "$OUT/cmake.txt"; exit 1; }
cmake --build /tmp/lbuild -j "$(nproc)" --target llama-server llama-fit-params > "$OUT/build.txt" 2>&1 \
  || { grep -m5 -B2 -A10 'error' "$OUT/build.txt"; tail -20 "$OUT/build.txt"; exit 1; }
echo "build took $(( $(date +%s) - T0 )) s"
export PYTHONPATH="/tmp/mbpy:$ROOT/src:$ROOT" PYTHONUNBUFFERED=1
LEFT=$(( LIMIT - ($(date +%s) - T0) - 25 ))
mkdir -p /tmp/grid
python3 -m tests.cuda_grid /tmp/grid /tmp/lbuild/bin "$LEFT" > "$OUT/run.txt" 2>&1
echo "run rc=$? after $(( $(date +%s) - T0 )) s"
grep -c ': ok$' "$OUT/run.txt"; grep -v ': ok$' "$OUT/run.txt" | tail -30
cp /tmp/grid/manifest.json "$OUT/" 2>/dev/null
tar czf "$OUT/cuda-logs.tgz" -C /tmp/grid logs manifest.json
ls -la "$OUT"
