"""Seed corpora for the fuzz targets, generated from the test checkpoints.

    python3 fuzz/make_corpus.py [--out build-fuzz/corpus] [TARGET...]

Writes OUT/<target>/ afresh for each target (default: every one):

  safetensors   small valid files cut from tiny checkpoints of every family
                and storage (bf16, f32, fp8, GPTQ, AWQ, MXFP4) as
                moert_reference.make_checkpoint writes them: a few tensors
                each, raw and in the harness's framed form (header JSON, NUL,
                data), plus one file with every dtype and one full header
  shard_index   model.safetensors.index.json bodies naming the shards the
                harness writes (valid and broken ones), and the index of a
                real sharded test checkpoint
  config        every config.json of moert_reference.configs.CONFIGS, their
                fp8 / GPTQ / AWQ / MXFP4 variants, and the entries of
                ../shared/bench/models.json when that file exists (optional)
  quantization  descriptions (fuzz_quantization.cpp's JSON) of tiny packed
                checkpoints: GPTQ sym / asym / act-order / group -1, AWQ,
                MXFP4 per expert and fused (GPT-OSS), fp8, and a plain one
                quantized at load
  server        inputs of fuzz/python/fuzz_server.py: tokenizer_config.json
                bodies, chat templates, completion and chat request bodies

Beside each corpus, OUT/<target>.dict is a libFuzzer dictionary: the
identifier-like string literals of the code the target feeds (so it follows
the code: config keys, dtype names, quantization parameters) and JSON or
Jinja tokens.  scripts/fuzz.sh passes it as -dict and as MOERT_FUZZ_DICT
(the JSON mutator's words).

The corpora are not committed: generate them (scripts/fuzz.sh does, every
run).  Hand-written seeds that are worth keeping live in fuzz/seeds/<target>/.
"""

import argparse
import copy
import glob
import json
import os
import re
import shutil
import struct
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "fuzz", "python"))

from moert_reference import make_checkpoint as mc  # noqa: E402
from moert_reference import safetensors_io as sio  # noqa: E402
from moert_reference.configs import CONFIGS  # noqa: E402

TARGETS = ("safetensors", "shard_index", "config", "quantization", "server")


class Corpus:
    def __init__(self, directory):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        self.directory = directory
        self.count = 0

    def add(self, name, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        with open(os.path.join(self.directory, name), "wb") as f:
            f.write(data)
        self.count += 1


def shrink(config, layers=1):
    """A config made smaller still: fewer layers, a small vocabulary."""
    c = copy.deepcopy(config)
    c["num_hidden_layers"] = layers
    c["vocab_size"] = 64
    c["max_position_embeddings"] = 64
    if "layer_types" in c:
        c["layer_types"] = c["layer_types"][:layers]
    if "mlp_only_layers" in c:
        c["mlp_only_layers"] = []
    if c.get("rope_scaling") and "original_max_position_embeddings" in c["rope_scaling"]:
        c["rope_scaling"] = dict(c["rope_scaling"], original_max_position_embeddings=16)
    if c.get("first_k_dense_replace", 0) >= layers:
        c["first_k_dense_replace"] = layers - 1
    if c.get("n_routed_experts", 0) > 4:  # DeepSeek, GLM: 4 experts in 2 groups, 2 heads
        c.update(n_routed_experts=4, n_group=2, topk_group=1, num_experts_per_tok=2,
                 num_attention_heads=2, num_key_value_heads=2)
    return c


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def framed(raw):
    """The harness's framed form of a safetensors file: header, NUL, data."""
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8:8 + n].rstrip(b" ") + b"\0" + raw[8 + n:]


# -- checkpoints ------------------------------------------------------------------


