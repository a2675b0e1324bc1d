"""Load test of an OpenAI-compatible /v1/completions endpoint: moert serve,
llama.cpp's llama-server, vLLM ...

    python3 bench/serve_load.py [--url http://127.0.0.1:8000] [--model NAME]
        [--concurrency 1,4,8,16] [--requests 4] [--prompt-tokens 128]
        [--prompt-kind words|ids] [--same-prompt] [--max-tokens 64] [--warmup 1]
        [--json FILE|-]

For each concurrency level C, C clients each send --requests requests one
after the other, all at once: a fixed prompt, --max-tokens new tokens,
temperature 0, streamed so that the first token's arrival is seen.  The
prompt is the same for every server: --prompt-kind words (the default)
repeats the word " the" --prompt-tokens times (one token each in most
tokenizers; the server's usage.prompt_tokens is reported), ids sends the
token ids 100, 101, ... as a list (servers that accept token-id prompts:
moert, llama-server, vLLM).  Each request's prompt begins with a token of
its own (a number word, or id 1000 + its index), so no server can answer
from a cache of an earlier request's prompt, as users' prompts differ;
--same-prompt sends the identical prompt every time instead.

Every request asks for "ignore_eos": true, so that each one generates
--max-tokens tokens: moert, llama-server and vLLM honour it; a server that
does not know the field ignores it and may stop early (the table's "short"
column counts such answers).  Completion tokens are the server's
usage.completion_tokens (asked for with stream_options.include_usage),
else the number of chunks with text.

Per level it reports: aggregate completion tok/s (all completion tokens
over the level's wall time), per-sequence tok/s (the mean of each request's
(completion tokens - 1) / (time from its first token to its last): the
decode speed a client sees), time to first token p50/p95 (from sending the
request), and the wall time; as a table, and with --json as JSON (to a file,
or stdout with -).

Needs httpx (installed with the openai package) or aiohttp.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

try:
    import httpx
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import httpx2 as httpx  # the same API under another name
    except ImportError:
        httpx = None
try:
    import aiohttp
except ImportError:  # pragma: no cover
    aiohttp = None


class _HttpxClient:
    def __init__(self):
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(600.0),
                                         limits=httpx.Limits(max_connections=None))

    async def get_json(self, url):
        r = await self._client.get(url)
        r.raise_for_status()
        return r.json()

    async def stream_lines(self, url, body):
        async with self._client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread()).decode()[:500]}")
            async for line in r.aiter_lines():
                yield line

    async def close(self):
        await self._client.aclose()


class _AiohttpClient:
    def __init__(self):
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600),
                                              connector=aiohttp.TCPConnector(limit=0))

    async def get_json(self, url):
        async with self._session.get(url) as r:
            r.raise_for_status()
            return await r.json()

    async def stream_lines(self, url, body):
        async with self._session.post(url, json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:500]}")
            async for line in r.content:
                yield line.decode().rstrip("\r\n")

    async def close(self):
        await self._session.close()


def make_client():
    if httpx is not None:
        return _HttpxClient()
    if aiohttp is not None:
        return _AiohttpClient()
    sys.exit("serve_load.py needs httpx (pip install httpx) or aiohttp")


def percentile(values, q):
    """The q-th percentile (0..100) by linear interpolation."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def one_request(client, url, body):
    """Timings and token counts of one streamed completion."""
    start = time.perf_counter()
    first = last = None
    chunks = 0
    usage = None
    async for line in client.stream_lines(url, body):
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(f"the server answered an error: {event['error']}")
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices") or []:
            if choice.get("text"):
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
                chunks += 1
    end = time.perf_counter()
    completion = usage["completion_tokens"] if usage else chunks
    return {"start": start, "end": end, "ttft": (first - start) if first else None,
            "decode_s": (last - first) if first else None, "completion_tokens": completion,
            "prompt_tokens": usage.get("prompt_tokens") if usage else None}


