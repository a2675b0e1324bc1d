"""Writes a 4-bit GPTQ checkpoint from a float (f32/bf16/f16) or fp8 one:
``python -m moert quantize IN OUT --to int4 [--group-size G]``.

Every 2-D Linear weight inside the decoder layers (attention, dense MLPs,
routed and shared experts; not routers, the shared-expert gate, embeddings
or lm_head, as AutoGPTQ leaves them) is rounded to nearest on GPTQ's
symmetric grid (scale 2 amax / 15 per group of G input columns, zero point
8) and stored in the AutoGPTQ / GPTQModel v1 serialisation (``qweight``,
``qzeros`` (zero - 1), ``scales``, ``g_idx``), with config.json's
``quantization_config`` saying so; the other tensors are copied as they are
(an fp8 checkpoint's other linear weights stay fp8).  The rest of IN's files
(tokenizer, generation config) are copied.  Everything is read into memory:
meant for checkpoints that fit in RAM.
"""
import json
import os
import shutil

import numpy as np

from . import make_checkpoint
from .safetensors_io import read_checkpoint_typed, widen, write_safetensors


def _linear_names(config, names):
    """The decoder-layer Linear weights of a checkpoint (kind "linear" in
    make_checkpoint.tensor_specs), as stored in `names`."""
    specs = {name for name, _, kind in make_checkpoint.tensor_specs(config)
             if kind == "linear" and name.startswith("model.layers.")}
    layers = config["num_hidden_layers"]
    return [n for n in names
            if n in specs and int(n.split(".")[2]) < layers]


def _float_values(typed, name):
    dtype, array = typed[name]
    values = widen(dtype, array).astype(np.float32)
    if dtype == "F8_E4M3":
        _, inv = typed[name + "_scale_inv"]
        rows = np.arange(values.shape[0]) // 128
        cols = np.arange(values.shape[1]) // 128
        values = values * widen("F32", inv).astype(np.float32)[rows[:, None], cols[None, :]]
    return values


def quantize_checkpoint(src, dst, to="int4", group_size=128):
    """Writes the GPTQ checkpoint of `src` into `dst` (see the module doc).
    Returns the names of the weights it packed."""
    if to != "int4":
        raise ValueError(f"--to: only int4 (GPTQ v1) is written, got {to!r}")
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if "quantization_config" in config and \
            config["quantization_config"].get("quant_method") != "fp8":
        raise ValueError(f"{src}/config.json: already quantized "
                         f"({config['quantization_config'].get('quant_method')!r})")
    typed = read_checkpoint_typed(src)
    packed = _linear_names(config, typed)
    out = {}
    done = set()
    for name in packed:
        values = _float_values(typed, name)
        k = values.shape[1]
        if group_size != -1 and k % group_size:
            raise ValueError(f"{src}: {name} has {k} input columns, not a multiple of "
                             f"--group-size {group_size}")
        if k % 8 or values.shape[0] % 8:
            raise ValueError(f"{src}: {name} {list(values.shape)} is not a multiple of 8 in "
                             f"both dims, which GPTQ's int32 packing needs")
        q, scale, zero, _ = make_checkpoint.quantize_int4_groups(values, group_size, "gptq", True)
        base = name[:-len(".weight")]
        for suffix, tensor in make_checkpoint.pack_gptq(q, scale, zero, group_size).items():
            out[base + "." + suffix] = tensor
        done.update({name, name + "_scale_inv"})
    for name, tensor in typed.items():
        if name not in done:
            out[name] = tensor
    config["quantization_config"] = make_checkpoint.quantization_config("gptq", group_size, True)
    os.makedirs(dst, exist_ok=True)
    for entry in os.listdir(src):
        path = os.path.join(src, entry)
        if entry == "config.json" or entry.endswith(".safetensors") or \
                entry.endswith(".safetensors.index.json") or not os.path.isfile(path):
            continue
        shutil.copy2(path, os.path.join(dst, entry))
    for stale in os.listdir(dst):
        if stale.endswith(".safetensors") or stale.endswith(".index.json"):
            os.remove(os.path.join(dst, stale))
    with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(dst, "model.safetensors"), out, {"format": "pt"})
    return packed