def test_checkpoints(tmp):
    """(label, directory) of tiny checkpoints in every storage moert reads."""
    out = []

    def plain(label, arch, dtype, shards=1):
        d = os.path.join(tmp, label)
        mc.make_checkpoint(arch, d, dtype=dtype, shards=shards, seed=1,
                           overrides=shrink(CONFIGS[arch], 1 if arch == "deepseek_v3" else 2))
        out.append((label, d))

    def packed(label, arch, method, **kwargs):
        d = os.path.join(tmp, label)
        config = shrink(CONFIGS[arch])
        mc.make_quantized_checkpoint(arch, d, method, seed=1, overrides=config, **kwargs)
        out.append((label, d))

    plain("mixtral-bf16", "mixtral", "bf16")
    plain("deepseek_v3-fp8", "deepseek_v3", "fp8")
    plain("qwen2_moe-f32-sharded", "qwen2_moe", "f32", shards=2)
    plain("gpt_oss-bf16", "gpt_oss", "bf16")
    packed("mixtral-gptq-g32", "mixtral", "gptq", group_size=32)
    packed("mixtral-gptq-asym-g-1", "mixtral", "gptq", group_size=-1, sym=False)
    packed("qwen3_moe-gptq-act-order", "qwen3_moe", "gptq", group_size=32, desc_act=True)
    packed("llama-awq-g32", "llama", "awq", group_size=32)
    packed("mixtral-awq-g64", "mixtral", "awq", group_size=64)
    packed("qwen3_moe-mxfp4", "qwen3_moe", "mxfp4")
    packed("gpt_oss-mxfp4", "gpt_oss", "mxfp4")
    packed("deepseek_v3-gptq", "deepseek_v3", "gptq", group_size=32)
    return out


def safetensors_files(directory):
    return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                  if n.endswith(".safetensors"))


# -- safetensors ----------------------------------------------------------------------


def make_safetensors(corpus, checkpoints, tmp):
    scratch = os.path.join(tmp, "subset.safetensors")
    for label, directory in checkpoints:
        for path in safetensors_files(directory):
            tensors = sio.read_safetensors_typed(path)
            by_size = sorted(tensors, key=lambda n: (tensors[n][1].nbytes, n))
            small = [n for n in by_size if tensors[n][1].nbytes <= 1024]
            base = label + "-" + os.path.basename(path).replace(".safetensors", "")
            for k in range(3):
                names = small[k * 5:(k + 1) * 5]
                if not names:
                    break
                sio.write_safetensors(scratch, {n: tensors[n] for n in names}, {"format": "pt"})
                raw = file_bytes(scratch)
                corpus.add(f"{base}-{k}.safetensors", raw)
                if k == 0:
                    corpus.add(f"{base}-{k}.framed", framed(raw))
            # One larger tensor on its own (a packed weight, an embedding).
            big = [n for n in by_size if 1024 < tensors[n][1].nbytes <= 8192]
            if big:
                sio.write_safetensors(scratch, {big[-1]: tensors[big[-1]]})
                corpus.add(f"{base}-large.safetensors", file_bytes(scratch))
    # Every dtype moert reads, a scalar and an empty tensor.
    import numpy as np
    every = {
        "f32": ("F32", np.arange(4, dtype=np.float32)),
        "f16": ("F16", np.arange(4, dtype=np.float16)),
        "bf16": ("BF16", np.arange(4, dtype=np.float32)),
        "f8": ("F8_E4M3", np.arange(4, dtype=np.float32)),
        "i8": ("I8", np.arange(-2, 2, dtype=np.int8)),
        "u8": ("U8", np.arange(4, dtype=np.uint8)),
        "i32": ("I32", np.arange(4, dtype=np.int32)),
        "i64": ("I64", np.arange(4, dtype=np.int64)),
        "bool": ("BOOL", np.array([True, False])),
        "scalar": ("F32", np.array(1.5, dtype=np.float32)),
        "empty": ("F32", np.zeros((0, 3), dtype=np.float32)),
    }
    sio.write_safetensors(scratch, every, {"format": "pt", "note": "every dtype"})
    raw = file_bytes(scratch)
    corpus.add("every-dtype.safetensors", raw)
    corpus.add("every-dtype.framed", framed(raw))
    # A whole checkpoint's header without its data (refused: offsets past
    # the end), for the parser's sake.
    label, directory = checkpoints[0]
    corpus.add(f"{label}-header-only.framed", framed(file_bytes(safetensors_files(directory)[0]))
               .split(b"\0", 1)[0] + b"\0")


