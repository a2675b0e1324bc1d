"""Fuzz harness for what `moert serve` reads from outside: the checkpoint's
tokenizer_config.json and chat template, and request bodies.

Coverage-guided with atheris (libFuzzer for Python).  The first byte of an
input picks what the rest is (byte % 4):

  0  tokenizer_config.json (bytes as given): moert.server.Checkpoint reads it
     (special tokens, chat_template as a string or a list of named
     templates), and the template renders three fixed conversations.
  1  chat_template.jinja (bytes as given), beside a tokenizer_config.json
     with special tokens: compiled and rendered as in mode 0.
  2  the JSON body of POST /v1/completions.
  3  the JSON body of POST /v1/chat/completions, rendered with a tool-aware
     ChatML template.

Bodies go the way FastAPI takes them, without HTTP: json.loads (any failure
is FastAPI's 400), pydantic validation into the endpoint's model
(ValidationError is the 400 of the validation handler), then the endpoint
coroutine itself, called directly with a stand-in request.  The endpoint's
engine is replaced by one that hands the submission to a real engine of a
tiny model (moert.Model.engine) exactly as the server's engine thread does
(same accepted exception types, turned into the same 400), then cancels it
and finishes the request, so every submit argument the server derives
reaches the runtime's own checks.

Expected outcomes: moert.Error, ApiError with a 4xx status, and the 400
paths above.  Anything else escaping — another exception type, an ApiError
of status 500 or more — is a finding; atheris prints the traceback and saves
the input.  A hang is caught by libFuzzer's -timeout.

Run (scripts/fuzz.sh server SECS does this with the corpora):

    PYTHONPATH=python MOERT_PYTHON_DIR=build/python \\
        python3 fuzz/python/fuzz_server.py CORPUS_DIR... -max_total_time=60

Half of the mutations parse the JSON payload of modes 0, 2 and 3 and
change values in it (custom_mutator), using the words of the dictionary
named by MOERT_FUZZ_DICT (fuzz/make_corpus.py writes it) beside the
document's own.

Without atheris installed it falls back to a plain random-mutation loop over
the seed files (not coverage-guided, labelled as such in its output):

    python3 fuzz/python/fuzz_server.py --random-mutation SECS SEED_DIR...
"""

import asyncio
import copy
import json
import os
import random
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
for _p in (os.environ.get("MOERT_PYTHON_DIR") or os.path.join(ROOT, "build", "python"),
           os.path.join(ROOT, "python")):
    if os.path.isdir(_p) and _p not in sys.path:
        sys.path.append(_p)

try:
    import atheris
except ImportError:  # pragma: no cover - the fallback below
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["moert", "jinja2"]):
        import jinja2  # noqa: F401
        import moert
        from moert import server
else:
    import moert
    from moert import server

import pydantic  # noqa: E402

from server_inputs import CHAT_TEMPLATE, CONVERSATIONS  # noqa: E402

WORDS = ["<unk>", "<s>", "</s>", "user", "assistant", "system", ":", "the", "quick", "brown",
         "fox", "jumps", "over", "lazy", "dog"]


class _Found(Exception):
    """An outcome outside the contract, raised so that the fuzzer reports it."""


def _make_model(directory):
    """A tiny Mixtral checkpoint with a WordLevel tokenizer.json and a chat
    template, loaded on the reference backend."""
    from moert_reference import make_checkpoint
    from tokenizers import Tokenizer, models, pre_tokenizers
    make_checkpoint.make_checkpoint("mixtral", directory, dtype="bf16", seed=3,
                                    overrides={"num_hidden_layers": 1})
    vocab = {w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(len(WORDS), 512)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>"])
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHAT_TEMPLATE}, f)
    return moert.load(directory, backend="reference", progress=False, max_context=128,
                      kv_cache_tokens=256, max_sequences=4)


class _DirectEngine:
    """Stands in for server.EngineThread: submits to the real engine at once,
    as EngineThread._submit_requests does, then cancels the request and
    finishes it without generating."""

    queued = running = waiting = 0

    def __init__(self, engine):
        self._engine = engine

    def submit(self, submission):
        try:
            request_id = self._engine.submit(submission.prompt_ids, **submission.options)
        except (moert.Error, TypeError, ValueError, OverflowError) as exc:
            server._resolve(submission.accepted, None, server._engine_error(exc))
            return
        self._engine.cancel(request_id)
        server._resolve(submission.accepted, request_id)
        submission.events.put_nowait((None, True, "length"))

    def cancel(self, submission):
        pass


