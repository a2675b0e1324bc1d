"""moert.load() and moert.Model: the compiled model with text input and
output, profiling and load progress bars."""

from __future__ import annotations

import json
import os
from typing import (TYPE_CHECKING, Any, Callable, Iterator, List, Literal, Mapping, Tuple,
                    Union, overload)

from . import _moert, _progress, text as _text
from .profiling import Profile

if TYPE_CHECKING:
    from ._moert import _TokenIds as TokenIds

# What load()/to() accept as progress.
Progress = Union[None, bool, Callable[[str, int, int], object]]


def load(path: Union[str, os.PathLike], backend: str = "reference", dtype: str = "f32",
         max_context: int = 0, strict: bool = False, progress: Progress = None,
         quantize: str = "", precision: str = "fast", kv_dtype: str = "",
         mla_cache: str = "latent", max_sequences: int = 16, kv_cache_tokens: int = 0,
         prefill_chunk: int = 512) -> Model:
    """Loads a Hugging Face checkpoint directory and returns a Model.

    Args:
        path: directory with config.json and model.safetensors (or the
            shards listed in model.safetensors.index.json); tokenizer.json
            beside them enables text prompts.
        backend: device to run on: "reference", "cpu", "cuda:1", ...
            (see backends()).
        dtype: activation dtype, "f32", "bf16" or "f16"; weights stay as
            stored.
        max_context: positions of one sequence; 0 means
            min(max_position_embeddings, 4096).
        strict: when True, an op the backend cannot run is an error instead
            of a fallback to the reference backend.
        progress: a bar on stderr while loading: None (the default) shows one
            when stderr is a terminal, True always, False never; or a callable
            progress(stage, done, total) called instead.  Stages come in order
            "read" (the checkpoint paged in, file by file), "build" (the graph
            with its weights), "prepare" (on the device); done and total count
            bytes of weights and done rises from 0 to total in each.  With a
            progress callback the checkpoint is read up front so that the
            disk reads show; an exception it raises (or Ctrl-C) aborts the
            load and propagates.  The bar uses tqdm when it is installed.
        quantize: "" (weights as stored), "int8", "int4" or "mxfp4": every
            float or fp8 linear weight inside the decoder layers (attention,
            dense MLPs, routed and shared experts; not embeddings, lm_head or
            routers) is packed at load, round to nearest with groups of 32
            along K (int8 and int4 symmetric with f16 scales, int4 as
            llama.cpp's Q4_0; mxfp4 with e8m0 shared exponents).  Weights a
            GPTQ, AWQ or MXFP4 checkpoint stores packed stay as they are (they
            are read without it).  info["weight_dtype"] shows the result,
            e.g. "int4 g32 78%, bf16 22%".
        precision: "fast" (the default) or "exact".  With f32 activations,
            "fast" lets products with weights narrower than f32 (bf16, f16,
            fp8, packed) be formed in bf16 -- x and the weight rounded to
            bf16 (2^-9 relative each), accumulated in f32 -- where that is
            faster (prompts on the CPU: about 2x); the residual stream, norms,
            attention and sums stay f32, routers' logits exact.  "exact": f32
            products of the weights as stored, the mode the tests check every
            backend against the reference in.
        kv_dtype: the KV cache's element type: "" (the default: the
            activation dtype), "f32", "bf16", "f16" or "fp8" (e4m3, no scale:
            a quarter of f32's bytes per cached position).
            summary()["kv_bytes_per_token"] shows what is allocated.
        mla_cache: DeepSeek's latent attention: "latent" (the default) caches
            one compressed vector per position (kv_lora_rank +
            qk_rope_head_dim, and the kv_lora_rank values read as the value)
            with kv_b_proj folded into the query and output; "expanded"
            caches every head's key and value.  Same logits up to summation
            order.
        max_sequences: sequences open at once (sessions and batched
            requests: generate_batch(), engine()).
        kv_cache_tokens: positions of the KV cache pool that the sequences
            share, handed out in blocks as they grow; 0 (the default) means
            max_context.  Memory: kv_cache_tokens x
            summary()["kv_bytes_per_token"].
        prefill_chunk: prompts longer than this run in chunks of this many
            tokens, bounding activation memory by the chunk.

    Raises:
        moert.Error: naming the file, tensor or parameter at fault (an
            unknown backend lists the available ones; an unknown model_type
            lists the supported ones).
        TypeError: progress is not True, False, None or a callable.
    """
    callback = _progress.resolve(progress)
    try:
        loaded = _moert.load(os.fspath(path), backend, dtype, max_context, strict, callback,
                             quantize, precision, kv_dtype, mla_cache, max_sequences,
                             kv_cache_tokens, prefill_chunk)
    finally:
        _progress.close(callback)
    return Model(loaded)


