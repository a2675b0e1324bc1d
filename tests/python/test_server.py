"""moert serve: the OpenAI-compatible HTTP server (moert.server), driven with
the official `openai` client.

A tiny random Qwen3-MoE checkpoint gets a WordLevel tokenizer.json of its
512-token vocabulary, a tokenizer_config.json with a chat template, and a
generation_config.json whose second end-of-sequence id is a token the greedy
answer to the chat prompt reaches, so that the chat stops there.  The server
runs as a subprocess on the CPU backend (reference where there is none) with
precision "exact", and every greedy answer is checked against
Model.generate() of the same prompt alone in this process, loaded with the
same options.  A second server on the reference backend with a long context
generates slowly enough for a client to leave in the middle: its request must
be cancelled (the sequence freed), and SIGTERM must stop it.

Skipped without fastapi, uvicorn, jinja2, openai or tokenizers
(scripts/install-deps.sh installs them).
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from moert_reference import make_checkpoint

moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

for _package in ("fastapi", "uvicorn", "jinja2", "openai", "tokenizers"):
    pytest.importorskip(_package, reason=f"moert serve's tests need the '{_package}' package "
                                         "(scripts/install-deps.sh installs it)")
import openai  # noqa: E402

NAME = "tiny-qwen3"
WORDS = ["<unk>", "<s>", "</s>", "user", "assistant", "system", ":", "the", "quick", "brown",
         "fox", "jumps", "over", "lazy", "dog"]
VOCAB = 512
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} "
            "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")
CHAT = [{"role": "system", "content": "the lazy dog"},
        {"role": "user", "content": "the quick brown fox"}]
CHAT_TEXT = "<s>system : the lazy dog user : the quick brown fox assistant :"
MAX_CONTEXT = 128
OPTIONS = dict(max_context=MAX_CONTEXT, kv_cache_tokens=1024, max_sequences=4, precision="exact")
PROMPTS = [[3, 17, 101, 7, 42, 250, 9, 64, 11, 300, 5, 77],
           [5, 6],
           [(13 * i + 7) % 500 for i in range(41)],
           [200, 201, 202],
           [(29 * i + 1) % 480 for i in range(23)],
           [9, 8, 7, 6, 5, 4, 3],
           [400, 300, 200, 100],
           [(7 * i + 20) % 511 for i in range(17)]]


def backend():
    names = {b["name"] for b in moert.backends() if b["available"] and b["devices"]}
    return "cpu" if "cpu" in names else "reference"


def write_tokenizer(directory):
    """WordLevel over ids 0..511: a few words, then w15 ... w511; <s> and </s>
    special; whitespace pre-tokenisation, decoded joined by spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(len(WORDS), VOCAB)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>"])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": {"content": "</s>", "special": True},
         "chat_template": TEMPLATE}))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve") / NAME
    # A long max_position_embeddings for the slow server's long generations.
    make_checkpoint.make_checkpoint("qwen3_moe", str(d), dtype="bf16", seed=5,
                                    overrides={"max_position_embeddings": 4096})
    write_tokenizer(d)
    # A second end-of-sequence id: the first token of the greedy chat answer
    # (after 3) that does not occur before it.
    m = moert.load(str(d), backend=backend(), progress=False, **OPTIONS)
    greedy = m.generate(m.encode(CHAT_TEXT, add_special_tokens=False), max_new_tokens=16)
    stop_at = next(i for i in range(3, 16) if greedy[i] not in greedy[:i] and greedy[i] != 2)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, greedy[stop_at]]}))
    return d


@pytest.fixture(scope="module")
def model(checkpoint):
    return moert.load(str(checkpoint), backend=backend(), progress=False, **OPTIONS)


@pytest.fixture(scope="module")
def eos(checkpoint):
    return json.loads((checkpoint / "generation_config.json").read_text())["eos_token_id"]


