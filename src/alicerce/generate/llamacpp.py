"""Local GGUF models on llama.cpp, through the prebuilt `xllamacpp` wheel (no compiler).

xllamacpp embeds llama.cpp's own server: continuous batching over `llm_parallel` slots sharing
one unified KV cache, prompt (prefix) caching, JSON-schema and GBNF grammars. We call its
handlers in-process. The server also opens a loopback HTTP port; it gets a random API key so
nothing else on the machine can use it, and we use it only for /tokenize.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from alicerce.errors import GeneratorError, InputError
from alicerce.generate.base import (
    BULLETS_GBNF,
    gbnf_tokens,
    parse_chunk,
    parse_completion,
    request_body,
)
from alicerce.generate.kv_budget import PER_MESSAGE, PER_PROMPT, KvBudget
from alicerce.generate.params import DecodingParams, require
from alicerce.types import Completion, Delta, Message

# Models load once per process and configuration: a model is hundreds of MB of memory.
_LOADED: dict[tuple[Any, ...], LlamaCppGenerator] = {}
_LOCK = threading.Lock()


def _import() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:  # pragma: no cover - xllamacpp is a core dependency
        raise GeneratorError("the llama.cpp runtime (xllamacpp) is not installed",
                             hint="pip install xllamacpp") from exc
    return xllamacpp


class Inflight:
    """Requests running on one loaded model (shared by its adapter views), so a swapped-out
    instance is dropped only when the last has finished."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Whether it became idle within `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout)


class LlamaCppGenerator:
    """One GGUF model loaded in this process."""

    backend = "llama.cpp"

    def __init__(self, name: str, path: Path, context: int = 4096, threads: int = 0,
                 parallel: int = 4, cache_ram_mb: int = 128,
                 adapters: tuple[Path, ...] = ()) -> None:
        xlc = _import()
        params = xlc.CommonParams()
        params.model.path = str(path)
        # GGUF LoRA adapters are attached at load, unapplied; a request names the one it
        # wants (`adapted`), so one copy of the base serves plain and adapted requests.
        params.lora_adapters = [xlc.CommonAdapterLoraInfo(str(p), 0.0) for p in adapters]
        params.lora_init_without_apply = True
        params.n_ctx = context
        params.n_parallel = parallel
        params.kv_unified = True  # every slot may use the whole window
        # llama.cpp keeps earlier prompts' KV state in host RAM for reuse, 8 GB by default:
        # a server's memory would grow with every distinct prompt up to that. Bound it.
        params.cache_ram_mib = cache_ram_mb
        # By default llama.cpp moves every idle slot's KV to that RAM cache when a request
        # starts, and takes a prompt back from it only when most of it matches: a RAG
        # prompt shares just its system prompt (~160 of ~300-700 tokens) with the last
        # one, so it was read again every time (bench/latency.py, "cached 0"). Left in its
        # slot, the KV is reused by llama.cpp's slot choice (10% of the prompt in common).
        params.cache_idle_slots = False
        params.verbosity = -1
        params.warmup = False
        n = threads or os.cpu_count() or 1
        params.cpuparams.n_threads = n
        params.cpuparams_batch.n_threads = n
        self._key = secrets.token_urlsafe(24)
        params.api_keys = [self._key]
        try:
            self._server = xlc.Server(params)
        except RuntimeError as exc:
            if adapters:
                raise GeneratorError(f"llama.cpp could not load {path} with its {len(adapters)} "
                                     f"adapters ({', '.join(p.parent.name for p in adapters)})",
                                     hint="an adapter file may be damaged or made for another "
                                          "model: remove it (alicerce adapters remove)") from exc
            raise GeneratorError(f"llama.cpp could not load {path}",
                                 hint="the file may be truncated or corrupt, or too large "
                                      "for memory; re-install it or pick another model") from exc
        self.name, self.path, self.context_size, self.parallel = name, path, context, parallel
        self.base = name  # views keep it: the model whose weights these are
        self.adapters = adapters
        self.adapter: Path | None = None  # the one applied (a view from `adapted`)
        self.kv = KvBudget(context)
        self.idle = Inflight()

    def adapted(self, adapter: Path | None, name: str) -> LlamaCppGenerator:
        """This model with `adapter` (one of those it loaded; None: none) applied to every
        request: a view sharing the loaded model, its slots and its KV budget."""
        if adapter is not None and adapter not in self.adapters:
            raise GeneratorError(f"{self.name} was loaded without the adapter {adapter}")
        view = copy.copy(self)
        view.name, view.adapter = name, adapter
        return view

    # -- requests ------------------------------------------------------------------------
    def _body(self, messages: Sequence[Message], params: DecodingParams) -> dict[str, Any]:
        require(params, self.backend, self.name)
        if params.n > self.parallel:
            raise InputError(f"n={params.n} candidates but the model runs {self.parallel} "
                             "sequences at once", hint="lower n, or raise llm_parallel")
        body = request_body(messages, params, self.name, extras=True)
        body.pop("repetition_penalty", None)
        body["repeat_penalty"] = params.repetition_penalty
        body["top_k"] = params.top_k  # llama.cpp's own defaults (40, 0.05) would apply
        body["min_p"] = params.min_p
        body["cache_prompt"] = True
        if self.adapters:  # llama.cpp applies what a request lists, others at scale 0
            body["lora"] = [{"id": i, "scale": 1.0 if p == self.adapter else 0.0}
                            for i, p in enumerate(self.adapters)]
        if params.format == "bullets":
            body["grammar"] = BULLETS_GBNF
        return body

    def _claim(self, messages: Sequence[Message], body: dict[str, Any],
               params: DecodingParams) -> int:
        """The KV tokens this request needs (its max_tokens shrunk to fit the window)."""
        prompt = (self.count_tokens("\n".join(m.content for m in messages))  # one call
                  + PER_MESSAGE * len(messages) + PER_PROMPT)
        fitted = self.kv.fit(prompt, params.max_tokens, params.n)
        body["max_tokens"] = fitted
        return (prompt + fitted) * params.n

    def complete(self, messages: Sequence[Message], params: DecodingParams) -> Completion:
        body = self._body(messages, params)
        need = self._claim(messages, body, params)
        started = time.perf_counter()
        with self.idle, self.kv.claim(need):
            data = self._server.handle_chat_completions(body)
        _raise_for(data, self.name)
        return parse_completion(data, self.name, _timings(data, started))

    def stream(self, messages: Sequence[Message], params: DecodingParams) -> Iterator[Delta]:
        body = self._body(messages, params)
        if params.n > 1:
            raise InputError("streaming returns one candidate", hint="use n=1 to stream")
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        need = self._claim(messages, body, params)  # errors surface before the first delta
        return self._claimed(need, body)

    def _claimed(self, need: int, body: dict[str, Any]) -> Iterator[Delta]:
        with self.idle, self.kv.claim(need):
            yield from _stream(lambda cb: self._server.handle_chat_completions(body, cb),
                               self.name)

    def score(self, messages: Sequence[Message], text: str) -> float:
        """Log-likelihood of `text` as the reply: a grammar of its token ids (the
        tokenizer's own split: forcing the characters instead lets an unlikely text take
        odd, much less likely tokens) forces the reply, and llama.cpp reports each token's
        log-probability under the model itself, before the grammar. Its server cannot echo
        a prompt's log-probabilities, so forcing the reply is the way through it."""
        ids = self._tokenize(text)
        params = DecodingParams(max_tokens=len(ids) + 8, temperature=0.0, logprobs=True,
                                top_logprobs=1)
        body = self._body(messages, params)
        body["grammar"] = gbnf_tokens(ids)
        need = self._claim(messages, body, params)
        with self.idle, self.kv.claim(need):
            data = self._server.handle_chat_completions(body)
        _raise_for(data, self.name)
        choice = data["choices"][0]
        if (choice["message"].get("content") or "").strip() != text.strip():
            raise GeneratorError(f"{self.name} could not be made to repeat the answer to "
                                 "score it (it was cut off)",
                                 hint="raise llm_context: the prompt and the answer must fit")
        return sum(float(t["logprob"]) for t in (choice.get("logprobs") or {}).get(
            "content") or () if t.get("token"))

    def _tokenize(self, text: str) -> list[int]:
        req = urllib.request.Request(
            f"{self._server.listening_address}/tokenize",
            data=json.dumps({"content": text}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return [int(t) for t in json.loads(resp.read())["tokens"]]

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text))


