"""Whole models on every backend against the reference backend.

For each available backend other than "reference" (moert.backends()), each
architecture of moert_reference.configs and each dtype, a tiny random
checkpoint (moert_reference.make_checkpoint) is loaded twice through the
moert Python module: with strict=True on the backend under test, so that any
op it cannot run is an error rather than a silent fallback, and on the
reference backend.  Both then run

* a forward pass over a 7-token prompt, and
* a session: a 5-token prefill and 3 single-token appends (the KV cache path),

and every logit row must agree: max |got - want| over max |want| per row,
worst row, within the dtype's tolerance.

Dtypes (checkpoint storage / activations):

* ``f32``: f32 weights, f32 activations.
* ``bf16``: bf16 weights, bf16 activations.
* ``fp8``: blockwise fp8 weights with f32 activations, for the architectures
  whose checkpoints come in that format (DeepSeek-V3, as test_cpp_models.py
  has it).

The compiled module is looked for in $MOERT_PYTHON_DIR (a build's python/
directory), else in <repo>/build/python, else wherever `moert` is installed.
"""

import functools

import numpy as np
import pytest

from moert_reference import make_checkpoint
from moert_reference.configs import ARCHITECTURES

moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

# Architectures whose checkpoints come with blockwise fp8 weights.
FP8_ARCHS = ("deepseek_v3", "glm4_moe")

# (checkpoint dtype, activation dtype) per dtype name.
DTYPES = {"f32": ("f32", "f32"), "bf16": ("bf16", "bf16"), "fp8": ("fp8", "f32")}

# Tolerances on max |diff| / max |ref| per logit row, by activation dtype.
# f32: both backends compute in f32 or better from the same weights (fp8
#   blocks dequantised exactly); only summation order and f32 rounding
#   separate them, ~1e-6 relative per op, compounded over 2-4 layers to well
#   under 1e-5 of the logit scale.  1e-4 leaves room; a wrong kernel is off
#   by 1e-2 or more.  Prompts stay at 8 tokens or fewer, where the CPU
#   backend's linear layers take exact f32 products (above 8 rows it may
#   round activations to bf16 for a matrix unit, tests/conformance/
#   cases_linear.cpp).
# bf16: every op's output is rounded to bf16 (2^-9 relative) on both sides,
#   from an f32 result on one and an f64 result on the other, so a value next
#   to a rounding boundary may round one way here and the other there, and
#   such one-ulp flips propagate through the layers: ~1e-2 of the logit scale
#   (measured ~6e-3 against f64 in test_cpp_models.py), 3e-2 stated.
TOLERANCE = {"f32": 1e-4, "bf16": 3e-2}

PROMPT_TOKENS = 7
PREFILL_TOKENS = 5
APPENDS = 3


def _available_backends():
    """Names of the backends besides "reference" with a device here, and why
    the others are missing (for the skip message)."""
    names, why = [], []
    for b in moert.backends():
        if b["name"] == "reference":
            continue
        if b["available"] and b["devices"]:
            names.append(b["name"])
        else:
            why.append(f"{b['name']}: {b['reason'] or 'no device'}")
    for f in moert.plugin_failures():
        why.append(f"{f['path']}: {f['reason']}")
    return names, why


BACKENDS, UNAVAILABLE = _available_backends()

CASES = [(arch, dtype) for arch in ARCHITECTURES for dtype in ("f32", "bf16")]
CASES += [(arch, "fp8") for arch in ARCHITECTURES if arch in FP8_ARCHS]

# One skipped placeholder when there is nothing to compare against.
PARAMS = [(b, arch, dtype) for b in BACKENDS for arch, dtype in CASES] or [(None, None, None)]
IDS = [f"{b}-{arch}-{dtype}" if b else "no-backend" for b, arch, dtype in PARAMS]


def _skip_without_backend(backend):
    if backend is None:
        detail = "; ".join(UNAVAILABLE) if UNAVAILABLE else "none is built or installed"
        pytest.skip("no backend besides 'reference' is available, so there is nothing to "
                    f"compare with it ({detail})")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """checkpoint(arch, dtype) -> directory, each written once per module."""
    root = tmp_path_factory.mktemp("backend_models")

    @functools.lru_cache(maxsize=None)
    def checkpoint(arch, dtype):
        d = root / f"{arch}_{dtype}"
        make_checkpoint.make_checkpoint(arch, str(d), dtype=DTYPES[dtype][0], seed=17)
        return d

    return checkpoint


@pytest.fixture(scope="module")
def models(checkpoints):
    """model(backend, arch, dtype) -> moert.Model, loaded once per module."""

    @functools.lru_cache(maxsize=None)
    def model(backend, arch, dtype):
        return moert.load(str(checkpoints(arch, dtype)), backend=backend,
                          dtype=DTYPES[dtype][1], strict=backend != "reference",
                          progress=False)

    return model


def _prompt(arch):
    """A fixed random prompt per architecture (vocab 512 in every config)."""
    rng = np.random.default_rng(sum(map(ord, arch)))
    return [int(t) for t in rng.integers(0, 512, PROMPT_TOKENS + 1)]


def _scaled_error(got, want):
    """Largest |got - want| over the largest |want|, per row, worst row."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"logits of shape {got.shape}, want {want.shape}"
    assert np.isfinite(got).all(), "non-finite logits"
    err = np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)
    return float(err.max())


def _tolerance(dtype):
    return TOLERANCE[DTYPES[dtype][1]]


@pytest.mark.parametrize("backend,arch,dtype", PARAMS, ids=IDS)
def test_forward_matches_reference(backend, arch, dtype, models):
    _skip_without_backend(backend)
    tokens = _prompt(arch)[:PROMPT_TOKENS]
    got = models(backend, arch, dtype).forward(tokens)
    want = models("reference", arch, dtype).forward(tokens)
    err = _scaled_error(got, want)
    assert err <= _tolerance(dtype), (
        f"{backend} {arch} {dtype}: forward logits differ from the reference by {err:.3g} "
        f"(tolerance {_tolerance(dtype)})")


@pytest.mark.parametrize("backend,arch,dtype", PARAMS, ids=IDS)
def test_session_matches_reference(backend, arch, dtype, models):
    _skip_without_backend(backend)
    tokens = _prompt(arch)
    steps = [tokens[:PREFILL_TOKENS]] + [[t] for t in tokens[PREFILL_TOKENS:][:APPENDS]]
    got_session = models(backend, arch, dtype).session()
    want_session = models("reference", arch, dtype).session()
    for i, step in enumerate(steps):
        got = got_session.append(step)
        want = want_session.append(step)
        err = _scaled_error(got, want)
        what = "prefill" if i == 0 else f"append {i}"
        assert err <= _tolerance(dtype), (
            f"{backend} {arch} {dtype}: session {what} logits differ from the reference by "
            f"{err:.3g} (tolerance {_tolerance(dtype)})")