def expected(model, eos, ids, max_tokens):
    """(text, finish_reason, completion_tokens) of a greedy answer alone."""
    tokens = model.generate(ids, max_new_tokens=max_tokens, stop=eos)
    stopped = bool(tokens) and tokens[-1] in eos
    text = model.decode(tokens[:-1] if stopped else tokens)
    return text, "stop" if stopped else "length", len(tokens)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m moert serve` in a subprocess, its log in a file."""

    def __init__(self, directory, log, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moert", "serve", str(directory), "--port",
                 str(self.port), "--model-name", NAME, *args],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("/health")["status"] == "ok":
                    break
            except OSError:
                pass
            assert self.proc.poll() is None, f"the server exited: {self.log_text()}"
            assert time.monotonic() < deadline, f"the server did not start: {self.log_text()}"
            time.sleep(0.1)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="x", max_retries=0,
                                    timeout=60)

    def log_text(self):
        return pathlib.Path(self.log).read_text()

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path, body, content_type="application/json"):
        """(status, parsed body) of a POST of raw bytes."""
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_idle(self, timeout=5.0):
        """The /health of the first moment nothing runs or waits."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.get("/health")
            if (health["running"], health["waiting"]) == (0, 0) or time.monotonic() > deadline:
                return health
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    s = Server(checkpoint, tmp_path_factory.mktemp("serve_log") / "server.log", "--backend",
               backend(), "--precision", "exact", "--max-context", str(MAX_CONTEXT),
               "--kv-cache-tokens", "1024", "--max-sequences", "4")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client


# -- answers -------------------------------------------------------------------------


def test_health_and_models(server, client):
    assert server.get("/health") == {"status": "ok", "running": 0, "waiting": 0}
    assert [m.id for m in client.models.list().data] == [NAME]
    assert server.get(f"/v1/models/{NAME}")["id"] == NAME


def test_completion_of_text_equals_generate(client, model, eos):
    prompt = "the quick brown fox jumps over the lazy dog"
    ids = model.encode(prompt)
    text, finish, n = expected(model, eos, ids, 12)
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.model == NAME and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].text == text
    assert r.choices[0].finish_reason == finish
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == n
    assert r.usage.total_tokens == len(ids) + n


@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_completion_of_token_ids_equals_generate(client, model, eos, prompt):
    text, finish, n = expected(model, eos, prompt, 10)
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=10, temperature=0)
    assert (r.choices[0].text, r.choices[0].finish_reason) == (text, finish)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt), n)


def test_streamed_completion_joins_to_the_answer(client, model, eos):
    text, finish, n = expected(model, eos, PROMPTS[0], 14)
    chunks = list(client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=14,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert len(chunks) >= 3
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    finished = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finished[-1] == finish and not any(finished[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == n


def test_default_temperature_samples_with_the_seed(client, model, eos):
    """temperature defaults to 1.0: the answer equals generate()'s sampled
    with that temperature and the request's seed (and top_k)."""
    tokens = model.generate(PROMPTS[1], max_new_tokens=8, temperature=1.0, top_k=20, seed=7,
                            stop=eos)
    want = model.decode(tokens[:-1] if tokens[-1] in eos else tokens)
    for _ in range(2):
        r = client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=8, seed=7,
                                      extra_body={"top_k": 20})
        assert r.choices[0].text == want


def test_stop_string_cuts_the_text(client, model, eos):
    text, _, _ = expected(model, eos, PROMPTS[2], 12)
    words = text.split()
    k = next(i for i in range(2, len(words)) if words[i] not in words[:i])
    want = text[:text.index(" " + words[k])]
    for stream in (False, True):
        r = client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=12,
                                      temperature=0, stop=[" " + words[k], "no such text"],
                                      stream=stream)
        if stream:
            chunks = list(r)
            got = "".join(c.choices[0].text for c in chunks)
            reason = chunks[-1].choices[0].finish_reason
        else:
            got, reason = r.choices[0].text, r.choices[0].finish_reason
            assert r.usage.completion_tokens == k + 1
        assert (got, reason) == (want, "stop")


def test_chat_stops_at_the_end_of_sequence_token(client, model, eos):
    ids = model.encode(CHAT_TEXT, add_special_tokens=False)
    text, finish, n = expected(model, eos, ids, 16)
    assert finish == "stop"  # the checkpoint fixture's choice of eos
    r = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=16, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), n)
    # Without a limit the answer is the same (it ends at the eos token).
    r = client.chat.completions.create(model=NAME, messages=CHAT, temperature=0)
    assert r.choices[0].message.content == text
    # ignore_eos: max_tokens decides.
    r = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=16, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 16
    assert r.choices[0].message.content.startswith(text)


def test_streamed_chat_equals_the_answer(client, model, eos):
    ids = model.encode(CHAT_TEXT, add_special_tokens=False)
    text, _, n = expected(model, eos, ids, 16)
    chunks = list(client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=16,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.prompt_tokens == len(ids) and chunks[-1].usage.completion_tokens == n


def test_content_parts_are_joined(client, model, eos):
    messages = [CHAT[0], {"role": "user", "content": [{"type": "text", "text": "the quick"},
                                                      {"type": "text", "text": "brown fox"}]}]
    ids = model.encode(CHAT_TEXT.replace("quick brown", "quick\nbrown"),
                       add_special_tokens=False)
    r = client.chat.completions.create(model=NAME, messages=messages, max_tokens=6,
                                       temperature=0)
    assert r.choices[0].message.content == expected(model, eos, ids, 6)[0]


def test_concurrent_clients_get_their_answers_alone(server, client, model, eos):
    """8 clients at once on a server of 4 sequences: 4 run, 4 wait; each
    answer equals its prompt's alone, streamed or not."""
    want = [expected(model, eos, p, 24) for p in PROMPTS]
    got = [None] * len(PROMPTS)

    def work(i):
        if i % 2:
            chunks = list(client.completions.create(model=NAME, prompt=PROMPTS[i], max_tokens=24,
                                                    temperature=0, stream=True))
            got[i] = ("".join(c.choices[0].text for c in chunks),
                      chunks[-1].choices[0].finish_reason)
        else:
            r = client.completions.create(model=NAME, prompt=PROMPTS[i], max_tokens=24,
                                          temperature=0)
            got[i] = (r.choices[0].text, r.choices[0].finish_reason)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [w[:2] for w in want]
    assert server.wait_idle() == {"status": "ok", "running": 0, "waiting": 0}


# -- errors ----------------------------------------------------------------------------


def good_request_works(client, model, eos):
    r = client.completions.create(model=NAME, prompt=PROMPTS[3], max_tokens=4, temperature=0)
    assert r.choices[0].text == expected(model, eos, PROMPTS[3], 4)[0]


@pytest.mark.parametrize("error, message, changes", [
    (openai.NotFoundError, "does not exist", dict(model="gpt-4")),
    (openai.BadRequestError, "temperature must be >= 0", dict(temperature=-1.0)),
    (openai.BadRequestError, r"top_p must be in \(0, 1\]", dict(top_p=0.0)),
    (openai.BadRequestError, "top_k must be >= 0", dict(extra_body={"top_k": -1})),
    (openai.BadRequestError, "max_new_tokens must be >= 0", dict(max_tokens=-1)),
    (openai.BadRequestError, "context overflow", dict(prompt=list(range(1, 200)))),
    (openai.BadRequestError, "outside the vocabulary", dict(prompt=[1, 600])),
    (openai.BadRequestError, "n must be 1", dict(n=2)),
    (openai.BadRequestError, "one prompt per request", dict(prompt=["the fox", "the dog"])),
    (openai.BadRequestError, "echo is not supported", dict(echo=True)),
])
def test_bad_completion_requests(client, model, eos, error, message, changes):
    request = dict(model=NAME, prompt=PROMPTS[0], max_tokens=4, temperature=0)
    request.update(changes)
    with pytest.raises(error, match=message) as e:
        client.completions.create(**request)
    body = e.value.body
    assert set(body) == {"message", "type", "param", "code"}  # the client unwraps "error"
    good_request_works(client, model, eos)


def test_bad_chat_requests(client, model, eos):
    with pytest.raises(openai.BadRequestError, match="temperature must be >= 0"):
        client.chat.completions.create(model=NAME, messages=CHAT, temperature=-0.5)
    with pytest.raises(openai.BadRequestError, match="only text parts"):
        client.chat.completions.create(model=NAME, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(openai.BadRequestError, match="context overflow"):
        client.chat.completions.create(model=NAME, messages=[
            {"role": "user", "content": "the fox " * 100}])
    good_request_works(client, model, eos)


@pytest.mark.parametrize("body, message", [
    (b'{"model": "tiny-qwen3", "prompt": [1, 2', "not valid JSON"),
    (b'[1, 2, 3]', "valid dictionary"),
    (b'{"prompt": [1, 2], "max_tokens": "many"}', "max_tokens"),
    (b'{"prompt": [1, 2], "max_tokens": 2.5}', "max_tokens"),
    (b'{"max_tokens": 2}', "prompt"),
    (b'{"prompt": [1, 2], "temperature": NaN}', "temperature must be >= 0"),
])
def test_malformed_bodies_are_400(server, client, model, eos, body, message):
    status, answer = server.post("/v1/completions", body)
    assert status == 400, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert message in answer["error"]["message"]
    assert answer["error"]["type"] == "invalid_request_error"
    good_request_works(client, model, eos)


def test_chat_without_a_template(checkpoint, tmp_path):
    """The checkpoint's settings as the server reads them; no template: 400."""
    from moert import server as moert_server
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    c = moert_server.Checkpoint(str(checkpoint), tok)
    assert c.special_tokens["bos_token"] == "<s>" and c.special_tokens["eos_token"] == "</s>"
    assert c.eos_ids[0] == 2 and len(c.eos_ids) == 2
    assert c.render([{"role": "user", "content": "hi"}]) == "<s>user : hi assistant :"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "</s>",
        "chat_template": [{"name": "tool_use", "template": "no"},
                          {"name": "default", "template": "{{ messages[0]['content'] }}!"}]}))
    assert moert_server.Checkpoint(str(tmp_path), tok).render([{"content": "a"}]) == "a!"
    (tmp_path / "chat_template.jinja").write_text("{{ raise_exception('no system') }}")
    with pytest.raises(moert_server.ApiError, match="no system"):
        moert_server.Checkpoint(str(tmp_path), tok).render([])
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "tokenizer_config.json").write_text("{}")
    c = moert_server.Checkpoint(str(tmp_path), tok)
    assert c.eos_ids == []
    with pytest.raises(moert_server.ApiError, match="no chat template") as e:
        c.render([{"role": "user", "content": "hi"}])
    assert e.value.status == 400


def test_a_checkpoint_without_tokenizer_is_refused(tmp_path):
    make_checkpoint.make_checkpoint("qwen3_moe", str(tmp_path), dtype="bf16", seed=5)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, "-m", "moert", "serve", str(tmp_path), "--backend",
                        "reference"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "tokenizer.json not found" in r.stderr


# -- leaving early, a full queue, shutdown ------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(checkpoint, tmp_path_factory):
    """The reference backend with a 4096-position context: a long answer
    takes seconds.  One sequence at a time, one more may wait."""
    s = Server(checkpoint, tmp_path_factory.mktemp("serve_slow_log") / "server.log",
               "--backend", "reference", "--max-context", "4096", "--max-sequences", "1",
               "--max-waiting", "1", "--shutdown-timeout", "1")
    yield s
    s.stop()


def test_a_closed_stream_is_cancelled(slow_server):
    client = slow_server.client
    stream = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=4000,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 1:
            break
    assert slow_server.get("/health")["running"] == 1
    stream.close()
    assert slow_server.wait_idle() == {"status": "ok", "running": 0, "waiting": 0}
    time.sleep(0.2)
    assert "cancelled: client disconnected" in slow_server.log_text()
    r = client.completions.create(model=NAME, prompt=PROMPTS[3], max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


def test_an_abandoned_request_is_cancelled(slow_server):
    body = json.dumps({"prompt": PROMPTS[1], "max_tokens": 4000, "ignore_eos": True}).encode()
    req = urllib.request.Request(slow_server.url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(OSError):  # a timeout: the client gives up, closing the connection
        urllib.request.urlopen(req, timeout=1.0)
    assert slow_server.wait_idle() == {"status": "ok", "running": 0, "waiting": 0}
    time.sleep(0.2)
    assert '"POST /v1/completions" 499' in slow_server.log_text()


def test_a_full_queue_answers_503_and_waiting_requests_run(slow_server):
    client = slow_server.client
    stream = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=4000,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("r", client.completions.create(
        model=NAME, prompt=PROMPTS[3], max_tokens=3, temperature=0)))
    waiter.start()
    deadline = time.monotonic() + 10
    while slow_server.get("/health")["waiting"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow_server.get("/health") == {"status": "ok", "running": 1, "waiting": 1}
    with pytest.raises(openai.InternalServerError, match="busy"):
        client.completions.create(model=NAME, prompt=PROMPTS[3], max_tokens=3)
    stream.close()
    waiter.join(30)
    assert result["r"].usage.completion_tokens == 3


def test_sigterm_stops_the_server(slow_server):
    """SIGTERM: a request still running after --shutdown-timeout (1 s) ends
    with an error event, then the server exits (by the signal, as uvicorn
    does)."""
    stream = slow_server.client.completions.create(model=NAME, prompt=PROMPTS[0],
                                                   max_tokens=4000, temperature=0, stream=True,
                                                   extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    start = time.monotonic()
    slow_server.proc.send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError, match="shutting down"):
        for _ in chunks:
            pass
    assert slow_server.proc.wait(20) in (0, -signal.SIGTERM)
    assert time.monotonic() - start < 5
    log = slow_server.log_text()
    assert "Application shutdown complete" in log and "Traceback" not in log
    assert "cancelled" not in log.splitlines()[-1]
