"""Whole models: moert (through its CLI) against the independent NumPy reference.

For every architecture a tiny random checkpoint in Hugging Face layout is
written by moert_reference.make_checkpoint, moert prefills a prompt and decodes
greedily with its KV cache, and every logit row it produced is compared with
the NumPy forward pass over the same tokens (which recomputes the whole prefix,
so the KV cache is checked too).  The greedy tokens must be identical.
"""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from moert_reference import make_checkpoint, reference, safetensors_io

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
         "deepseek_v2_grouped", "deepseek_v3", "llama", "mistral", "qwen2", "gpt_oss",
         "glm4_moe"]
PROMPT = [3, 17, 101, 7, 42, 250, 9, 64]
NEW_TOKENS = 32


def cli():
    path = os.environ.get("MOERT_CLI") or str(ROOT / "build" / "bin" / "moert")
    if not os.path.exists(path):
        pytest.skip(f"the moert CLI is not built ({path}); build first or set MOERT_CLI")
    return path


def run_moert(model_dir, tmp_path, *extra, check=True, new_tokens=NEW_TOKENS):
    """Runs `moert run`; returns (tokens, logits rows, completed process)."""
    out = tmp_path / "logits.npy"
    cmd = [cli(), "run", str(model_dir), "--prompt-ids", ",".join(map(str, PROMPT)),
           "--max-new-tokens", str(new_tokens), "--logits-out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if not check:
        return None, None, proc
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("tokens:"))
    tokens = [int(t) for t in line.split()[1:]]
    return tokens, np.load(out), proc


def scaled_error(got, want):
    """Largest |got - want| over the largest |want|, per row, worst row."""
    err = np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)
    return float(err.max())


def compare_with_reference(model_dir, tmp_path, tolerance, *extra):
    tokens, rows, _ = run_moert(model_dir, tmp_path, *extra)
    ref = reference.load(str(model_dir))
    want_tokens = ref.greedy(PROMPT, NEW_TOKENS)
    # Rows: the prompt's, then one per fed generated token.
    fed = PROMPT + tokens[:-1]
    want = ref.forward(fed)
    assert rows.shape == want.shape
    err = scaled_error(rows.astype(np.float64), want)
    assert err <= tolerance, f"logits differ by {err:.3g} (tolerance {tolerance})"
    return tokens, want_tokens, err


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_checkpoint_matches_reference(arch, tmp_path):
    # f32 weights, f32 activations against a float64 reference: only f32
    # rounding separates them (1e-4 of the logit scale is ~1000 f32 ulps,
    # room for a few layers of accumulated rounding; a real bug is >1e-2).
    d = tmp_path / arch
    make_checkpoint.make_checkpoint(arch, str(d), dtype="f32", seed=1)
    tokens, want_tokens, _ = compare_with_reference(d, tmp_path, 1e-4)
    assert tokens == want_tokens


@pytest.mark.parametrize("arch", ["mixtral", "qwen3_moe", "deepseek_v2"])
def test_bf16_checkpoint_matches_reference(arch, tmp_path):
    # bf16 weights are used as stored; the reference widens the same values,
    # so with f32 activations the f32 tolerance still applies.
    d = tmp_path / arch
    make_checkpoint.make_checkpoint(arch, str(d), dtype="bf16", seed=2)
    tokens, want_tokens, _ = compare_with_reference(d, tmp_path, 1e-4)
    assert tokens == want_tokens


def test_bf16_activations_within_bf16_tolerance(tmp_path):
    # bf16 activations round every intermediate to 8 significant bits (2^-9
    # relative); through a few layers that compounds to about 1e-2 of the
    # logit scale (measured ~6e-3), so 3e-2 is the stated bound.  Only the
    # prompt's rows are compared: over a long generation a near-tie in the
    # router can pick another expert under bf16 rounding, a legitimate
    # discontinuity that no tolerance on logits describes.
    d = tmp_path / "mixtral"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="bf16", seed=3)
    _, rows, _ = run_moert(d, tmp_path, "--dtype", "bf16", new_tokens=1)
    want = reference.load(str(d)).forward(PROMPT)
    err = scaled_error(rows.astype(np.float64), want)
    assert err <= 3e-2, f"logits differ by {err:.3g}"


def test_fp8_checkpoint_matches_dequantised_reference(tmp_path):
    # DeepSeek-V3 fp8 blocks: moert dequantises inside the kernels, the
    # reference dequantises the same bytes up front; the weights are then
    # identical and the f32 tolerance applies.
    d = tmp_path / "v3fp8"
    make_checkpoint.make_checkpoint("deepseek_v3", str(d), dtype="fp8", seed=4)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["quantization_config"]["weight_block_size"] == [128, 128]
    tokens, want_tokens, _ = compare_with_reference(d, tmp_path, 1e-4)
    assert tokens == want_tokens