def _stream(call: Callable[[Callable[[dict[str, Any]], bool]], Any],
            model: str) -> Iterator[Delta]:
    """Turn llama.cpp's streaming callback into an iterator; closing it stops decoding."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue()
    cancelled = threading.Event()

    def on_chunk(chunk: dict[str, Any]) -> bool:
        items.put(("chunk", chunk))
        return cancelled.is_set()

    def run() -> None:
        try:
            items.put(("done", call(on_chunk)))
        except BaseException as exc:  # handed to the consumer's thread
            items.put(("error", exc))

    worker = threading.Thread(target=run, daemon=True, name="llama-stream")
    worker.start()
    try:
        while True:
            kind, item = items.get()
            if kind == "error":
                raise GeneratorError(f"{model} failed while streaming: {item}") from item
            if kind == "done":
                if isinstance(item, dict):
                    _raise_for(item, model)
                return
            _raise_for(item, model)
            yield parse_chunk(item)
    finally:
        # A consumer that stops early: llama.cpp ends the request at its next token. Wait for
        # that, so no request outlives its stream (or the interpreter, which aborts then).
        cancelled.set()
        worker.join(timeout=120)


def _raise_for(data: Any, model: str) -> None:
    if not isinstance(data, dict) or "error" not in data:
        return
    err = data["error"]
    message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    if isinstance(err, dict) and err.get("type") == "exceed_context_size_error":
        raise InputError(f"the prompt does not fit: {message}",
                         hint="shorten the input or history, or raise llm_context")
    if isinstance(err, dict) and err.get("code") == 400:
        raise InputError(f"{model} rejected the request: {message}")
    raise GeneratorError(f"{model} failed: {message}")


def _timings(data: dict[str, Any], started: float) -> dict[str, float]:
    t = data.get("timings") or {}
    out = {"total_ms": (time.perf_counter() - started) * 1000}
    for src, dst in (("prompt_ms", "prompt_ms"), ("predicted_ms", "decode_ms"),
                     ("predicted_per_second", "decode_tok_s"),
                     ("prompt_per_second", "prompt_tok_s")):
        if src in t:
            out[dst] = float(t[src])
    return out


def load(name: str, path: Path, context: int, threads: int, parallel: int,
         cache_ram_mb: int = 128, adapters: tuple[Path, ...] = ()) -> LlamaCppGenerator:
    """The shared instance for this file, configuration and adapters, loaded on first use."""
    key = (str(path.resolve()), context, threads, parallel, cache_ram_mb, adapters)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = LlamaCppGenerator(name, path, context, threads, parallel,
                                             cache_ram_mb, adapters)
        return _LOADED[key]


def release(gen: LlamaCppGenerator) -> None:
    """Forget `gen` (a swapped-out instance): later loads build their own."""
    with _LOCK:
        for key, loaded in list(_LOADED.items()):
            if loaded is gen:
                del _LOADED[key]
