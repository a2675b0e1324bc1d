#!/usr/bin/env bash
# The Python environment of tests/python/test_transformers_parity.py: CPU
# PyTorch and transformers in a virtual environment inside the build tree
# ($BUILD_DIR/parity-venv, or $PARITY_VENV), beside the system packages that
# scripts/install-deps.sh installs (numpy, pytest, ml_dtypes, ...).
#
# PyPI's torch wheel is a CUDA build whose dependencies are several GB of
# nvidia-* CUDA wheels.  It is installed without them (--no-deps, then its
# other dependencies), and scripts/torch-cuda-stubs.py writes stand-ins for
# the CUDA libraries it links to, so that it imports and runs on the CPU.
# Does nothing when the environment is already there and works.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.15.0
TRANSFORMERS_VERSION=5.25.0
# torch's dependencies less the CUDA ones (cuda-toolkit, cuda-bindings,
# nvidia-*, triton) and setuptools (for building extensions only).
TORCH_DEPS=(filelock "typing-extensions>=4.13.0" "sympy>=1.13.3" "networkx>=2.5.1" jinja2
            "fsspec>=0.8.5")
VENV=${PARITY_VENV:-${BUILD_DIR:-build}/parity-venv}
PYTHON=${PYTHON:-python3}

works() {
  "$VENV/bin/python" - "$TORCH_VERSION" "$TRANSFORMERS_VERSION" <<'EOF' 2>/dev/null
import sys
import torch
import transformers
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert transformers.__version__ == sys.argv[2], transformers.__version__
assert float(torch.ones(2) @ torch.ones(2)) == 2.0
assert not torch.cuda.is_available()
EOF
}

if [ -x "$VENV/bin/python" ] && works; then
  echo "parity-env: torch $TORCH_VERSION (CPU) and transformers $TRANSFORMERS_VERSION present in $VENV"
  exit 0
fi

start=$(date +%s)
echo "parity-env: creating $VENV (torch $TORCH_VERSION without CUDA, transformers $TRANSFORMERS_VERSION)"
rm -rf "$VENV"
"$PYTHON" -m venv --system-site-packages "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
echo "parity-env: pip install --no-deps torch==$TORCH_VERSION"
"${pip[@]}" --no-deps "torch==$TORCH_VERSION"
echo "parity-env: pip install ${TORCH_DEPS[*]} transformers==$TRANSFORMERS_VERSION"
"${pip[@]}" "${TORCH_DEPS[@]}" "transformers==$TRANSFORMERS_VERSION"
torch_dir=$("$VENV/bin/python" -c \
  "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torch').origin))")
"$VENV/bin/python" scripts/torch-cuda-stubs.py "$torch_dir" "$VENV/cuda-stubs"
if ! works; then
  echo "parity-env: the environment in $VENV does not work:" >&2
  "$VENV/bin/python" -c "import torch, transformers; print(torch.ones(2) @ torch.ones(2))" >&2 || true
  exit 1
fi
echo "parity-env: ready in $(($(date +%s) - start)) s: $("$VENV/bin/python" -c \
  'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
