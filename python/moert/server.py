"""An OpenAI-compatible HTTP server over moert's continuous-batching engine
(``moert serve MODEL_DIR``, also ``python -m moert serve``).

    moert serve MODEL_DIR [--backend cpu] [--host 127.0.0.1] [--port 8000]
                [--model-name NAME] [--max-sequences 16] [--kv-cache-tokens N]
                [--max-context N] [--step-tokens 512] [--max-waiting N]
                [--dtype f32|bf16|f16] [--quantize int8|int4|mxfp4]
                [--precision fast|exact] [--kv-dtype f32|bf16|f16|fp8]
                [--shutdown-timeout 5] [--log-level info]

Built on FastAPI and uvicorn (``pip install moert[serve]``: fastapi, uvicorn,
jinja2).  The checkpoint directory needs ``tokenizer.json`` (prompts and
answers are text) and the ``tokenizers`` package.

Endpoints:

* ``GET /health``: ``{"status": "ok", "running": n, "waiting": m}``, the
  requests in the batch and those queued for a free sequence or KV blocks.
* ``GET /v1/models``: the one model served, named after the checkpoint
  directory (``--model-name`` overrides it).
* ``POST /v1/completions``: ``prompt`` (a str, or a list of token ids; one
  prompt per request), ``max_tokens`` (default 16), ``temperature`` (default
  1.0 as in OpenAI's API; 0 is greedy), ``top_p``, ``seed`` (default: a
  random one), ``stop`` (strings, matched in the decoded text, cut from the
  answer), ``stream`` (server-sent events, then ``data: [DONE]``),
  ``stream_options.include_usage``; and beyond OpenAI's fields ``top_k``
  (0: no limit) and ``ignore_eos``.
* ``POST /v1/chat/completions``: ``messages`` rendered with the checkpoint's
  chat template as transformers renders it (``tokenizer_config.json``'s
  ``chat_template``, or ``chat_template.jinja`` beside it; Jinja2's sandbox,
  ``add_generation_prompt=True``, the special tokens as variables), the text
  tokenized without adding special tokens again; ``max_completion_tokens``
  or ``max_tokens`` (default: what is left of the context), and the other
  fields as for completions.  Message content is a str or a list of text
  parts.

Generation ends at ``max_tokens``, at an end-of-sequence token (the
tokenizer's ``eos_token`` and ``generation_config.json``'s ``eos_token_id``,
or config.json's when there is no generation config; the token is counted
in ``usage.completion_tokens`` but not part of the text; ``ignore_eos``
turns this off), at a stop string, or when the sequence reaches
``--max-context`` (``finish_reason`` "length").

Requests run in one engine (``Model.engine()``) owned by one thread: it
submits new requests, cancels abandoned ones and steps the batch; each step
runs every running sequence at once.  A request joins the batch when one of
``--max-sequences`` rows and KV blocks for its prompt plus ``max_tokens``
are free, first come first served, and waits in the engine's queue
otherwise (a chat request without ``max_tokens`` reserves what is left of
the context: give ``max_tokens`` to run more at once).  With
``--max-waiting N`` a request arriving while N wait is refused with 503.  A
client that disconnects (a closed stream, or an abandoned non-streaming
request) has its request cancelled, which frees its sequence and KV blocks.
On SIGINT or SIGTERM the server stops accepting connections, lets running
requests go on for ``--shutdown-timeout`` seconds, ends those left (503, or
an error event in a stream), stops the engine thread and exits.  Each
request is logged in one line once its response ends (uvicorn's log
format): the client, the request line, the status, the seconds it took,
and the tokens and finish of its generation, or the error.

Errors have OpenAI's body, ``{"error": {"message", "type", "param",
"code"}}``: 400 for a malformed body or field, sampling parameters the
engine refuses (its own message: negative or NaN temperature, top_p outside
(0, 1], top_k < 0, ...), a prompt that does not fit the context or the KV
cache, or a chat request when the checkpoint has no chat template; 404 for
another model's name; 503 when the queue is full.

Not supported (400 when asked for): ``n`` or ``best_of`` other than 1,
several prompts in one request, ``echo``, ``suffix``, ``logprobs``,
presence and frequency penalties, ``logit_bias``, tools and function
calling, response formats other than text, non-text message content.
Unknown fields are ignored.
"""