def test_sharded_equals_single_file(tmp_path):
    single, sharded = tmp_path / "one", tmp_path / "three"
    make_checkpoint.make_checkpoint("qwen2_moe", str(single), dtype="bf16", seed=5)
    make_checkpoint.make_checkpoint("qwen2_moe", str(sharded), dtype="bf16", seed=5, shards=3)
    assert (sharded / "model.safetensors.index.json").exists()
    t1, r1, _ = run_moert(single, tmp_path)
    t2, r2, _ = run_moert(sharded, tmp_path)
    assert t1 == t2
    assert np.array_equal(r1, r2)


def test_unknown_architecture_lists_supported(tmp_path):
    d = tmp_path / "m"
    make_checkpoint.make_checkpoint("llama", str(d), dtype="f32", seed=6)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    _, _, proc = run_moert(d, tmp_path, check=False)
    assert proc.returncode != 0
    assert "unknown model_type 'gpt2'" in proc.stderr
    assert "supported: deepseek_v2, deepseek_v3, glm4_moe, gpt_oss, llama" in proc.stderr


def test_wrong_shape_names_the_tensor(tmp_path):
    d = tmp_path / "m"
    make_checkpoint.make_checkpoint("llama", str(d), dtype="f32", seed=7)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] += 8
    (d / "config.json").write_text(json.dumps(cfg))
    _, _, proc = run_moert(d, tmp_path, check=False)
    assert proc.returncode != 0
    assert "tensor 'model.layers.0.mlp.gate_proj.weight'" in proc.stderr
    assert "config.json implies shape" in proc.stderr


def test_missing_tensor_names_it(tmp_path):
    d = tmp_path / "m"
    make_checkpoint.make_checkpoint("mixtral", str(d), dtype="f32", seed=8)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_local_experts"] += 1  # the checkpoint has one expert fewer
    (d / "config.json").write_text(json.dumps(cfg))
    _, _, proc = run_moert(d, tmp_path, check=False)
    assert proc.returncode != 0
    n = cfg["num_local_experts"] - 1
    assert f"block_sparse_moe.gate.weight" in proc.stderr or f"experts.{n}." in proc.stderr


def test_context_overflow_is_refused(tmp_path):
    d = tmp_path / "m"
    make_checkpoint.make_checkpoint("llama", str(d), dtype="f32", seed=9)
    _, _, proc = run_moert(d, tmp_path, "--max-context", "4", check=False)
    assert proc.returncode != 0
    assert "context overflow" in proc.stderr


def _with_quantization(tmp_path, arch, dtype, quantization, seed):
    d = tmp_path / "m"
    make_checkpoint.make_checkpoint(arch, str(d), dtype=dtype, seed=seed)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = quantization
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("method", ["bitsandbytes", "quanto", "hqq"])
def test_a_quant_method_moert_does_not_read_is_refused_by_name(tmp_path, method):
    # A bitsandbytes config on a checkpoint: its packed tensors must never run as plain weights.
    d = _with_quantization(tmp_path, "llama", "f32", {"quant_method": method, "bits": 4}, 10)
    _, _, proc = run_moert(d, tmp_path, check=False)
    assert proc.returncode != 0
    assert f"'quantization_config.quant_method' is '{method}', which moert does not read" in proc.stderr
    assert "config.json" in proc.stderr


@pytest.mark.parametrize("method", ["gptq", "awq", "mxfp4"])
def test_a_packed_method_over_plain_tensors_is_refused_by_name(tmp_path, method):
    # moert reads GPTQ, AWQ and MXFP4 (tests/python/test_quantized_checkpoints.py),
    # but a config declaring one over plain tensors is a mismatch, never run.
    d = _with_quantization(tmp_path, "llama", "f32", {"quant_method": method, "bits": 4}, 10)
    _, _, proc = run_moert(d, tmp_path, check=False)
    assert proc.returncode != 0
    assert f"'quantization_config.quant_method' is '{method}' but no tensor of" in proc.stderr
    assert "the config and the weights disagree" in proc.stderr
    assert "config.json" in proc.stderr


def test_an_fp8_config_on_plain_weights_is_refused(tmp_path):
    d = _with_quantization(tmp_path, "llama", "bf16",
                           {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}, 11)
    _, _, proc = run_moert(d, tmp_path, check=False)
    assert proc.returncode != 0
    assert "is 'fp8' but no tensor of" in proc.stderr
    assert "is F8_E4M3: the config and the weights disagree" in proc.stderr


