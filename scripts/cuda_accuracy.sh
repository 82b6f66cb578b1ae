#!/bin/bash
# The accuracy grid on a CUDA GPU: build llama.cpp's CUDA libraries and run
# benchmarks/accuracy.py with every layer offloaded, recording llama.cpp's CUDA buffer reports
# beside membudget's estimates.
#
# Meant for a machine that cannot download anything (the device machine the project lends to
# some sessions), so everything it needs travels with the checkout under .device/ (git-ignored):
#
#   .device/llama.cpp/   llama.cpp's source, from llama-cpp-python's sdist:
#                        pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
#                        then extract vendor/llama.cpp (ggml/, src/, include/, cmake/, CMakeLists.txt)
#   .device/wheels/      wheels of gguf and llama-cpp-python (pip wheel --no-deps ...), whose
#                        Python bindings load the CUDA libraries through LLAMA_CPP_LIB_PATH
#
# Usage (results go to $OUT):   OUT=/tmp/out scripts/cuda_accuracy.sh [build|run] [ARCH ...]
#   build   only build the libraries;   run   only run (libraries already in /tmp/lbuild)
# The build takes about 4 minutes on 16 cores for sm_90 (H100/H200); set CUDA_ARCH otherwise.
set -uo pipefail
ROOT=$(pwd)
OUT=${OUT:?set OUT to a directory for the results}
T0=$(date +%s)
MODE=${1:-all}
[ "$MODE" = build ] || [ "$MODE" = run ] && shift
ARCHS=("$@")
[ ${#ARCHS[@]} -eq 0 ] && ARCHS=(llama gemma3 deepseek2 gpt-oss mamba2 granitehybrid qwen3next)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
if [ "$MODE" != run ]; then
  python3 -m pip install -q --no-deps --target /tmp/mbpy .device/wheels/*.whl 2>&1 | tail -2
  cmake -S .device/llama.cpp -B /tmp/lbuild -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF \
    > "$OUT/cmake.txt" 2>&1 || { tail -30 "$OUT/cmake.txt"; exit 1; }
  cmake --build /tmp/lbuild -j "$(nproc)" > "$OUT/build.txt" 2>&1 || { tail -40 "$OUT/build.txt"; exit 1; }
  echo "build took $(( $(date +%s) - T0 )) s"
fi
[ "$MODE" = build ] && exit 0
LIB=$(dirname "$(find /tmp/lbuild -name 'libllama.so' | head -1)")
export LLAMA_CPP_LIB_PATH="$LIB" PYTHONPATH="/tmp/mbpy:$ROOT/src:$ROOT"
ARGS=()
for a in "${ARCHS[@]}"; do ARGS+=(--arch "$a"); done
python3 benchmarks/accuracy.py "${ARGS[@]}" --n-gpu-layers 99 --save-logs "$OUT/logs" \
  --out "$OUT/accuracy-cuda.txt" > "$OUT/run.txt" 2>&1
echo "run rc=$? after $(( $(date +%s) - T0 )) s"
tail -5 "$OUT/run.txt"
tar czf "$OUT/cuda-logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
