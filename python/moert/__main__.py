"""The moert command line: ``python -m moert`` (also installed as ``moert``).

    moert info [MODEL] [--backend NAME] [--quantize int8|int4|mxfp4] [--no-roofline]
                    [--no-progress]
                    backends found, plugins that failed; a model's summary with the host
                    CPU's decode roofline
    moert run MODEL [--backend NAME] [--prompt TEXT | --prompt-ids 1,2,3] [--max-new-tokens N]
                    [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop IDS]
                    [--dtype f32|bf16|f16] [--quantize int8|int4|mxfp4] [--max-context N]
                    [--strict] [--logits-out FILE.npy] [--no-progress]
    moert bench MODEL [--backend cpu,opencl,cuda] [--prompt-tokens N] [--new-tokens M]
                      [--repeat R] [--dtype f32] [--quantize int8|int4|mxfp4]
                      [--precision fast|exact] [--json] [--plot FILE.png]
    moert make-test-model ARCH DIR [--dtype f32|bf16|fp8] [--shards N] [--seed S]
                      [--quant gptq|awq|mxfp4 [--group-size G] [--asym]]
    moert quantize IN OUT --to int4 [--group-size G]
                      a GPTQ v1 checkpoint (4-bit, symmetric, round to nearest) of a float
                      or fp8 one, for moert and other GPTQ readers
    moert serve MODEL [--backend cpu] [--host 127.0.0.1] [--port 8000] [--model-name NAME]
                      [--max-sequences 16] [--kv-cache-tokens N] [--max-context N]
                      [--step-tokens 512] [--max-waiting N] [--dtype f32|bf16|f16]
                      [--quantize int8|int4|mxfp4] [--precision fast|exact]
                      [--kv-dtype f32|bf16|f16|fp8] [--shutdown-timeout S]
                      an OpenAI-compatible HTTP server (/v1/completions,
                      /v1/chat/completions) with continuous batching; needs fastapi,
                      uvicorn and jinja2 (moert.server)

--quantize packs the float (or fp8) linear weights inside the decoder layers at
load (moert.load's quantize); GPTQ, AWQ and MXFP4 checkpoints load as stored.

info and run are the runtime's commands (runtime/cli/commands.h, the same as
the moert binary's), given text prompts through the checkpoint's tokenizer and
a loading bar here.
"""

import argparse
import functools
import sys

import moert

from . import _moert, _progress, text as _text

# Commands the runtime implements (runtime/cli/commands.h): the same code as
# the moert binary's, with text prompts and the loading bar added here.
RUNTIME_COMMANDS = ("info", "run")


@functools.lru_cache(maxsize=None)
def _tokenizer(directory):
    return _text.load_tokenizer(directory)


def _encode(directory, text):
    return list(_tokenizer(directory).encode(text).ids)


def _decode(directory, ids):
    return _tokenizer(directory).decode(list(ids), skip_special_tokens=True)


def run_runtime_command(argv):
    """`moert info ...` / `moert run ...`: argv without the program name."""
    callback = _progress.resolve(None)  # a bar when stderr is a terminal
    try:
        sys.stdout.flush()
        return _moert.command_line(list(argv), _encode, _decode, callback)
    finally:
        _progress.close(callback)


def cmd_bench(args):
    backends = [b for b in args.backend.split(",") if b] if args.backend else None
    report = moert.compare(args.model, backends=backends, prompt_tokens=args.prompt_tokens,
                           new_tokens=args.new_tokens, repeat=args.repeat, dtype=args.dtype,
                           quantize=args.quantize, precision=args.precision)
    print(report.to_json(indent=2) if args.json else report)
    if args.plot:
        report.plot(args.plot)
    # Exit 1 when a device failed, or disagreed with the reference under exact
    # products; with precision "fast" a routed model may legitimately pick
    # other experts for a token (a rounding tips a near-tie), which the
    # report shows but which is not a failure.
    failed = any("error" in r for r in report.rows)
    disagree = args.precision == "exact" and not all(r.get("agrees") for r in report.rows)
    return 1 if failed or disagree else 0


def cmd_make_test_model(args):
    try:
        from moert_reference import make_checkpoint  # type: ignore  # beside the package
    except ImportError:
        print("moert: make-test-model needs the moert_reference package (python/moert_reference)",
              file=sys.stderr)
        return 1
    if args.quant:
        make_checkpoint.make_quantized_checkpoint(args.arch, args.dir, args.quant,
                                                  group_size=args.group_size, sym=not args.asym,
                                                  seed=args.seed)
        print(f"wrote a random {args.arch} checkpoint ({args.quant}) to {args.dir}")
        return 0
    make_checkpoint.make_checkpoint(args.arch, args.dir, dtype=args.dtype, shards=args.shards, seed=args.seed)
    print(f"wrote a random {args.arch} checkpoint ({args.dtype}) to {args.dir}")
    return 0