import asyncio
import contextlib
import copy
import json
import logging
import logging.config
import os
import random
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Union

import jinja2
import jinja2.ext
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import _moert, text as _text
from .model import load

logger = logging.getLogger("moert.server")

class ApiError(Exception):
    """An error answered with OpenAI's error body and an HTTP status."""

    def __init__(self, status, message, type="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def _engine_error(exc):
    """The 400 for a request moert refused (moert.Error's message as is),
    with the OpenAI field it concerns where the message names one."""
    message = str(exc)
    param = code = None
    if "context overflow" in message or "cache positions" in message:
        param, code = "prompt", "context_length_exceeded"
    elif "outside the vocabulary" in message or "prompt is empty" in message:
        param = "prompt"
    else:
        for name, field in (("max_new_tokens", "max_tokens"), ("temperature", "temperature"),
                            ("top_p", "top_p"), ("top_k", "top_k")):
            if name in message:
                param = field
                break
    return ApiError(400, message, param=param, code=code)


# -- the checkpoint's tokenizer settings and chat template -----------------------


def _read_json(path):
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise _moert.Error(f"{path}: cannot be read: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _token_text(value):
    """A special token of tokenizer_config.json: a str or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _id_list(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class _GenerationTag(jinja2.ext.Extension):
    """transformers' {% generation %} ... {% endgeneration %}: marks the
    assistant's part of a training sample; rendered as its body here."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def _compile_template(source):
    """A chat template compiled as transformers compiles one."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return time.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


class Checkpoint:
    """What serving needs of a checkpoint beside its weights: the chat
    template, the special tokens it is rendered with, and the end-of-sequence
    token ids."""

    def __init__(self, directory, tokenizer):
        config = _read_json(os.path.join(directory, "tokenizer_config.json"))
        self.special_tokens = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
                    "mask_token"):
            token = _token_text(config.get(key))
            if token is not None:
                self.special_tokens[key] = token
        self.template_source = self._template_source(directory, config)
        try:
            self.template = (_compile_template(self.template_source)
                             if self.template_source is not None else None)
        except (jinja2.exceptions.TemplateError, RecursionError) as exc:
            where = os.path.join(directory, "chat_template.jinja")
            if not os.path.isfile(where):
                where = os.path.join(directory, "tokenizer_config.json") + " (chat_template)"
            raise _moert.Error(f"{where}: the chat template does not compile: {exc}") from exc
        eos = []
        if "eos_token" in self.special_tokens:
            token_id = tokenizer.token_to_id(self.special_tokens["eos_token"])
            if token_id is not None:
                eos.append(token_id)
        generation = _read_json(os.path.join(directory, "generation_config.json"))
        if not generation:
            generation = _read_json(os.path.join(directory, "config.json"))
        eos += _id_list(generation.get("eos_token_id"))
        self.eos_ids = sorted(set(eos))

    @staticmethod
    def _template_source(directory, config):
        path = os.path.join(directory, "chat_template.jinja")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    return f.read()
            except (OSError, ValueError) as exc:  # ValueError: not UTF-8
                raise _moert.Error(f"{path}: cannot be read: {exc}") from exc
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: the "default" one
            named = {t.get("name"): t.get("template") for t in template
                     if isinstance(t, dict) and isinstance(t.get("name"), str)}
            template = named.get("default") if len(named) != 1 else next(iter(named.values()))
        return template if isinstance(template, str) else None

    def render(self, messages):
        """The prompt text of a conversation, ready for the assistant's turn."""
        if self.template is None:
            raise ApiError(400, "this model has no chat template (no \"chat_template\" in "
                                "tokenizer_config.json and no chat_template.jinja): use "
                                "/v1/completions with a prompt instead", param="messages")
        try:
            return self.template.render(messages=messages, tools=None, documents=None,
                                        add_generation_prompt=True, **self.special_tokens)
        except jinja2.exceptions.TemplateError as exc:
            raise ApiError(400, f"the chat template refused the messages: {exc}",
                           param="messages") from exc
        except Exception as exc:  # noqa: BLE001
            # The template is the checkpoint's code run on the client's
            # messages: whatever else it raises (tojson of a missing field,
            # str + int of an extra field ...) is its refusal of them too.
            raise ApiError(400, f"the chat template failed on the messages: "
                                f"{type(exc).__name__}: {exc}", param="messages") from exc


# -- the engine thread ---------------------------------------------------------


class _Submission:
    """One request between its HTTP handler (on the event loop) and the
    engine thread: the prompt and options in, events out through an
    asyncio.Queue."""

    def __init__(self, prompt_ids, options):
        self.prompt_ids = prompt_ids
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.accepted = self.loop.create_future()  # the engine's id, or the refusal
        self.events = asyncio.Queue()  # (token or None, finished, reason), or an Exception
        self.request_id = None  # set by the engine thread
        self.cancelled = False  # engine thread only


def _resolve(future, result=None, error=None):
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _deliver(items):
    for submission, item in items:
        submission.events.put_nowait(item)


def _post(loop, callback, *args):
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


class EngineThread:
    """Owns a model's engine in one thread: takes submissions and
    cancellations from the handlers, steps the batch while it has work, and
    hands every event to the handler of its request on its event loop.

    running and waiting are the engine's counts after its last step."""

    def __init__(self, model, step_tokens=512):
        self._engine = model.engine(step_tokens)
        self._cond = threading.Condition()
        self._new = []
        self._cancel = []
        self._active = {}  # engine request id -> _Submission (engine thread only)
        self._busy = False
        self._stopping = False
        self.running = 0
        self.waiting = 0
        self._thread = threading.Thread(target=self._run, name="moert-engine", daemon=True)

    @property
    def queued(self):
        """Requests waiting for a place in the batch, or for the engine thread."""
        return self.waiting + len(self._new)

    def start(self):
        self._thread.start()

    def stop(self, timeout=10.0):
        """Stops the thread after its current step; requests still open end
        with an error."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, submission):
        with self._cond:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", type="server_error")
            self._new.append(submission)
            self._cond.notify()

    def cancel(self, submission):
        with self._cond:
            self._cancel.append(submission)
            self._cond.notify()

    def _run(self):
        try:
            while True:
                with self._cond:
                    while not (self._stopping or self._new or self._cancel or self._busy):
                        self._cond.wait()
                    if self._stopping:
                        return
                    new, self._new = self._new, []
                    cancel, self._cancel = self._cancel, []
                self._cancel_requests(cancel)
                self._submit_requests(new)
                if not self._engine.idle:
                    self._step()
                self._busy = not self._engine.idle
                self.running, self.waiting = self._engine.running, self._engine.waiting
        except BaseException:  # pragma: no cover - a bug, not a request's fault
            logger.exception("the engine thread failed")
        finally:
            with self._cond:
                self._stopping = True
                left = self._new + list(self._active.values())
                self._new = []
            self._fail(left, 503, "the server is shutting down")
            self._active.clear()

    def _cancel_requests(self, submissions):
        for s in submissions:
            s.cancelled = True
            if s.request_id is not None and self._active.pop(s.request_id, None) is not None:
                self._engine.cancel(s.request_id)

    def _submit_requests(self, submissions):
        for s in submissions:
            if s.cancelled:
                continue
            try:
                s.request_id = self._engine.submit(s.prompt_ids, **s.options)
            except (_moert.Error, TypeError, ValueError, OverflowError) as exc:
                _post(s.loop, _resolve, s.accepted, None, _engine_error(exc))
                continue
            self._active[s.request_id] = s
            _post(s.loop, _resolve, s.accepted, s.request_id)

    def _step(self):
        try:
            events = self._engine.step()
        except _moert.Error as exc:
            logger.error("a step failed: %s", exc)
            failed = list(self._active.values())
            for request_id in self._active:
                self._engine.cancel(request_id)
            self._active.clear()
            self._fail(failed, 500, f"generation failed: {exc}")
            return
        by_loop = {}
        for request_id, token, finished, reason in events:
            s = self._active.get(request_id)
            if s is None:  # cancelled: nobody reads it any more
                continue
            if finished:
                del self._active[request_id]
            by_loop.setdefault(s.loop, []).append((s, (token, finished, reason)))
        for loop, items in by_loop.items():
            _post(loop, _deliver, items)

    @staticmethod
    def _fail(submissions, status, message):
        for s in submissions:
            error = ApiError(status, message, type="server_error")  # raised in its handler
            _post(s.loop, _resolve, s.accepted, None, error)
            _post(s.loop, _deliver, [(s, error)])


# -- text out --------------------------------------------------------------------


class _Detokenizer:
    """The text of a growing list of token ids, piece by piece, as
    moert.text.text_pieces: a short window of recent ids is decoded at a time,
    and a piece ending in an incomplete character waits for the next token,
    so the pieces joined equal decode(all ids)."""

    def __init__(self, decode):
        self._decode = decode
        self._ids = []
        self._prefix = 0
        self._emitted = 0

    def push(self, token):
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix:self._emitted])
        now = self._decode(self._ids[self._prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self._prefix, self._emitted = self._emitted, len(self._ids)
            return now[len(before):]
        return ""

    def flush(self):
        if self._emitted == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix:self._emitted])
        now = self._decode(self._ids[self._prefix:])
        self._emitted = len(self._ids)
        return now[len(before):] if len(now) > len(before) else ""


class _TextOutput:
    """A request's answer: text decoded as tokens arrive, cut at the first
    stop string.  take() gives the text not given yet, holding back the tail
    that could still begin a stop string."""

    def __init__(self, decode, stop):
        self._detokenizer = _Detokenizer(decode)
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.text = ""
        self.stopped = False  # a stop string was found
        self._given = 0

    def push(self, token):
        self._append(self._detokenizer.push(token))

    def finish(self):
        self._append(self._detokenizer.flush())

    def _append(self, piece):
        if not piece or self.stopped:
            return
        start = max(0, len(self.text) - self._hold)
        self.text += piece
        found = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
        if found:
            self.text = self.text[:min(found)]
            self.stopped = True

    def take(self, final=False):
        end = len(self.text) if final or self.stopped else len(self.text) - self._hold
        if end <= self._given:
            return ""
        piece, self._given = self.text[self._given:end], end
        return piece


class Generation:
    """One request's generation, seen from its handler: submit(), then
    pieces() yields the answer's text as it grows; finish_reason and the token
    counts are set as it goes.  Leaving pieces() before the end (a stop
    string, a client gone) cancels the request in the engine."""

    def __init__(self, server, kind, prompt_ids, max_tokens, sampling, stop, eos_ids):
        self.id = f"{kind}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason = None  # "stop" | "length" once finished
        self.outcome = "pending"  # for the log line
        self._server = server
        self._output = _TextOutput(server.model.decode, stop)
        self._eos = set(eos_ids)
        self._submission = _Submission(prompt_ids, dict(max_new_tokens=max_tokens, stop=eos_ids,
                                                        **sampling))
        self._open = False  # submitted and not finished

    async def submit(self):
        """Hands the request to the engine; raises ApiError when it is refused."""
        self._server.engine.submit(self._submission)
        try:
            await self._submission.accepted
        except asyncio.CancelledError:
            self._server.engine.cancel(self._submission)
            raise
        self._open = True

    def cancel(self, outcome):
        if self._open:
            self._open = False
            self._server.engine.cancel(self._submission)
            self.outcome = outcome

    async def pieces(self):
        try:
            while self._open:
                item = await self._submission.events.get()
                if isinstance(item, Exception):
                    self._open = False
                    self.outcome = f"failed: {item}"
                    raise item
                token, finished, reason = item
                if token is not None:
                    self.completion_tokens += 1
                    if not (finished and reason == "stop" and token in self._eos):
                        self._output.push(token)
                if finished:
                    self._open = False
                    self._output.finish()
                    self.finish_reason = "stop" if reason == "stop" or self._output.stopped \
                        else "length"
                elif self._output.stopped:
                    self.cancel("stop string")
                    self.finish_reason = "stop"
                if self.finish_reason is not None and self.outcome == "pending":
                    self.outcome = self.finish_reason
                piece = self._output.take(final=self.finish_reason is not None)
                if piece:
                    yield piece
        finally:
            self.cancel("cancelled: client disconnected")

    async def text(self):
        return "".join([piece async for piece in self.pieces()])

    def usage(self):
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def describe(self):
        return (f"{self.id}: {self.prompt_tokens} prompt + {self.completion_tokens} completion "
                f"tokens, {self.outcome}")


# -- request bodies ----------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class _GenerationRequest(BaseModel):
    """Fields both endpoints take; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    max_tokens: Optional[StrictInt] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[StrictInt] = None  # not OpenAI's: 0 means no limit
    seed: Optional[StrictInt] = None
    stop: Optional[Union[str, List[str]]] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[StrictInt] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[Dict[str, float]] = None
    user: Optional[str] = None
    ignore_eos: bool = False  # not OpenAI's: generate until max_tokens


class CompletionRequest(_GenerationRequest):
    prompt: Union[str, List[StrictInt], List[str], List[List[StrictInt]]]
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    logprobs: Optional[int] = None
    best_of: Optional[StrictInt] = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id ... reach the template

    role: str
    content: Optional[Union[str, List[Dict[str, Any]]]] = None


class ChatRequest(_GenerationRequest):
    messages: List[ChatMessage]
    max_completion_tokens: Optional[StrictInt] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    tools: Optional[List[Any]] = None
    response_format: Optional[Dict[str, Any]] = None


def _unsupported(param, what):
    return ApiError(400, f"{what} is not supported by this server", param=param)


def _check_common(body):
    if body.n not in (None, 1):
        raise ApiError(400, f"n must be 1 (one answer per request), got {body.n}", param="n")
    if body.presence_penalty or body.frequency_penalty:
        raise _unsupported("presence_penalty" if body.presence_penalty else "frequency_penalty",
                           "a presence or frequency penalty")
    if body.logit_bias:
        raise _unsupported("logit_bias", "logit_bias")


# -- the app ---------------------------------------------------------------------


def _sse(data):
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class Server:
    """The state the endpoints share: the model, its engine thread, the
    checkpoint's chat template and end-of-sequence ids."""

    def __init__(self, model, name, step_tokens=512, max_waiting=0):
        self.model = model
        self.name = name
        self.max_waiting = max_waiting
        self.max_context = int(model.info["max_context"])
        self.kv_cache_tokens = int(model.info["kv_cache_tokens"])
        self.checkpoint = Checkpoint(model.path, model.tokenizer)
        self.engine = EngineThread(model, step_tokens)
        self.created = int(time.time())

    def drain(self, timeout):
        """The server is shutting down: requests still open in `timeout`
        seconds end then (503, or an error event in a stream), when the engine
        thread stops."""
        timer = threading.Timer(max(0.0, timeout), self.engine.stop)
        timer.daemon = True
        timer.start()

    def check_model(self, name):
        if name is not None and name != self.name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves "
                                f"'{self.name}'", param="model", code="model_not_found")

    def _sampling(self, body):
        seed = body.seed if body.seed is not None else random.getrandbits(64)
        return dict(temperature=1.0 if body.temperature is None else body.temperature,
                    top_p=1.0 if body.top_p is None else body.top_p,
                    top_k=0 if body.top_k is None else body.top_k,
                    seed=seed % (1 << 64))

    async def start(self, kind, body, prompt_ids, max_tokens):
        """A submitted Generation of `prompt_ids`, or an ApiError."""
        if self.max_waiting and self.engine.queued >= self.max_waiting:
            raise ApiError(503, f"the server is busy: {self.engine.queued} requests are waiting "
                                "already; retry later", type="server_error", code="overloaded")
        if max_tokens is None:  # what is left of the context (or of a smaller KV cache)
            max_tokens = max(1, min(self.max_context, self.kv_cache_tokens) - len(prompt_ids))
        elif max_tokens >= 0:  # the engine stops at the end of the context anyway
            max_tokens = min(max_tokens, self.max_context)
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        eos = [] if body.ignore_eos else self.checkpoint.eos_ids
        generation = Generation(self, kind, prompt_ids, max_tokens, self._sampling(body), stop,
                                eos)
        await generation.submit()
        return generation

    def encode(self, text, add_special_tokens):
        return self.model.encode(text, add_special_tokens=add_special_tokens)


async def _until_disconnected(request):
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _collect(generation, request):
    """The whole answer of a non-streaming request; cancels it when the
    client goes away first (and raises CancelledError then)."""
    answer = asyncio.ensure_future(generation.text())
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not answer.done():
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answer
    if answer.cancelled():  # nobody reads this answer: the status is for the log
        raise ApiError(499, "the client disconnected before the answer was complete")
    return answer.result()


def _error_response(error):
    return JSONResponse(error.body(), status_code=error.status)


class _RequestLog:
    """One log line per request once its response ends: client, request
    line, status, seconds, and what the request generated."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        state = scope.setdefault("state", {})
        status = [None]
        done = [False]

        async def send_and_watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done[0] = True

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            client = scope.get("client")
            who = f"{client[0]}:{client[1]}" if client else "-"
            line = (f'{who} "{scope["method"]} {scope["path"]}" {status[0] or "-"} '
                    f"{time.monotonic() - start:.3f}s")
            generation = state.get("moert_generation")
            if generation is not None:
                line += " " + generation.describe()
            elif "moert_error" in state:
                line += " " + state["moert_error"]
            elif not done[0]:
                line += " client disconnected"
            logger.info(line)


def create_app(model, name=None, step_tokens=512, max_waiting=0):
    """The FastAPI app serving `model` (a moert.Model with a tokenizer).

    Args:
        model: the loaded model; the app owns an engine on it while it runs
            (between its startup and shutdown).
        name: the model's name in requests and responses (default: the
            checkpoint directory's name).
        step_tokens: tokens one engine step runs at most.
        max_waiting: refuse requests (503) while this many wait; 0: no limit.
    """
    server = Server(model, name or os.path.basename(os.path.normpath(model.path)), step_tokens,
                    max_waiting)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.engine.start()
        try:
            yield
        finally:
            server.engine.stop()

    app = FastAPI(title="moert", version=_moert.__version__, lifespan=lifespan)
    app.state.server = server
    app.add_middleware(_RequestLog)

    @app.exception_handler(ApiError)
    async def api_error(request, exc):
        request.state.moert_error = exc.message
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        problems = []
        param = None
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            if e.get("type") == "json_invalid":
                error = e.get("ctx", {}).get("error")
                problems.append("the body is not valid JSON" + (f" ({error})" if error else ""))
                continue
            param = param or (loc[0] if loc else None)
            problems.append((".".join(loc) + ": " if loc else "") + e.get("msg", "invalid"))
        message = "; ".join(problems[:5]) or "invalid request"
        request.state.moert_error = message
        return _error_response(ApiError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(ApiError(exc.status_code, str(exc.detail), type=kind))

    @app.get("/health")
    async def health():
        return {"status": "ok", "running": server.engine.running,
                "waiting": server.engine.waiting}

    def model_card():
        return {"id": server.name, "object": "model", "created": server.created,
                "owned_by": "moert", "max_model_len": server.max_context}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model_info(name: str):
        server.check_model(name)
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        server.check_model(body.model)
        _check_common(body)
        if body.best_of not in (None, 1):
            raise ApiError(400, f"best_of must be 1, got {body.best_of}", param="best_of")
        if body.echo:
            raise _unsupported("echo", "echo")
        if body.suffix:
            raise _unsupported("suffix", "suffix")
        if body.logprobs is not None:
            raise _unsupported("logprobs", "logprobs")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise ApiError(400, f"one prompt per request, got {len(prompt)}", param="prompt")
            prompt = prompt[0]
        prompt_ids = server.encode(prompt, True) if isinstance(prompt, str) else list(prompt)
        generation = await server.start("cmpl", body, prompt_ids, 16 if body.max_tokens is None
                                        else body.max_tokens)
        request.state.moert_generation = generation

        def chunk(text, finish_reason):
            return {"id": generation.id, "object": "text_completion",
                    "created": generation.created, "model": server.name,
                    "choices": [{"index": 0, "text": text, "finish_reason": finish_reason,
                                 "logprobs": None}]}

        if body.stream:
            return _stream(generation, body, lambda text: chunk(text, None),
                           lambda: chunk("", generation.finish_reason),
                           lambda: dict(chunk("", None), choices=[], usage=generation.usage()))
        text = await _collect(generation, request)
        return dict(chunk(text, generation.finish_reason), usage=generation.usage())

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        server.check_model(body.model)
        _check_common(body)
        if body.logprobs or body.top_logprobs:
            raise _unsupported("logprobs", "logprobs")
        if body.tools:
            raise _unsupported("tools", "tools (function calling)")
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise _unsupported("response_format", "a response format other than text")
        messages = [_message_dict(i, m) for i, m in enumerate(body.messages)]
        prompt_ids = server.encode(server.checkpoint.render(messages), False)
        max_tokens = (body.max_completion_tokens if body.max_completion_tokens is not None
                      else body.max_tokens)
        generation = await server.start("chatcmpl", body, prompt_ids, max_tokens)
        request.state.moert_generation = generation

        def chunk(delta, finish_reason):
            return {"id": generation.id, "object": "chat.completion.chunk",
                    "created": generation.created, "model": server.name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                 "logprobs": None}]}

        if body.stream:
            return _stream(generation, body, lambda text: chunk({"content": text}, None),
                           lambda: chunk({}, generation.finish_reason),
                           lambda: dict(chunk({}, None), choices=[], usage=generation.usage()),
                           first=chunk({"role": "assistant", "content": ""}, None))
        text = await _collect(generation, request)
        return {"id": generation.id, "object": "chat.completion", "created": generation.created,
                "model": server.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": generation.finish_reason, "logprobs": None}],
                "usage": generation.usage()}

    return app


def _message_dict(index, message):
    """A chat message as the template sees it: a dict, its content a str
    (text parts joined by newlines)."""
    m = message.model_dump(exclude_none=True)
    content = m.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{index}].content: only text parts are supported, "
                                    f"got type {part.get('type')!r}", param="messages")
            texts.append(part["text"])
        m["content"] = "\n".join(texts)
    return m


def _stream(generation, body, piece_chunk, last_chunk, usage_chunk, first=None):
    """The server-sent events of a streaming answer."""
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    async def events():
        try:
            try:
                if first is not None:
                    yield _sse(first)
                async for piece in generation.pieces():
                    yield _sse(piece_chunk(piece))
                yield _sse(last_chunk())
                if include_usage:
                    yield _sse(usage_chunk())
            except ApiError as exc:
                yield _sse(exc.body())
            yield "data: [DONE]\n\n"
        finally:  # closed early: the client went away
            generation.cancel("cancelled: client disconnected")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- moert serve -------------------------------------------------------------------


def _log_config(level):
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["moert.server"] = {"handlers": ["default"], "level": level.upper(),
                                         "propagate": False}
    return config


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling the app when its shutdown begins (on SIGINT
    or SIGTERM), before it waits for the open connections to close."""

    def __init__(self, config, on_shutdown):
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets=None):
        self._on_shutdown()
        await super().shutdown(sockets=sockets)


