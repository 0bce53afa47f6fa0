"""OpenAI-compatible routes: chat completions, completions, embeddings, models.

`model` names an app (a collection, answered with RAG and citations) or a raw model. An app's
response is an ordinary completion whose extra field `alicerce` holds the citations, the
trace id, timings and versions; streams carry it on their last chunk.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from alicerce.access.keys import ApiKey
from alicerce.embed import EMBEDDING_MODELS
from alicerce.errors import AlicerceError, InputError
from alicerce.generate.params import DecodingParams
from alicerce.server.deps import Key, Svc, no_cache
from alicerce.server.errors import describe
from alicerce.server.service import Service
from alicerce.server.wire import AppOptions, ChatRequest, CompletionRequest, EmbeddingRequest
from alicerce.types import Completion, Delta, Message, TokenLogprob, Usage

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/chat/completions")
async def chat_completions(req: ChatRequest, request: Request, svc: Svc, key: Key) -> Any:
    messages = [Message("system" if m.role == "developer" else m.role, m.content)
                for m in req.messages]
    return await _generate(svc, key, request, req, messages,
                           lambda app: svc.chat_decoding(req, app), "chat")


@router.post("/completions")
async def completions(req: CompletionRequest, request: Request, svc: Svc, key: Key) -> Any:
    """The prompt goes through the model's chat template as one user message."""
    return await _generate(
        svc, key, request, req, [Message("user", req.prompt)],
        lambda app: svc.decoding(req, app, logprobs=bool(req.logprobs),
                                 top_logprobs=req.logprobs or 0),
        "text")