def cmd_quantize(args):
    try:
        from moert_reference import quantize_checkpoint  # type: ignore  # beside the package
    except ImportError:
        print("moert: quantize needs the moert_reference package (python/moert_reference)",
              file=sys.stderr)
        return 1
    try:
        packed = quantize_checkpoint.quantize_checkpoint(args.src, args.dst, args.to,
                                                         args.group_size)
    except (ValueError, OSError) as e:
        print(f"moert quantize: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: {len(packed)} linear weights as GPTQ int4 "
          f"(group size {args.group_size}), the rest as stored")
    return 0


def cmd_serve(args):
    try:
        from . import server
    except ImportError as e:
        print(f"moert serve needs fastapi, uvicorn and jinja2 (pip install 'moert[serve]', or "
              f"pip install fastapi uvicorn jinja2): {e}", file=sys.stderr)
        return 1
    return server.serve(args)


def add_serve_parser(sub):
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server with continuous batching",
                       description="Serves MODEL over HTTP: /v1/completions, "
                                   "/v1/chat/completions, /v1/models, /health (moert.server).")
    p.add_argument("model", help="checkpoint directory (with tokenizer.json)")
    p.add_argument("--backend", default="cpu", help="device to run on (default: cpu)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default="",
                   help="the model's name in the API (default: the directory's name)")
    p.add_argument("--max-sequences", type=int, default=16,
                   help="requests running at once; more wait in the queue (default: 16)")
    p.add_argument("--kv-cache-tokens", type=int, default=0,
                   help="positions of the KV cache the running requests share, each reserving "
                        "its prompt + max_tokens (0, the default: --max-context)")
    p.add_argument("--max-context", type=int, default=0,
                   help="positions of one sequence (0: min(max_position_embeddings, 4096))")
    p.add_argument("--step-tokens", type=int, default=512,
                   help="tokens one engine step runs at most (default: 512)")
    p.add_argument("--max-waiting", type=int, default=0,
                   help="answer 503 while this many requests wait (0, the default: no limit)")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
    p.add_argument("--quantize", default="", choices=["", "int8", "int4", "mxfp4"])
    p.add_argument("--precision", default="fast", choices=["fast", "exact"])
    p.add_argument("--kv-dtype", default="", choices=["", "f32", "bf16", "f16", "fp8"])
    p.add_argument("--shutdown-timeout", type=float, default=5.0,
                   help="seconds running requests may go on after SIGINT/SIGTERM before they "
                        "are ended (default: 5)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="moert", description="moert: MoE inference on any backend")
    sub = parser.add_subparsers(dest="command", required=True)
    # Listed for --help; their arguments are parsed by the runtime (`moert run --help`).
    sub.add_parser("info", help="backends found; a model's summary", add_help=False)
    sub.add_parser("run", help="prefill a prompt and decode", add_help=False)
    p = sub.add_parser("bench", help="compare latency across backends")
    p.add_argument("model")
    p.add_argument("--backend", default="", help="comma-separated devices (default: every available one)")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", default="f32")
    p.add_argument("--quantize", default="", choices=["", "int8", "int4", "mxfp4"])
    p.add_argument("--precision", default="fast", choices=["fast", "exact"])
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", default="")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("make-test-model", help="write a tiny random checkpoint in Hugging Face layout")
    p.add_argument("arch")
    p.add_argument("dir")
    p.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "fp8"])
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quant", choices=["gptq", "awq", "mxfp4"],
                   help="a packed checkpoint in that real layout instead (bf16 elsewhere)")
    p.add_argument("--group-size", type=int, default=32, help="GPTQ / AWQ groups (-1: whole rows)")
    p.add_argument("--asym", action="store_true", help="GPTQ with zero points")
    p.set_defaults(func=cmd_make_test_model)
    p = sub.add_parser("quantize", help="write a GPTQ int4 checkpoint from a float or fp8 one")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", default="int4", choices=["int4"])
    p.add_argument("--group-size", type=int, default=128,
                   help="input columns per scale (-1: whole rows; default 128, GPTQ's usual)")
    p.set_defaults(func=cmd_quantize)
    add_serve_parser(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in RUNTIME_COMMANDS:
            return run_runtime_command(argv)
        args = parser.parse_args(argv)
        return args.func(args)
    except moert.Error as e:
        print(f"moert: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
