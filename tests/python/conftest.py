"""Make python/moert_reference importable from the repository checkout."""

import os
import sys

PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                          "..", "python"))
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)