@router.post("/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request, svc: Svc,
                     key: Key) -> dict[str, Any]:
    svc.admit(key, "ask")
    request.state.app = req.model
    texts = [req.input] if isinstance(req.input, str) else req.input
    if len(texts) > 2048:
        raise InputError(f"{len(texts)} inputs in one request", hint="send at most 2048")
    vectors = await svc.embeddings.embed(texts, req.model, req.input_type)
    tokens = sum(len(t.split()) for t in texts)  # words: close enough for limits and usage
    svc.spend(key, req.model, tokens, 0)
    out: list[Any] = vectors
    if req.encoding_format == "base64":  # what the openai SDK asks for: float32 bytes
        out = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
    return {"object": "list", "model": req.model,
            "data": [{"object": "embedding", "index": i, "embedding": v}
                     for i, v in enumerate(out)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@router.get("/models")
async def models(svc: Svc,
                 key: Key) -> dict[str, Any]:
    created = int(time.time())
    rows = [{"id": a, "object": "model", "created": created, "owned_by": "alicerce",
             "kind": "app"} for a in svc.apps(key)]
    rows += [{"id": m, "object": "model", "created": created, "owned_by": "alicerce",
              "kind": "model"} for m in sorted(svc.model_names | set(svc.settings.models))]
    rows += [{"id": e, "object": "model", "created": created, "owned_by": "alicerce",
              "kind": "embedding"} for e in EMBEDDING_MODELS if e != "remote"
             or svc.settings.remote_embed_url]
    return {"object": "list", "data": rows}


# -- helpers -----------------------------------------------------------------------------
async def _generate(svc: Service, key: ApiKey, request: Request,
                    req: ChatRequest | CompletionRequest, messages: list[Message],
                    decoding: Callable[[str | None], DecodingParams], shape: str) -> Any:
    """Both completion routes: check access, then answer from an app or a raw model."""
    kind = svc.kind(req.model)
    svc.admit(key, "ask", req.model if kind == "app" else None)
    request.state.app = req.model
    params = decoding(req.model if kind == "app" else None)
    usage_chunk = bool(req.stream_options and req.stream_options.include_usage)
    if kind == "app":
        return await _app(svc, key, req.model, messages, params, req, req.stream,
                          usage_chunk, no_cache(request), shape)
    _no_app_options(req)
    return await _raw(svc, key, req.model, messages, params, req.stream, usage_chunk, shape)


def _no_app_options(opts: AppOptions) -> None:
    used = [k for k in ("filters", "k", "mode", "extractiveness") if getattr(opts, k)]
    if used or opts.step_back:
        raise InputError(f"{', '.join(used or ['step_back'])} apply to apps, not raw models",
                         hint="name an app in `model`, or drop these fields")


async def _app(svc: Service, key: ApiKey, app: str, messages: list[Message],
               params: DecodingParams, opts: AppOptions, stream: bool, usage_chunk: bool,
               skip_cache: bool, shape: str) -> Any:
    if params.n > 1 or params.logprobs:
        raise InputError("an app answers with one candidate and no log-probabilities",
                         hint="drop n/logprobs, or call a raw model")
    items = svc.answer(key, app, messages, params, svc.app_options(opts),
                       use_cache=not skip_cache)
    first = await anext(items)  # request errors surface here, before any byte is sent
    if stream:
        return _sse(_app_chunks(_rid(shape), app, first, items, usage_chunk, shape))
    final: dict[str, Any] = first if isinstance(first, dict) else {}
    async for item in items:
        if isinstance(item, dict):
            final = item
    choice = (final["answer"], _finish(final, params), None)
    return _completion(_rid(shape, final["trace_id"]), app, [choice], final["usage"],
                       shape) | {"alicerce": _extra(final)}


async def _app_chunks(rid: str, app: str, first: str | dict[str, Any],
                      items: AsyncIterator[str | dict[str, Any]], usage_chunk: bool,
                      shape: str) -> AsyncIterator[dict[str, Any]]:
    yield _chunk(rid, app, "", shape, role=True)
    item: str | dict[str, Any] = first
    while True:
        if isinstance(item, dict):
            yield _chunk(rid, app, None, shape, finish="stop") | {"alicerce": _extra(item)}
            if usage_chunk:
                yield _usage_chunk(rid, app, item["usage"], shape)
            return
        yield _chunk(rid, app, item, shape)
        item = await anext(items)


async def _raw(svc: Service, key: ApiKey, model: str, messages: list[Message],
               params: DecodingParams, stream: bool, usage_chunk: bool, shape: str) -> Any:
    gen = svc.alc.generator(model)
    started = time.perf_counter()

    async def trace(output: str, usage: Usage | None, ttft: float | None = None,
                    error: str = "") -> str:
        """In a thread: the first trace of a GGUF path hashes the file for its lineage."""
        return await anyio.to_thread.run_sync(functools.partial(
            svc.alc.trace_call, model, key.id, messages, params, output=output, usage=usage,
            latency_ms=(time.perf_counter() - started) * 1000, ttft_ms=ttft, error=error))

    if not stream:
        try:
            done: Completion = await svc.work.call(gen.complete, messages, params)
        except AlicerceError as exc:
            await trace("", None, error=str(exc))
            raise
        svc.spend(key, model, done.usage.prompt_tokens, done.usage.completion_tokens)
        tid = await trace(done.text, done.usage)
        return _completion(_rid(shape, tid), gen.name,
                           [(c.text, c.finish_reason, c.logprobs) for c in done.choices],
                           {"prompt_tokens": done.usage.prompt_tokens,
                            "completion_tokens": done.usage.completion_tokens}, shape)
    rid = _rid(shape)
    deltas = svc.work.iterate(lambda: gen.stream(messages, params))
    first = await anext(deltas)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield _chunk(rid, gen.name, "", shape, role=True)
        delta: Delta | None = first
        ttft: float | None = None
        text: list[str] = []
        usage: Usage | None = None
        while True:
            if delta is None:
                await trace("".join(text), usage, ttft)
                return
            text.append(delta.text or "")
            usage = delta.usage or usage
            if delta.text and ttft is None:
                ttft = (time.perf_counter() - started) * 1000
                svc.metrics.ttft.labels(model).observe(ttft / 1000)
            if delta.text or delta.finish_reason:
                yield _chunk(rid, gen.name, delta.text or None, shape,
                             finish=delta.finish_reason, logprobs=delta.logprobs or None)
            if delta.usage is not None:
                svc.spend(key, model, delta.usage.prompt_tokens, delta.usage.completion_tokens)
                if usage_chunk:
                    yield _usage_chunk(rid, gen.name, {
                        "prompt_tokens": delta.usage.prompt_tokens,
                        "completion_tokens": delta.usage.completion_tokens}, shape)
            try:
                delta = await anext(deltas, None)
            except AlicerceError as exc:
                await trace("".join(text), usage, ttft, error=str(exc))
                raise
    return _sse(chunks())


def _rid(shape: str, suffix: str = "") -> str:
    return f"{'chatcmpl' if shape == 'chat' else 'cmpl'}-{suffix or int(time.time() * 1000)}"


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
        except Exception as exc:  # a failure mid-stream ends the stream with an error event
            _, err, _ = describe(exc)
            yield b"data: " + json.dumps(err, ensure_ascii=False).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _finish(final: dict[str, Any], params: DecodingParams) -> str:
    """OpenAI's reasons; a guard rail that replaced the answer is `content_filter`."""
    if final.get("blocked"):
        return "content_filter"
    return "length" if final["usage"]["completion_tokens"] >= params.max_tokens else "stop"


def _extra(final: dict[str, Any]) -> dict[str, Any]:
    return {k: final[k] for k in ("answer", "citations", "trace_id", "abstained", "language",
                                  "timings", "versions", "cached", "standalone_question",
                                  "blocked", "guards", "redactions")}


def _logprobs(items: tuple[TokenLogprob, ...] | None, shape: str) -> Any:
    if not items:
        return None
    if shape == "text":
        return {"tokens": [t.token for t in items], "token_logprobs": [t.logprob for t in items],
                "top_logprobs": [dict(t.top) for t in items]}
    return {"content": [{"token": t.token, "logprob": t.logprob,
                         "bytes": list(t.token.encode()),
                         "top_logprobs": [{"token": a, "logprob": lp,
                                           "bytes": list(a.encode())} for a, lp in t.top]}
                        for t in items]}


def _completion(rid: str, model: str,
                choices: list[tuple[str, str, tuple[TokenLogprob, ...] | None]],
                usage: dict[str, int], shape: str) -> dict[str, Any]:
    out = []
    for i, (text, finish, lps) in enumerate(choices):
        choice: dict[str, Any] = {"index": i, "finish_reason": finish,
                                  "logprobs": _logprobs(lps, shape)}
        if shape == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        out.append(choice)
    return {"id": rid, "object": "chat.completion" if shape == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": out,
            "usage": _usage(usage)}


def _chunk(rid: str, model: str, text: str | None, shape: str, *, role: bool = False,
           finish: str | None = None,
           logprobs: tuple[TokenLogprob, ...] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish,
                              "logprobs": _logprobs(logprobs, shape)}
    if shape == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return {"id": rid, "object": "chat.completion.chunk" if shape == "chat"
            else "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice]}


def _usage_chunk(rid: str, model: str, usage: dict[str, int], shape: str) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk" if shape == "chat"
            else "text_completion", "created": int(time.time()), "model": model,
            "choices": [], "usage": _usage(usage)}


def _usage(u: dict[str, int]) -> dict[str, int]:
    p, c = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
