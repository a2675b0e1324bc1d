"""Load a Hugging Face MoE checkpoint and generate from it.

    python examples/python/generate.py MODEL_DIR [--backend cpu] [--prompt-ids 1,2,3]

Without a MODEL_DIR argument a tiny random Mixtral checkpoint is written to a
temporary directory first (moert make-test-model), so the example runs
anywhere.  With tokenizer.json in the checkpoint and the `tokenizers` package
installed, --prompt takes text instead of ids.
"""
import argparse
import tempfile

import moert


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="checkpoint directory (default: a tiny random one)")
    p.add_argument("--backend", default="reference", help="cpu, opencl, cuda, cuda:1, reference")
    p.add_argument("--prompt-ids", default="1,2,3,4", help="comma-separated token ids")
    p.add_argument("--prompt", help="text prompt (needs tokenizer.json and `tokenizers`)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            from moert_reference.make_checkpoint import make_checkpoint
            path = tmp + "/tiny-mixtral"
            make_checkpoint("mixtral", path, dtype="bf16", seed=0)
        model = moert.load(path, backend=args.backend, progress=False)
        print(model)
        prompt = args.prompt if args.prompt else [int(t) for t in args.prompt_ids.split(",")]

        tokens = model.generate(prompt, max_new_tokens=args.max_new_tokens)
        print("greedy:  ", tokens)
        sampled = model.generate(prompt, max_new_tokens=args.max_new_tokens, temperature=0.8,
                                 top_p=0.9, seed=7)
        print("sampled: ", sampled)
        print("streamed:", end="")
        for token in model.stream(prompt, max_new_tokens=args.max_new_tokens):
            print(f" {token}", end="", flush=True)
        print()
        return tokens


if __name__ == "__main__":
    main()
