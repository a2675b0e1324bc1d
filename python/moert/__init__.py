"""moert: an inference runtime for Mixture-of-Experts language models.

    import moert
    print(moert.backends())
    model = moert.load("path/to/checkpoint", backend="reference")
    # GPTQ / AWQ / MXFP4 checkpoints load as stored; quantize="int4" (or
    # "int8", "mxfp4") packs a float or fp8 one at load.
    logits = model.forward([1, 2, 3])          # numpy float32 [3, vocab]
    session = model.session()                  # KV-cached sequence
    session.append([1, 2, 3])
    next_logits = session.append([4])          # [1, vocab]
    tokens = model.generate([1, 2, 3], max_new_tokens=16)
    for token in model.stream([1, 2, 3], temperature=0.8, seed=7):
        print(token)
    # with tokenizer.json in the checkpoint and the tokenizers package:
    print(model.generate("Once upon a time", max_new_tokens=16, text=True))
    with model.profile() as prof:              # per-op times of the runs inside
        model.generate([1, 2, 3], max_new_tokens=16)
    print(prof)
    print(model.summary()["text"])             # includes the host decode roofline

Errors from the runtime raise moert.Error (a RuntimeError) with the
runtime's message.
"""

import pkgutil

# The compiled module may live in another directory named moert/ on sys.path
# (a build tree's python/moert/ beside this source package).
__path__ = pkgutil.extend_path(__path__, __name__)

try:
    from . import _moert
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "moert: the compiled module moert._moert was not found or could not "
        "be loaded (" + str(exc) + "). Build the project and put "
        "<build>/python on PYTHONPATH, or install the package with "
        "'pip install <moert checkout>'.") from exc

from ._moert import (  # noqa: E402
    Engine,
    Error,
    Session,
    TokenStream,
    __version__,
    backends,
    plugin_failures,
    read_bandwidth,
    supported_model_types,
)

from .compare import Report, compare  # noqa: E402
from .model import Model, load, random_model  # noqa: E402
from .profiling import Profile  # noqa: E402

__all__ = [
    "Report",
    "compare",
    "Engine",
    "Error",
    "Model",
    "Profile",
    "Session",
    "TokenStream",
    "__version__",
    "backends",
    "load",
    "plugin_failures",
    "random_model",
    "read_bandwidth",
    "supported_model_types",
]
