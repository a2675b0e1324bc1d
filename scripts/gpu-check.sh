#!/usr/bin/env bash
# The CUDA backend on a machine with an NVIDIA GPU: builds with the cuda
# backend required (warnings are errors), then runs its unit test, the
# conformance suite on the cuda devices, and the tiny whole models on the
# cuda backend against the reference backend; then the unit test and the
# conformance suite again with MOERT_CUDA_BASELINE_KERNELS=1, so the fast
# kernels (vectorised GEMV, tensor-core expert tiles, tiled prefill
# attention, CUDA graphs) and the simple ones they replace are both checked.
#   BUILD_DIR (default build-gpu), CUDA_ARCHS (default "90-real;90-virtual").
# On a machine without network, run scripts/gpu-kit.sh here first and carry
# .gpukit: its packages are unpacked and used when present.  Without Python
# headers there the Python module is not built and the tiny-model pytest
# skips with that reason; test_cuda_backend runs whole random models too.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader || true
# Dependencies brought by scripts/gpu-kit.sh for a machine without network.
kit=()
if compgen -G ".gpukit/*.deb" > /dev/null; then
  mkdir -p .gpukit/root
  for deb in .gpukit/*.deb; do dpkg -x "$deb" .gpukit/root; done
  root=$PWD/.gpukit/root
  kit=(-DGTest_DIR="$root/usr/lib/x86_64-linux-gnu/cmake/GTest"
       -Dnlohmann_json_DIR="$root/usr/share/cmake/nlohmann_json")
fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOERT_WERROR=ON \
  -DMOERT_BACKEND_CUDA=ON -DMOERT_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90-real;90-virtual}" "${kit[@]}"
cmake --build "$BUILD_DIR" -j "$(nproc)"
"$BUILD_DIR/bin/moert" info
"$BUILD_DIR/bin/test_cuda_backend"
"$BUILD_DIR/bin/test_conformance" --backend=cuda
MOERT_PYTHON_DIR="$BUILD_DIR/python" PYTHONPATH=python \
  python3 -m pytest -q -p no:cacheprovider tests/python/test_backend_models.py -k cuda
# Batched decoding (paged attention over many sequences) against each prompt alone.
MOERT_PYTHON_DIR="$BUILD_DIR/python" PYTHONPATH=python \
  python3 -m pytest -q -p no:cacheprovider tests/python/test_batch.py -k cuda
echo "== again with the baseline kernels (MOERT_CUDA_BASELINE_KERNELS=1) =="
MOERT_CUDA_BASELINE_KERNELS=1 "$BUILD_DIR/bin/test_cuda_backend"
MOERT_CUDA_BASELINE_KERNELS=1 "$BUILD_DIR/bin/test_conformance" --backend=cuda