async def run_level(client, url, make_body, concurrency, requests):
    async def worker():
        return [await one_request(client, url, make_body()) for _ in range(requests)]

    start = time.perf_counter()
    results = [r for rs in await asyncio.gather(*(worker() for _ in range(concurrency)))
               for r in rs]
    wall = time.perf_counter() - start
    tokens = sum(r["completion_tokens"] for r in results)
    per_sequence = [(r["completion_tokens"] - 1) / r["decode_s"] for r in results
                    if r["decode_s"] and r["completion_tokens"] > 1]
    ttft = [r["ttft"] for r in results if r["ttft"] is not None]
    prompt_tokens = [r["prompt_tokens"] for r in results if r["prompt_tokens"] is not None]
    return {"concurrency": concurrency, "requests": len(results), "wall_s": wall,
            "completion_tokens": tokens, "aggregate_tok_s": tokens / wall,
            "per_sequence_tok_s": statistics.mean(per_sequence) if per_sequence else None,
            "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95),
            "prompt_tokens": prompt_tokens[0] if prompt_tokens else None,
            "short": sum(r["completion_tokens"] < make_body.max_tokens for r in results)}


def table(rows):
    columns = [("concurrency", "C", "{}"), ("requests", "requests", "{}"),
               ("prompt_tokens", "prompt tok", "{}"), ("completion_tokens", "gen tok", "{}"),
               ("aggregate_tok_s", "agg tok/s", "{:.1f}"),
               ("per_sequence_tok_s", "seq tok/s", "{:.1f}"),
               ("ttft_p50_s", "TTFT p50 ms", "{:.1f}"), ("ttft_p95_s", "TTFT p95 ms", "{:.1f}"),
               ("wall_s", "wall s", "{:.2f}"), ("short", "short", "{}")]
    scale = {"ttft_p50_s": 1e3, "ttft_p95_s": 1e3}
    cells = [[title for _, title, _ in columns]]
    for r in rows:
        cells.append(["-" if r.get(k) is None else fmt.format(r[k] * scale.get(k, 1))
                      for k, _, fmt in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


async def main_async(args):
    base = args.url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    client = make_client()
    try:
        model = args.model
        if not model:
            model = (await client.get_json(base + "/v1/models"))["data"][0]["id"]
        sent = [0]

        def make_body():
            n = 0 if args.same_prompt else sent[0]
            sent[0] += 1
            if args.prompt_kind == "ids":
                prompt = [1000 + n] + [100 + i for i in range(1, args.prompt_tokens)]
            else:
                prompt = f" {n}" + " the" * (args.prompt_tokens - 1)
            return {"model": model, "prompt": prompt, "max_tokens": args.max_tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
                    "ignore_eos": True}

        make_body.max_tokens = args.max_tokens
        url = base + "/v1/completions"
        for _ in range(args.warmup):
            await one_request(client, url, make_body())
        rows = []
        for c in args.concurrency:
            rows.append(await run_level(client, url, make_body, c, args.requests))
            print(f"concurrency {c}: {rows[-1]['aggregate_tok_s']:.1f} tok/s", file=sys.stderr)
    finally:
        await client.close()
    print(f"{model} at {base}: prompt {args.prompt_tokens} ({args.prompt_kind}), "
          f"{args.max_tokens} new tokens, {args.requests} requests per client")
    print(table(rows))
    report = {"url": base, "model": model, "prompt_kind": args.prompt_kind,
              "same_prompt": args.same_prompt,
              "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
              "requests_per_client": args.requests, "rows": rows}
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="the server's base URL (with or without /v1)")
    parser.add_argument("--model", default="", help="model name (default: the first listed)")
    parser.add_argument("--concurrency", default="1,4,8,16",
                        type=lambda s: [int(c) for c in s.split(",") if c],
                        help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--prompt-kind", default="words", choices=["words", "ids"])
    parser.add_argument("--same-prompt", action="store_true",
                        help="send one identical prompt (default: each request its own)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1, help="requests sent before measuring")
    parser.add_argument("--json", default="", help="write the results as JSON (- for stdout)")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