def random_model(config: Union[str, Mapping[str, Any]], weights: str = "bf16", seed: int = 0,
                 std: float = 0.02, name: str = "config", backend: str = "reference",
                 dtype: str = "f32", max_context: int = 0, strict: bool = False,
                 quantize: str = "", progress: Progress = None,
                 precision: str = "fast", kv_dtype: str = "",
                 mla_cache: str = "latent", max_sequences: int = 16,
                 kv_cache_tokens: int = 0, prefill_chunk: int = 512) -> Model:
    """A Model with random weights built from a config.json body, no files.

    Args:
        config: the config.json body, a dict or a JSON str (e.g. an entry of
            bench/models.json).
        weights: storage of the weights: "f32", "bf16", "f16", "fp8" (linear
            weights inside the decoder layers e4m3 with 128x128 block
            scales), or "int8", "int4", "mxfp4" (the bf16 weights packed at
            load as quantize packs them).
        seed, std: every matrix N(0, std²) (a bounded draw), norms 1.0; the
            values depend only on the seed and each tensor's name.
        name: names the config in error messages (and is the model's path).
        backend, dtype, max_context, strict, quantize, progress, precision,
            kv_dtype, mla_cache, max_sequences, kv_cache_tokens, prefill_chunk:
            as for load() (progress sees "build", the bytes generated, and
            "prepare").

    Raises:
        moert.Error: naming `name` and the config field at fault.
    """
    body = config if isinstance(config, str) else json.dumps(dict(config))
    callback = _progress.resolve(progress)
    try:
        made = _moert.random_model(body, weights, seed, std, name, backend, dtype, max_context,
                                   strict, quantize, callback, precision, kv_dtype,
                                   mla_cache, max_sequences, kv_cache_tokens, prefill_chunk)
    finally:
        _progress.close(callback)
    return Model(made)


