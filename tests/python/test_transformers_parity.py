"""moert against transformers' own model classes, where PyTorch and transformers
are installed (they are not needed for CI; this module skips without them).

Each tiny f32 checkpoint is loaded by transformers' AutoModelForCausalLM and by
moert; the logits of the prompt must agree to 1e-4 of the logit scale (both
compute in f32; the difference is summation order only).
"""

import os
import pathlib
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: transformers parity not checked")
transformers = pytest.importorskip("transformers", reason="transformers is not installed: parity not checked")

from moert_reference import make_checkpoint  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPT = [3, 17, 101, 7, 42, 250, 9, 64]
ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "llama", "mistral", "qwen2",
         pytest.param("deepseek_v2", marks=pytest.mark.skip(
             reason="transformers releases before PR #47435 omit DeepSeek-V2's YaRN m^2 softmax "
                    "factor, which moert applies (the model's defined behaviour)"))]


def moert_logits(model_dir, tmp_path):
    cli = os.environ.get("MOERT_CLI") or str(ROOT / "build" / "bin" / "moert")
    if not os.path.exists(cli):
        pytest.skip(f"the moert CLI is not built ({cli})")
    out = tmp_path / "logits.npy"
    proc = subprocess.run([cli, "run", str(model_dir), "--prompt-ids", ",".join(map(str, PROMPT)),
                           "--max-new-tokens", "1", "--logits-out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return np.load(out).astype(np.float64)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch, tmp_path):
    d = tmp_path / arch
    make_checkpoint.make_checkpoint(arch, str(d), dtype="f32", seed=11)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(d), torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        want = model(torch.tensor([PROMPT])).logits[0].double().numpy()
    got = moert_logits(d, tmp_path)
    err = float((np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)).max())
    assert err <= 1e-4, f"{arch}: logits differ from transformers by {err:.3g}"
