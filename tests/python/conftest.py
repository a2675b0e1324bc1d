"""Make the repository's Python packages importable in the tests.

python/ (moert's pure-Python part and moert_reference) goes first on
sys.path; the compiled module comes from $MOERT_PYTHON_DIR (a build's python/
directory), else <repo>/build/python, else wherever `moert` is installed.
Test modules import moert with pytest.importorskip, so that a checkout
without a build skips them with the reason.
"""

import os
import sys

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON_DIR = os.path.join(_ROOT, "python")
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

BUILD_PYTHON_DIR = os.environ.get("MOERT_PYTHON_DIR") or os.path.join(_ROOT, "build", "python")
if os.path.isdir(BUILD_PYTHON_DIR) and BUILD_PYTHON_DIR not in sys.path:
    sys.path.append(BUILD_PYTHON_DIR)
