# Writes bench-moe-s (../shared/bench/models.json) with random N(0, 0.02²) weights
# and unit norms, as moert-bench generates them, as a GGUF file for llama-bench:
#   python3 make_gguf.py f32|f16|bf16 OUT.gguf [--vocab]   (needs `pip install gguf`)
# --vocab writes a vocabulary (SentencePiece kind: <unk>, <s>, </s>, then the
# words "w3" ... "w31999"), which llama-server needs to turn tokens into
# text; llama-bench runs without one.
# The values differ from moert-bench's (another generator); the shapes, dtypes
# and bytes read per token are the same, which is what the speed depends on.
import sys

import gguf
import numpy as np

dtype, out = sys.argv[1], sys.argv[2]
vocab = "--vocab" in sys.argv[3:]
V, H, I, L, NH, NKV, E, K = 32000, 1024, 2816, 8, 16, 4, 8, 2
HD = H // NH
w = gguf.GGUFWriter(out, "llama")
w.add_context_length(4096); w.add_embedding_length(H); w.add_block_count(L)
w.add_feed_forward_length(I); w.add_head_count(NH); w.add_head_count_kv(NKV)
w.add_rope_freq_base(1e6); w.add_layer_norm_rms_eps(1e-5); w.add_expert_count(E)
w.add_expert_used_count(K); w.add_rope_dimension_count(HD); w.add_vocab_size(V)
if vocab:
    w.add_tokenizer_model("llama")
    pieces = ["<unk>", "<s>", "</s>"] + [f"\u2581w{i}" for i in range(3, V)]
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * V)
    w.add_token_types([2, 3, 3] + [1] * (V - 3))  # unknown, control, control, normal
    w.add_unk_token_id(0); w.add_bos_token_id(1); w.add_eos_token_id(2)
else:
    w.add_tokenizer_model("none")
ftype = {"f32": 0, "f16": 1, "bf16": 32}[dtype]
w.add_file_type(ftype)
rng = np.random.default_rng(0)
def mat(*shape):
    a = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    if dtype == "f32": return a, None
    if dtype == "f16": return a.astype(np.float16), None
    u = a.view(np.uint32); r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r, gguf.GGMLQuantizationType.BF16
def add(name, *shape):
    a, raw = mat(*shape)
    w.add_tensor(name, a, raw_dtype=raw)
def norm(name, n):
    w.add_tensor(name, np.ones(n, dtype=np.float32))
add("token_embd.weight", V, H); norm("output_norm.weight", H); add("output.weight", V, H)
for i in range(L):
    p = f"blk.{i}."
    norm(p + "attn_norm.weight", H); norm(p + "ffn_norm.weight", H)
    add(p + "attn_q.weight", NH * HD, H); add(p + "attn_k.weight", NKV * HD, H)
    add(p + "attn_v.weight", NKV * HD, H); add(p + "attn_output.weight", H, NH * HD)
    w.add_tensor(p + "ffn_gate_inp.weight", (rng.standard_normal((E, H), dtype=np.float32) * 0.02))
    add(p + "ffn_gate_exps.weight", E, I, H); add(p + "ffn_up_exps.weight", E, I, H)
    add(p + "ffn_down_exps.weight", E, H, I)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print("wrote", out)
