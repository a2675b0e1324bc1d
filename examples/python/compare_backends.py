"""Latency of one model on every available backend, as a table and a plot.

    python examples/python/compare_backends.py [MODEL_DIR] [--plot latency.png]

moert.compare() loads the model on each device, times prefill and decode,
checks the logits against the reference backend, and returns a report that
prints as a table, converts to a dict or JSON, and plots with matplotlib.
"""
import argparse
import tempfile

import moert


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="checkpoint directory (default: a tiny random one)")
    p.add_argument("--backends", help="comma-separated devices (default: every available one)")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--plot", help="write a bar chart here (needs matplotlib)")
    p.add_argument("--json", help="write the report as JSON here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            from moert_reference.make_checkpoint import make_checkpoint
            path = tmp + "/tiny-deepseek-v3"
            make_checkpoint("deepseek_v3", path, dtype="fp8", seed=0)
        report = moert.compare(path, backends=args.backends.split(",") if args.backends else None,
                               prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                               repeat=2)
        print(report)
        if args.json:
            with open(args.json, "w") as f:
                f.write(report.to_json(indent=2))
        if args.plot:
            report.plot(args.plot)
            print("plot written to", args.plot)
        return report


if __name__ == "__main__":
    main()
