"""Independent Python reference for moert.

Modules (import them as ``from moert_reference import reference`` etc.):

* :mod:`moert_reference.safetensors_io` — safetensors reader and writer (§1
  of the MoE architecture reference).
* :mod:`moert_reference.configs` — tiny config.json bodies per architecture.
* :mod:`moert_reference.make_checkpoint` — tiny random checkpoints in exact
  Hugging Face hub layout (BF16, F32 or blockwise FP8; optionally sharded);
  the function is ``make_checkpoint.make_checkpoint``.
* :mod:`moert_reference.reference` — float64 NumPy forward pass of every
  architecture (``reference.load(directory)``).

The package imports nothing eagerly, so ``python -m
moert_reference.make_checkpoint`` and ``python -m moert_reference.reference``
run their modules cleanly.
"""

__all__ = ["configs", "make_checkpoint", "reference", "safetensors_io"]