class _Request:
    """What the endpoints use of a starlette Request: state, and receive()
    for the disconnect watch (the client never leaves)."""

    def __init__(self, loop):
        self.state = types.SimpleNamespace()
        self._never = loop.create_future()

    async def receive(self):
        await self._never
        return {"type": "http.disconnect"}


class Harness:
    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="moert-fuzz-server-")
        model_dir = os.path.join(self.tmp.name, "model")
        self.model = _make_model(model_dir)
        self.app = server.create_app(self.model, name="tiny")
        self.server = self.app.state.server
        self.server.engine = _DirectEngine(self.server.engine._engine)
        self.endpoints = {route.path: route.endpoint for route in self.app.routes
                          if getattr(route, "path", "").startswith("/v1/")}
        self.loop = asyncio.new_event_loop()
        self.config_dir = os.path.join(self.tmp.name, "config")
        os.makedirs(self.config_dir)

    # -- tokenizer_config.json and chat templates ---------------------------

    def checkpoint(self, tokenizer_config, template=None):
        with open(os.path.join(self.config_dir, "tokenizer_config.json"), "wb") as f:
            f.write(tokenizer_config)
        template_path = os.path.join(self.config_dir, "chat_template.jinja")
        if template is None:
            if os.path.exists(template_path):
                os.remove(template_path)
        else:
            with open(template_path, "wb") as f:
                f.write(template)
        try:
            ck = server.Checkpoint(self.config_dir, self.model.tokenizer)
        except moert.Error:
            return
        for conversation in CONVERSATIONS:
            try:
                text = ck.render(conversation)
            except server.ApiError as exc:
                self._check_status(exc)
                continue
            if not isinstance(text, str):
                raise _Found(f"render() returned {type(text).__name__}, not str")

    # -- request bodies ------------------------------------------------------

    def request(self, path, model_type, body):
        try:
            obj = json.loads(body)
        except Exception:  # noqa: BLE001 - FastAPI answers any parse failure with 400
            return
        try:
            parsed = model_type.model_validate(obj)
        except pydantic.ValidationError:
            return
        try:
            result = self.loop.run_until_complete(self._call(path, parsed))
        except moert.Error:
            return
        except server.ApiError as exc:
            self._check_status(exc)
            return
        if not isinstance(result, dict) or "choices" not in result:
            raise _Found(f"{path} returned {result!r:.200}")

    async def _call(self, path, parsed):
        response = await self.endpoints[path](parsed, _Request(self.loop))
        if hasattr(response, "body_iterator"):  # a stream: drain it
            chunks = [chunk async for chunk in response.body_iterator]
            return {"choices": chunks}
        return response

    @staticmethod
    def _check_status(exc):
        if not 400 <= exc.status < 500:
            raise _Found(f"ApiError {exc.status}: {exc.message}") from exc

    def one_input(self, data):
        if not data:
            return
        mode, payload = data[0] % 4, data[1:]
        if mode == 0:
            self.checkpoint(payload)
        elif mode == 1:
            self.checkpoint(b'{"bos_token": "<s>", "eos_token": {"content": "</s>"}}', payload)
        elif mode == 2:
            self.request("/v1/completions", server.CompletionRequest, payload)
        else:
            self.request("/v1/chat/completions", server.ChatRequest, payload)


# -- JSON-aware mutation ---------------------------------------------------------

_NUMBERS = [0, -1, 1, 2, 3, 8, 16, 32, 127, 128, 255, 256, 4096, 2**31 - 1, 2**31, 2**32, 2**53,
            2**63 - 1, 2**63, 2**64, -2**63, 10**30, 0.5, -0.5, 1e-30, 1e308, -1e308, -0.0]


def _dictionary_words():
    """The quoted words of the libFuzzer dictionary named by MOERT_FUZZ_DICT."""
    words = []
    path = os.environ.get("MOERT_FUZZ_DICT")
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                first, last = line.find('"'), line.rfind('"')
                if line.startswith("#") or first < 0 or last <= first:
                    continue
                word = line[first + 1:last]
                try:
                    word = word.encode("latin-1").decode("unicode_escape")
                except (UnicodeError, ValueError):
                    pass
                words.append(word)
    return words