# -- shard_index ---------------------------------------------------------------------


def make_shard_index(corpus, checkpoints):
    # The shards fuzz_shard_index.cpp writes once per process.
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    valid = {"model.embed_tokens.weight": first, "model.norm.weight": first,
             "lm_head.weight": second, "model.layers.0.mlp.gate.weight": second}

    def index(weight_map, metadata=None):
        body = {"metadata": metadata if metadata is not None else {"total_size": 31},
                "weight_map": weight_map}
        return json.dumps(body, indent=2)

    corpus.add("valid.json", index(valid))
    corpus.add("one-shard.json", index({"model.embed_tokens.weight": first}))
    corpus.add("subdirectory.json", index(dict(valid, extra="sub/model-00003-of-00003.safetensors")))
    corpus.add("symlink.json", index({"model.embed_tokens.weight": "link.safetensors",
                                      "lm_head.weight": second}))
    corpus.add("duplicate.json", index(dict(valid, **{"model.norm.weight": "dup.safetensors"})))
    corpus.add("duplicate-unlisted.json", index({"lm_head.weight": second,
                                                 "model.embed_tokens.weight": first,
                                                 "x": "dup.safetensors"}))
    for shard in ("empty.safetensors", "broken.safetensors", "dir.safetensors",
                  "dangling.safetensors", "missing.safetensors", "/etc/passwd",
                  "../model-00001-of-00002.safetensors", ".", "sub",
                  "model.safetensors.index.json"):
        corpus.add("shard-" + shard.replace("/", "_").replace(".", "_") + ".json",
                   index({"model.embed_tokens.weight": shard}))
    corpus.add("not-a-string.json", index({"model.embed_tokens.weight": 1}))
    corpus.add("metadata-list.json", index(valid, metadata=[]))
    corpus.add("no-weight-map.json", json.dumps({"metadata": {}}))
    corpus.add("empty-map.json", index({}))
    corpus.add("duplicate-key.json", '{"weight_map": {"lm_head.weight": "%s", '
                                     '"lm_head.weight": "%s"}}' % (second, second))
    for label, directory in checkpoints:
        path = os.path.join(directory, sio.INDEX_FILE)
        if os.path.exists(path):
            corpus.add(f"{label}-index.json", file_bytes(path))


# -- config ------------------------------------------------------------------------------


def make_config(corpus):
    configs = {}
    for arch, config in CONFIGS.items():
        configs[arch] = config
        configs[arch + "-fp8"] = mc.build_config(arch, "fp8")
    for method in ("gptq", "awq", "mxfp4"):
        c = copy.deepcopy(CONFIGS["mixtral"])
        c["quantization_config"] = mc.quantization_config(method)
        configs["mixtral-" + method] = c
    # architectures[0] without model_type; transformers 5's rope_parameters.
    c = copy.deepcopy(CONFIGS["qwen3_moe"])
    del c["model_type"]
    configs["qwen3_moe-no-model-type"] = c
    c = copy.deepcopy(CONFIGS["deepseek_v3"])
    c["rope_parameters"] = c.pop("rope_scaling")
    configs["deepseek_v3-rope-parameters"] = c
    bench = os.path.join(ROOT, "..", "shared", "bench", "models.json")
    if os.path.exists(bench):
        with open(bench, encoding="utf-8") as f:
            for name, body in json.load(f).items():
                if isinstance(body, dict) and ("model_type" in body or "architectures" in body):
                    configs["bench-" + name] = body
    for name, config in configs.items():
        corpus.add(name + ".json", json.dumps(config, indent=1))


