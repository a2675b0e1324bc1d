"""PyTorch + transformers on the shapes of ../shared/bench/models.json, for
the side-by-side with moert-bench on a GPU (bench/gpu/run.sh).

    python3 bench/gpu/transformers_baseline.py --config mixtral-8x7b --json out.json

Builds the model from the config entry with random weights directly on the
GPU in bf16 (no checkpoint), then times, after one warm-up each:
  * prefill: model(ids) over --prompt tokens (the logits of every position,
    as moert-bench's pp test returns them), tokens/s;
  * decode: generate() of --new tokens after a --prompt-token prompt, greedy,
    with the KV cache, eager (transformers' default), tokens/s and ms/token.
"""
import argparse
import json
import os
import pathlib
import time

import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_config(name, models_json):
    entry = dict(json.load(open(models_json))[name])
    entry.pop("tier", None)
    return transformers.AutoConfig.for_model(entry.pop("model_type"), **entry)


def device_ceilings():
    """The GPU's device-to-device copy bandwidth (bytes read + written per
    second, a 4 GiB buffer) and bf16 GEMM rate (8192^3): the ceilings the
    decode and prefill targets are stated against."""
    src = torch.empty(1 << 31, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    def best(fn, n=5):
        fn(); torch.cuda.synchronize()
        t = []
        for _ in range(n):
            t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); t.append(time.perf_counter() - t0)
        return min(t)
    copy_s = best(lambda: dst.copy_(src))
    gemm_s = best(lambda: a @ b)
    out = {"device_copy_bytes_s": 2 * src.numel() * 2 / copy_s, "bf16_gemm_flops": 2 * 8192 ** 3 / gemm_s}
    del src, dst, a, b
    torch.cuda.empty_cache()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--models-json", default=str(ROOT.parent / "shared" / "bench" / "models.json"))
    p.add_argument("--prompt", type=int, default=2048)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()

    config = load_config(args.config, args.models_json)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.eval()
    vocab = config.vocab_size
    ids = torch.randint(0, vocab, (1, args.prompt), device="cuda")
    result = {"config": args.config, "torch": torch.__version__,
              "transformers": transformers.__version__, "device": torch.cuda.get_device_name(),
              "params": sum(t.numel() for t in model.parameters()), **device_ceilings()}
    with torch.inference_mode():
        model(ids[:, :16])  # warm-up
        times = []
        for _ in range(args.repeat):
            torch.cuda.synchronize(); t0 = time.perf_counter()
            model(ids)
            torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
        result["prefill_tok_s"] = args.prompt / min(times)
        short = ids[:, :32]
        kw = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, use_cache=True)
        model.generate(short, **kw)  # warm-up
        times = []
        for _ in range(args.repeat):
            torch.cuda.synchronize(); t0 = time.perf_counter()
            model.generate(short, **kw)
            torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
        # generate() includes the 32-token prefill, a small part of the time.
        result["decode_tok_s"] = args.new / min(times)
        result["decode_ms_per_token"] = 1e3 * min(times) / args.new
    result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