def test_an_fp8_block_size_moert_does_not_read_is_refused(tmp_path):
    d = tmp_path / "m"
    make_checkpoint.make_checkpoint("deepseek_v3", str(d), dtype="fp8", seed=12)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["weight_block_size"] = [64, 64]
    (d / "config.json").write_text(json.dumps(cfg))
    _, _, proc = run_moert(d, tmp_path, check=False)
    assert proc.returncode != 0
    assert "'quantization_config.weight_block_size' is [64,64]; moert reads [128, 128] blocks" in proc.stderr


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("arch", ["qwen2_moe", "gpt_oss", "glm4_moe", "mixtral"])
def test_fp8_on_every_linear(arch, backend, tmp_path):
    # Every 2-D weight a linear reads stored fp8 with its weight_scale_inv:
    # the attention and MLP projections (as fp8 checkpoints have them), and
    # also the routers, Qwen2-MoE's shared-expert gate (a float input of moe,
    # dequantised at load) and lm_head.  Only the embedding, norms, biases,
    # sinks and GPT-OSS's fused 3-D experts stay as they are.  Logits match
    # the reference, which dequantises the same bytes.
    d = tmp_path / (arch + "_fp8")
    make_checkpoint.make_checkpoint(arch, str(d), dtype="f32", seed=13)
    typed = safetensors_io.read_checkpoint_typed(str(d))
    converted = []
    for name in list(typed):
        dtype, array = typed[name]
        if array.ndim != 2 or name == "model.embed_tokens.weight" or not name.endswith(".weight"):
            continue
        q, scale_inv = make_checkpoint.quantize_fp8_blockwise(
            safetensors_io.widen(dtype, array).astype(np.float32))
        typed[name] = ("F8_E4M3", q)
        typed[name + "_scale_inv"] = ("F32", scale_inv)
        converted.append(name)
    assert "lm_head.weight" in converted
    assert any(n.endswith(("mlp.gate.weight", "mlp.router.weight", "block_sparse_moe.gate.weight"))
               for n in converted)
    for stale in d.glob("*.safetensors"):
        stale.unlink()
    safetensors_io.write_safetensors(str(d / "model.safetensors"), typed, {"format": "pt"})
    tokens, want_tokens, _ = compare_with_reference(d, tmp_path, 1e-4, "--backend", backend,
                                                    "--precision", "exact")
    assert tokens == want_tokens


def test_fp8_shared_expert_gate_is_read(tmp_path):
    # Qwen2-MoE with every layer linear fp8 and the shared-expert gate fp8
    # too (with its weight_scale_inv): the gate, a float input of moe, is
    # dequantised at load; logits match the reference, which dequantises the
    # same bytes.
    d = tmp_path / "q2fp8"
    make_checkpoint.make_checkpoint("qwen2_moe", str(d), dtype="fp8", seed=13)
    typed = safetensors_io.read_checkpoint_typed(str(d))
    gates = [n for n in typed if n.endswith("shared_expert_gate.weight")]
    assert gates
    for name in gates:
        dtype, array = typed[name]
        q, scale_inv = make_checkpoint.quantize_fp8_blockwise(
            safetensors_io.widen(dtype, array).astype(np.float32))
        typed[name] = ("F8_E4M3", q)
        typed[name + "_scale_inv"] = ("F32", scale_inv)
    for stale in d.glob("*.safetensors"):
        stale.unlink()
    safetensors_io.write_safetensors(str(d / "model.safetensors"), typed, {"format": "pt"})
    tokens, want_tokens, _ = compare_with_reference(d, tmp_path, 1e-4)
    assert tokens == want_tokens


def test_info_lists_the_families_and_says_what_is_skipped(tmp_path):
    out = subprocess.run([cli(), "info", "--no-progress"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    types = next(l for l in out.stdout.splitlines() if l.startswith("model types: "))
    for family in ARCHS:
        if not family.endswith("_grouped"):
            assert family in types, types
    # GLM-4.5's multi-token-prediction layer is stored, skipped, and said so.
    d = tmp_path / "glm"
    make_checkpoint.make_checkpoint("glm4_moe", str(d), dtype="bf16", seed=3)
    out = subprocess.run([cli(), "info", str(d), "--no-roofline", "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("note: num_nextn_predict_layers = 1: the multi-token-prediction layer "
            "model.layers.3.* is not loaded") in out.stdout, out.stdout