class Model(_moert.Model):
    """A checkpoint loaded on a device, from moert.load().

    Sequences share one KV cache pool: forward, generate and stream each run
    a sequence of their own, sessions live until garbage-collected, and
    generate_batch() / engine() run many at once (continuous batching).
    Prompts are token ids, or text when the checkpoint has
    a tokenizer.json and the `tokenizers` package is installed
    (encode/decode, generate(..., text=True), stream(..., text=True)).
    profile() times the runs inside a `with` block.
    """

    def __init__(self, model: _moert.Model) -> None:
        super().__init__(model)
        self._tokenizer = None

    # -- text --------------------------------------------------------------

    @property
    def tokenizer(self):
        """The checkpoint's tokenizers.Tokenizer (read from tokenizer.json on
        first use).  Raises moert.Error naming the missing file or package."""
        if self._tokenizer is None:
            self._tokenizer = _text.load_tokenizer(self.path)
        return self._tokenizer

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """The token ids (a list of int) of `text`, with the tokenizer's
        special tokens (a BOS ...) when add_special_tokens."""
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be a str, got {type(text).__name__}")
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, token_ids: TokenIds, skip_special_tokens: bool = True) -> str:
        """The text of `token_ids` (a list or 1-D integer array)."""
        ids = [int(t) for t in token_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def _prompt_ids(self, prompt):
        return self.encode(prompt) if isinstance(prompt, str) else prompt

    # The text overloads: ids by default, a str with text=True.  The prompt
    # may be a str, so the signature widens the compiled one's.
    @overload  # type: ignore[override]
    def generate(self, prompt: Union[str, TokenIds], max_new_tokens: int = ...,
                 temperature: float = ..., top_k: int = ..., top_p: float = ..., seed: int = ...,
                 stop: TokenIds = ..., text: Literal[False] = ...) -> List[int]: ...

    @overload
    def generate(self, prompt: Union[str, TokenIds], max_new_tokens: int = ...,
                 temperature: float = ..., top_k: int = ..., top_p: float = ..., seed: int = ...,
                 stop: TokenIds = ..., *, text: Literal[True]) -> str: ...

    @overload
    def generate(self, prompt: Union[str, TokenIds], max_new_tokens: int = ...,
                 temperature: float = ..., top_k: int = ..., top_p: float = ..., seed: int = ...,
                 stop: TokenIds = ..., text: bool = ...) -> Union[List[int], str]: ...

    def generate(self, prompt: Union[str, TokenIds], max_new_tokens: int = 16,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 stop: TokenIds = (), text: bool = False) -> Union[List[int], str]:
        """Generates tokens after a prompt.

        Args:
            prompt: token ids (a non-empty list or 1-D NumPy integer array),
                or a str, encoded with the checkpoint's tokenizer.
            max_new_tokens: how many tokens to generate at most.
            temperature: 0 picks the most likely token (greedy, lowest id on
                ties); otherwise logits are divided by it before sampling.
            top_k: sample among the k most likely tokens only (0: no limit).
            top_p: nucleus sampling, the smallest set of tokens whose
                probability reaches top_p (1.0: no limit).
            seed: seed of the sampler's random generator; the same seed gives
                the same tokens.
            stop: token ids that end generation; the stop token is included
                in the result.
            text: return the new tokens decoded to a str instead of ids.

        Returns:
            The new token ids (a list of int), or their text when text=True
            (the prompt is not included either way).  Generation also ends
            when the KV cache is full (max_context).

        Raises:
            moert.Error: a text prompt (or text=True) without tokenizer.json
                or the tokenizers package; see also forward().
        """
        if text:
            _ = self.tokenizer  # fail before generating, not after
        tokens = super().generate(self._prompt_ids(prompt), max_new_tokens, temperature, top_k,
                                  top_p, seed, stop)
        return self.decode(tokens) if text else tokens

    @overload  # type: ignore[override]
    def stream(self, prompt: Union[str, TokenIds], max_new_tokens: int = ...,
               temperature: float = ..., top_k: int = ..., top_p: float = ..., seed: int = ...,
               stop: TokenIds = ..., text: Literal[False] = ...) -> Iterator[int]: ...

    @overload
    def stream(self, prompt: Union[str, TokenIds], max_new_tokens: int = ...,
               temperature: float = ..., top_k: int = ..., top_p: float = ..., seed: int = ...,
               stop: TokenIds = ..., *, text: Literal[True]) -> Iterator[str]: ...

    @overload
    def stream(self, prompt: Union[str, TokenIds], max_new_tokens: int = ...,
               temperature: float = ..., top_k: int = ..., top_p: float = ..., seed: int = ...,
               stop: TokenIds = ..., text: bool = ...) -> Union[Iterator[int], Iterator[str]]: ...

    def stream(self, prompt: Union[str, TokenIds], max_new_tokens: int = 16,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
               stop: TokenIds = (), text: bool = False) -> Union[Iterator[int], Iterator[str]]:
        """Like generate(), but returns an iterator yielding each token as it
        is produced: token ids (a TokenStream), or with text=True pieces of
        text whose concatenation equals generate(..., text=True).

        Args: prompt, max_new_tokens, temperature, top_k, top_p, seed, stop
        and text as for generate().
        """
        if text:
            _ = self.tokenizer  # fail now, not at the first next()
        tokens = super().stream(self._prompt_ids(prompt), max_new_tokens, temperature, top_k,
                                top_p, seed, stop)
        return _text.text_pieces(tokens, self.decode) if text else tokens

    def generate_batch(self, prompts: List[Union[str, TokenIds]], max_new_tokens: int = 16,
                       temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                       seed: int = 0, stop: TokenIds = (), step_tokens: int = 512,
                       text: bool = False) -> Union[List[List[int]], List[str]]:
        """Generates after every prompt at once (continuous batching).

        Each step runs the next token of every running prompt, and chunks of
        the prompts joining, in one execution: the weights are read once per
        step for all of them.  Greedy results equal generate() on each
        prompt alone (up to ties within rounding).

        Args:
            prompts: a list of prompts, each token ids or a str.
            max_new_tokens, temperature, top_k, top_p, stop, text: as for
                generate(); prompt i is sampled with seed + i.
            step_tokens: tokens one step runs at most.

        Returns:
            One list of new token ids per prompt (or str with text=True).
        """
        if text:
            _ = self.tokenizer
        out = super().generate_batch([self._prompt_ids(p) for p in prompts], max_new_tokens,
                                     temperature, top_k, top_p, seed, stop, step_tokens)
        return [self.decode(t) for t in out] if text else out

    def stream_batch(self, prompts: List[Union[str, TokenIds]], max_new_tokens: int = 16,
                     temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                     seed: int = 0, stop: TokenIds = (),
                     step_tokens: int = 512) -> Iterator[Tuple[int, int]]:
        """Like generate_batch(), but an iterator yielding (prompt index,
        token id) pairs as each step produces them; every prompt's tokens
        come in order.  Closing the iterator early cancels what is left."""
        engine = self.engine(step_tokens)
        index = {}
        for i, p in enumerate(prompts):
            index[engine.submit(self._prompt_ids(p), max_new_tokens, temperature, top_k, top_p,
                                seed + i, stop)] = i
        while not engine.idle:
            for request, token, _, _ in engine.step():
                if token is not None:
                    yield index[request], token

    # -- devices, profiling ------------------------------------------------

    def to(self, backend: str, strict: bool = False, progress: Progress = None) -> Model:
        """Moves the model to another backend without re-reading the
        checkpoint and returns it.  Every open sequence ends.  On error
        (moert.Error) the model stays where it was.  progress: as for
        moert.load() (only the "prepare" stage)."""
        callback = _progress.resolve(progress)
        try:
            return super().to(backend, strict, callback)
        finally:
            _progress.close(callback)

    def profile(self) -> Profile:
        """A context manager timing every node of every run inside it:

            with model.profile() as prof:
                model.generate(ids, max_new_tokens=16)
            print(prof)            # per op: calls, total ms, ms/call, %
            prof.nodes()           # per node; prof.to_dict() for plain data

        Times accumulate over all the runs inside the block (a generate()
        counts its prefill and each decode step).  See moert.Profile."""
        return Profile(self)