# -- quantization -------------------------------------------------------------------


def description(directory, load=None):
    """fuzz_quantization.cpp's JSON for a checkpoint directory: its config,
    its tensors' dtypes and shapes, fills that keep what the values must be
    (g_idx k / group, symmetric GPTQ zero points 8)."""
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    q = config.get("quantization_config") or {}
    tensors = {}
    for path in safetensors_files(directory):
        entries, _, _ = sio.read_header(path)
        for name, e in entries.items():
            t = {"dtype": e["dtype"], "shape": e["shape"]}
            if name.endswith(".g_idx"):
                group = q.get("group_size", 128)
                t["fill"] = {"div": group if group > 0 else e["shape"][0]}
            elif name.endswith(".qzeros") and q.get("quant_method") == "gptq" and q.get("sym"):
                t["fill"] = 0x77777777  # every zero point 8, stored as 8 - 1
            elif e["dtype"] == "F8_E4M3" or name.endswith("_scale_inv"):
                t["fill"] = [0.5, -0.25, 1.0, 0.125]
            elif name.endswith("_scales") and e["dtype"] == "U8":
                t["fill"] = [127, 126, 128, 125]  # e8m0 exponents near 1
            tensors[name] = t
    body = {"config": config, "tensors": tensors,
            "load": load or {"dtype": "f32", "precision": "exact"}}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def make_quantization(corpus, checkpoints, tmp):
    for label, directory in checkpoints:
        if label in ("qwen2_moe-f32-sharded", "gpt_oss-bf16"):
            continue
        corpus.add(label + ".json", description(directory))
    # A plain checkpoint packed at load; the same with bf16 activations.
    d = os.path.join(tmp, "mixtral-small")
    mc.make_checkpoint("mixtral", d, dtype="bf16", seed=2, overrides=shrink(CONFIGS["mixtral"]))
    for quantize in ("int4", "int8", "mxfp4"):
        corpus.add(f"mixtral-load-{quantize}.json",
                   description(d, {"quantize": quantize, "dtype": "bf16", "precision": "fast"}))
    corpus.add("mixtral-plain.json", description(d))


# -- server (Python) -------------------------------------------------------------


def make_server(corpus):
    import server_inputs as fuzz_server
    template = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} "
                "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")
    configs = {
        "test-server": {"bos_token": "<s>", "eos_token": {"content": "</s>", "special": True},
                        "chat_template": template},
        "named": {"eos_token": "</s>", "chat_template": [
            {"name": "tool_use", "template": "no"},
            {"name": "default", "template": "{{ messages[0]['content'] }}!"}]},
        "chatml": {"bos_token": None, "eos_token": "<|im_end|>",
                   "chat_template": fuzz_server.CHAT_TEMPLATE},
        "no-template": {"eos_token": "</s>", "pad_token": {"content": "<pad>"}},
    }
    for name, body in configs.items():
        corpus.add(f"0-{name}", b"\x00" + json.dumps(body).encode())
    corpus.add("1-test-server", b"\x01" + template.encode())
    corpus.add("1-chatml", b"\x01" + fuzz_server.CHAT_TEMPLATE.encode())
    completions = {
        "text": {"prompt": "the quick brown fox", "max_tokens": 4, "temperature": 0},
        "ids": {"prompt": [3, 7, 9], "max_tokens": 2, "seed": 5, "top_k": 3, "top_p": 0.9},
        "nested": {"prompt": [[3, 7]], "stop": ["fox", "dog"], "ignore_eos": True},
        "list-of-text": {"prompt": ["the fox"], "stream": True,
                         "stream_options": {"include_usage": True}},
        "unsupported": {"prompt": "fox", "n": 2, "logit_bias": {"1": 1.0}, "echo": True},
        "model": {"model": "tiny", "prompt": [1], "max_tokens": 0, "user": "u"},
    }
    for name, body in completions.items():
        corpus.add(f"2-{name}", b"\x02" + json.dumps(body).encode())
    chats = {
        "plain": {"messages": [{"role": "user", "content": "the quick brown fox"}],
                  "max_completion_tokens": 3},
        "system": {"messages": fuzz_server.CONVERSATIONS[1], "temperature": 0.7, "seed": 1},
        "tools": {"messages": fuzz_server.CONVERSATIONS[2], "stream": True},
        "parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "fox"},
                                                            {"type": "text", "text": "dog"}]}],
                  "response_format": {"type": "text"}},
        "image": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    }
    for name, body in chats.items():
        corpus.add(f"3-{name}", b"\x03" + json.dumps(body).encode())


