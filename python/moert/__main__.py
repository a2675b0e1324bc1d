"""The moert command line: ``python -m moert`` (also installed as ``moert``).

    moert info [MODEL] [--no-roofline]      backends found, plugins that failed; a model's summary
                                            with the host CPU's decode roofline
    moert run MODEL [--backend NAME] [--prompt TEXT | --prompt-ids 1,2,3] [--max-new-tokens N]
                    [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop IDS]
                    [--no-progress]
    moert bench MODEL [--backend cpu,opencl,cuda] [--prompt-tokens N] [--new-tokens M]
                      [--repeat R] [--dtype f32] [--json] [--plot FILE.png]
    moert make-test-model ARCH DIR [--dtype f32|bf16|fp8] [--shards N] [--seed S]
"""

import argparse
import sys
import time

import moert


def _ids(text):
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers")


def _gib(n):
    return f"{n / 2**30:.1f} GiB" if n else "?"


def cmd_info(args):
    for b in moert.backends():
        devices = ", ".join(f"{d['name']} [{d['kind']}, {_gib(d['total_memory'])}]" for d in b["devices"])
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"{b['name']:<10} {state:<12} {devices}  ({b['path']})")
        for i, d in enumerate(b["devices"]):
            if d.get("capabilities"):
                print(f"{'':<10} {b['name']}:{i} supports: {d['capabilities']}")
    for f in moert.plugin_failures():
        print(f"failed     {f['path']}: {f['reason']}")
    if args.model:
        model = moert.load(args.model, backend=args.backend)
        i = model.info
        print(f"model: {i['architecture']} ({i['model_type']}), {i['num_layers']} layers, hidden "
              f"{i['hidden_size']}, vocab {i['vocab_size']}, experts {i['num_experts']} "
              f"(top-{i['experts_per_token']}), weights {i['weight_dtype']}, max context {i['max_context']}")
        print(model.summary(roofline=not args.no_roofline)["text"], end="")
    return 0


def cmd_run(args):
    t0 = time.perf_counter()
    model = moert.load(args.model, backend=args.backend, dtype=args.dtype, max_context=args.max_context,
                       strict=args.strict, progress=False if args.no_progress else None)
    load_s = time.perf_counter() - t0
    if args.prompt is not None:
        prompt = model.encode(args.prompt)
    else:
        prompt = args.prompt_ids if args.prompt_ids is not None else [1]
    times, tokens = [], []
    stream = model.stream(prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop)
    while True:
        t0 = time.perf_counter()
        token = next(stream, None)
        if token is None:
            break
        times.append(time.perf_counter() - t0)
        tokens.append(token)
    print("tokens:", " ".join(map(str, tokens)))
    if args.prompt is not None:
        print("text:", model.decode(tokens))
    decode = sorted(times[1:])
    p50 = decode[len(decode) // 2] * 1e3 if decode else 0.0
    prefill = times[0] * 1e3 if times else 0.0
    print(f"load {load_s * 1e3:.1f} ms; prefill {len(prompt)} tokens {prefill:.2f} ms; "
          f"decode {len(decode)} steps, {p50:.3f} ms/token p50 on {args.backend}")
    return 0


def cmd_bench(args):
    backends = [b for b in args.backend.split(",") if b] if args.backend else None
    report = moert.compare(args.model, backends=backends, prompt_tokens=args.prompt_tokens,
                           new_tokens=args.new_tokens, repeat=args.repeat, dtype=args.dtype)
    print(report.to_json(indent=2) if args.json else report)
    if args.plot:
        report.plot(args.plot)
    return 0 if all(r.get("agrees") for r in report.rows) else 1


def cmd_make_test_model(args):
    try:
        from moert_reference import make_checkpoint  # type: ignore  # beside the package
    except ImportError:
        print("moert: make-test-model needs the moert_reference package (python/moert_reference)",
              file=sys.stderr)
        return 1
    make_checkpoint.make_checkpoint(args.arch, args.dir, dtype=args.dtype, shards=args.shards, seed=args.seed)
    print(f"wrote a random {args.arch} checkpoint ({args.dtype}) to {args.dir}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="moert", description="moert: MoE inference on any backend")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="backends found; a model's summary")
    p.add_argument("model", nargs="?")
    p.add_argument("--backend", default="reference")
    p.add_argument("--no-roofline", action="store_true",
                   help="skip measuring the host's read bandwidth (about a second)")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("run", help="prefill a prompt and decode")
    p.add_argument("model")
    p.add_argument("--backend", default="reference")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="prompt text (needs tokenizer.json and the tokenizers package)")
    prompt.add_argument("--prompt-ids", type=_ids, help="prompt token ids, comma-separated (default: 1)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", type=_ids, default=[])
    p.add_argument("--dtype", default="f32")
    p.add_argument("--max-context", type=int, default=0)
    p.add_argument("--strict", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no loading bar (default: on a terminal)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("bench", help="compare latency across backends")
    p.add_argument("model")
    p.add_argument("--backend", default="", help="comma-separated devices (default: every available one)")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", default="f32")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", default="")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("make-test-model", help="write a tiny random checkpoint in Hugging Face layout")
    p.add_argument("arch")
    p.add_argument("dir")
    p.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "fp8"])
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_test_model)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except moert.Error as e:
        print(f"moert: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