_WORDS = _dictionary_words()


def _slots(value, out):
    """(container, key) of every value inside `value`."""
    if isinstance(value, dict):
        for key in list(value):
            out.append((value, key))
            _slots(value[key], out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.append((value, i))
            _slots(item, out)


def _strings(value, out):
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.append(key)
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


def mutate_json(doc, rng):
    """Changes one to three values of the JSON document `doc` (a dict or a
    list, changed in place): a number to a boundary value, a string or key to
    another word, any value to another type, an entry removed, duplicated or
    renamed.  Returns the document (a new one when `doc` had no entries)."""
    words = list(_WORDS)
    _strings(doc, words)
    words = words or ["x"]
    for _ in range(rng.randint(1, 3)):
        slots = []
        _slots(doc, slots)
        if not slots:
            return rng.choice([{rng.choice(words): rng.choice(_NUMBERS)}, [rng.choice(words)]])
        container, key = rng.choice(slots)
        value = container[key]
        op = rng.randrange(8)
        if op == 0:
            container[key] = rng.choice([None, True, False, "", [], {}, rng.choice(_NUMBERS)])
        elif isinstance(value, bool):
            container[key] = not value
        elif isinstance(value, (int, float)):
            container[key] = rng.choice(_NUMBERS) if op < 5 else value * rng.choice([2, -1, 0.5])
        elif isinstance(value, str):
            container[key] = rng.choice(words) if op < 5 else value + rng.choice(words)
        elif isinstance(value, dict) and value and op < 4:
            del value[rng.choice(list(value))]
        elif isinstance(value, dict):
            value[rng.choice(words)] = rng.choice(
                [rng.choice(words), rng.choice(_NUMBERS), copy.deepcopy(value), None, []])
        elif isinstance(value, list) and value and op < 4:
            del value[rng.randrange(len(value))]
        elif isinstance(value, list):
            value.append(copy.deepcopy(rng.choice(value)) if value else rng.choice(words))
        elif op < 4 and isinstance(container, dict):
            del container[key]
        else:
            container[key] = rng.choice(words)
    return doc


def custom_mutator(data, max_size, seed):
    """Half of the mutations edit a JSON payload (modes 0, 2 and 3), the
    rest are libFuzzer's byte mutations."""
    if seed % 2 == 0 and data and data[0] % 4 != 1:
        try:
            doc = json.loads(data[1:])
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, (dict, list)):
            out = bytes(data[:1]) + json.dumps(mutate_json(doc, random.Random(seed))).encode()
            if len(out) <= max_size:
                return out
    return atheris.Mutate(data, max_size)


def _random_mutation(seconds, directories):
    """Fallback without atheris: random byte mutations of the seeds."""
    print("fuzz_server: atheris is not installed; RANDOM-MUTATION FALLBACK (not coverage-guided)")
    seeds = []
    for d in directories:
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                seeds.append(f.read())
    seeds = seeds or [b"\x02{}"]
    harness = Harness()
    rng = random.Random(0)
    end, runs = time.time() + seconds, 0
    while time.time() < end:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(3)
            at = rng.randrange(len(data) + 1)
            if op == 0:
                data[at:at] = bytes([rng.randrange(256)])
            elif op == 1 and at < len(data):
                del data[at]
            elif at < len(data):
                data[at] = rng.randrange(256)
        try:
            harness.one_input(bytes(data))
        except Exception:
            path = f"crash-{runs}"
            with open(path, "wb") as f:
                f.write(data)
            print(f"fuzz_server: finding, input saved to {path}")
            raise
        runs += 1
    print(f"Done {runs} runs in {seconds} second(s)")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--random-mutation":
        _random_mutation(float(sys.argv[2]), sys.argv[3:])
        return
    if atheris is None:
        sys.exit("fuzz_server: atheris is not installed (pip install atheris); run with "
                 "--random-mutation SECS SEED_DIR... for the uninstrumented fallback")
    harness = Harness()
    atheris.Setup(sys.argv, harness.one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