# -- dictionaries --------------------------------------------------------------

DICT_SOURCES = {
    "safetensors": ["runtime/src/safetensors.cpp"],
    "shard_index": ["runtime/src/safetensors.cpp", "fuzz/fuzz_shard_index.cpp"],
    "config": ["runtime/src/models/architecture.cpp", "runtime/src/models/hf_config.cpp"],
    "quantization": ["runtime/src/models/*.cpp", "runtime/src/model.cpp"],
    "server": ["python/moert/server.py", "fuzz/python/server_inputs.py"],
}
JSON_TOKENS = ["{", "}", "[", "]", ":", ",", "null", "true", "false", "-1", "0", "1", "8", "32",
               "128", "1e308", "-0", "2147483648", "4294967296", "9223372036854775807",
               "18446744073709551615", "\\u0000"]
JINJA_TOKENS = ["{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "for", "in", "endfor", "if",
                "elif", "else", "endif", "set", "macro", "endmacro", "call", "namespace",
                "loop.index", "range", "|tojson", "|length", "|trim", "|string", "is defined",
                "raise_exception", "strftime_now", "messages", "message", "add_generation_prompt",
                "bos_token", "eos_token", "generation", "endgeneration", "break", "continue"]


def write_dict(path, target):
    words = set(JINJA_TOKENS if target == "server" else JSON_TOKENS)
    if target == "server":
        words |= set(JSON_TOKENS)
    for pattern in DICT_SOURCES[target]:
        for source in glob.glob(os.path.join(ROOT, pattern)):
            with open(source, encoding="utf-8") as f:
                text = f.read()
            for literal in re.findall(r'"([A-Za-z_][A-Za-z0-9_.\-]{1,40})"', text):
                words.add(literal)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# libFuzzer dictionary for fuzz_{target} (written by fuzz/make_corpus.py)\n")
        for word in sorted(words):
            escaped = "".join(c if c.isprintable() and c not in '\\"' else "\\x%02x" % ord(c)
                              for c in word)
            f.write(f'"{escaped}"\n')
    return len(words)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "build-fuzz", "corpus"))
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="any of " + ", ".join(TARGETS) + " (default: all)")
    args = parser.parse_args(argv)
    targets = args.targets or TARGETS
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target '{t}' (targets: {', '.join(TARGETS)})")
    with tempfile.TemporaryDirectory(prefix="moert-corpus-") as tmp:
        checkpoints = None
        if {"safetensors", "shard_index", "quantization"} & set(targets):
            checkpoints = test_checkpoints(tmp)
        for target in targets:
            corpus = Corpus(os.path.join(args.out, target))
            if target == "safetensors":
                make_safetensors(corpus, checkpoints, tmp)
            elif target == "shard_index":
                make_shard_index(corpus, checkpoints)
            elif target == "config":
                make_config(corpus)
            elif target == "quantization":
                make_quantization(corpus, checkpoints, tmp)
            else:
                make_server(corpus)
            words = write_dict(os.path.join(args.out, target + ".dict"), target)
            print(f"make_corpus: {corpus.count:4d} inputs in {corpus.directory}, "
                  f"{words} words in {target}.dict")


if __name__ == "__main__":
    main()