def serve(args):
    """`moert serve`: loads the model and serves it until SIGINT/SIGTERM.
    args: the options of moert serve (moert.__main__), an argparse.Namespace."""
    directory = args.model
    if not os.path.isfile(os.path.join(directory, _text.TOKENIZER_FILE)):
        raise _moert.Error(f"{os.path.join(directory, _text.TOKENIZER_FILE)} not found: the "
                           "server's prompts and answers are text, and need the checkpoint's "
                           "tokenizer")
    model = load(directory, backend=args.backend, dtype=args.dtype, max_context=args.max_context,
                 quantize=args.quantize, precision=args.precision, kv_dtype=args.kv_dtype,
                 max_sequences=args.max_sequences, kv_cache_tokens=args.kv_cache_tokens)
    _ = model.tokenizer  # a missing package or an unreadable file fails now
    app = create_app(model, args.model_name or None, args.step_tokens, args.max_waiting)
    server = app.state.server
    info = model.info
    logging.config.dictConfig(_log_config(args.log_level))
    logger.info("%s (%s) on %s: %d sequences at once, %d positions each, a KV cache of %d "
                "positions; %s", server.name, info["model_type"], model.device,
                info["max_sequences"], info["max_context"], info["kv_cache_tokens"],
                "chat template found" if server.checkpoint.template is not None
                else "no chat template: /v1/chat/completions answers 400")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            log_config=_log_config(args.log_level), access_log=False,
                            timeout_graceful_shutdown=max(0.0, args.shutdown_timeout) + 5.0)
    try:
        _Uvicorn(config, lambda: server.drain(args.shutdown_timeout)).run()
    except KeyboardInterrupt:  # uvicorn raises the SIGINT it handled again once it is done
        return 130
    return 0
