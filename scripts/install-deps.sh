#!/usr/bin/env bash
# Installs every Debian and Python package moert needs to build and test.
# Safe to run any number of times: it installs only what is missing.
set -euo pipefail

APT_PACKAGES=(
  cmake ninja-build g++ pkg-config git
  libgtest-dev libgmock-dev nlohmann-json3-dev
  libdnnl-dev                                       # CPU backend (oneDNN)
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo  # OpenCL backend, PoCL runs it on the CPU
  python3-dev pybind11-dev                          # Python bindings
  clang-format
  clang libclang-rt-14-dev                          # fuzz targets (scripts/fuzz.sh): clang and its libFuzzer
)
# tokenizers (optional at run time): text prompts through a checkpoint's tokenizer.json.
# fastapi, uvicorn, jinja2 (optional at run time): moert serve; openai: its tests' client.
# atheris: the coverage-guided Python fuzz harness (fuzz/python, scripts/fuzz.sh server).
PIP_PACKAGES=(numpy pytest pybind11 ml_dtypes tokenizers matplotlib fastapi uvicorn jinja2 openai
              atheris)

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
else
  echo "install-deps: Debian packages present"
fi

PYTHON=${PYTHON:-python3}
pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  if ! "$PYTHON" -c "import $p" 2>/dev/null; then pip_missing+=("$p"); fi
done
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "install-deps: pip install ${pip_missing[*]}"
  # Debian's own Python refuses pip without --break-system-packages; try plain first.
  "$PYTHON" -m pip install -q --disable-pip-version-check "${pip_missing[@]}" ||
    "$PYTHON" -m pip install -q --disable-pip-version-check --break-system-packages "${pip_missing[@]}"
else
  echo "install-deps: Python packages present"
fi
