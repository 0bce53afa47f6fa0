"""OpenAI-compatible routes: chat completions, completions, embeddings, models.

`model` names an app (a collection, answered with RAG and citations) or a raw model. An app's
response is an ordinary completion whose extra field `alicerce` holds the citations, the
trace id, timings and versions; streams carry it on their last chunk.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from alicerce.access.keys import ApiKey
from alicerce.core.apps import AppRef
from alicerce.embed import available as available_embedders
from alicerce.errors import InputError
from alicerce.generate.params import DecodingParams
from alicerce.generate.tool_calls import Function, ToolRequest, history
from alicerce.refs import split_ref
from alicerce.server import routes_chains, shapes
from alicerce.server.deps import Key, Svc, no_cache
from alicerce.server.raw_models import raw
from alicerce.server.service import Service
from alicerce.server.wire import (
    AppOptions,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Sampling,
)
from alicerce.types import Message

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/chat/completions")
async def chat_completions(req: ChatRequest, request: Request, svc: Svc, key: Key) -> Any:
    """With `tools` (raw models only): OpenAI tool calling by constrained decoding."""
    tools = _tools(req)
    messages = history([m.model_dump(exclude_none=True) for m in req.messages])
    return await _generate(svc, key, request, req, messages,
                           lambda app: svc.chat_decoding(req, app), "chat", tools)


def _tools(req: ChatRequest) -> ToolRequest | None:
    if not req.tools:
        if req.tool_choice not in (None, "none", "auto"):
            raise InputError("tool_choice needs tools", hint="send tools, or drop tool_choice")
        return None
    if req.response_format is not None or req.format not in (None, "text"):
        raise InputError("tools and response_format/format cannot be combined",
                         hint="the tool schema already constrains the reply")
    choice = req.tool_choice or "auto"
    return ToolRequest(tuple(Function(t.function.name, t.function.description,
                                      t.function.parameters) for t in req.tools),
                       choice if isinstance(choice, str) else choice.function.name,
                       req.parallel_tool_calls is not False)


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
    texts = [req.input] if isinstance(req.input, str) else req.input
    if len(texts) > 2048:
        raise InputError(f"{len(texts)} inputs in one request", hint="send at most 2048")
    vectors = await svc.embeddings.embed(texts, req.model, req.input_type)
    request.state.app = req.model  # a metric label only once the name is known to be valid
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
              "kind": "model"} for m in sorted(svc.model_names)]  # installed ones only
    rows += [{"id": name, "object": "model", "created": created, "owned_by": "alicerce",
              "kind": "adapter", "parent": base} for name, base in svc.adapters(key)]
    rows += [{"id": e, "object": "model", "created": created, "owned_by": "alicerce",
              "kind": "embedding"} for e in available_embedders(svc.settings)]
    return {"object": "list", "data": rows}


# -- helpers -----------------------------------------------------------------------------
async def _generate(svc: Service, key: ApiKey, request: Request,
                    req: ChatRequest | CompletionRequest, messages: list[Message],
                    decoding: Callable[[AppRef | None], DecodingParams], shape: str,
                    tools: ToolRequest | None = None) -> Any:
    """Both completion routes: check access, then answer from an app or a raw model. An
    app is looked up once, here, and that version serves the whole request."""
    kind = svc.kind(req.model)
    ref = svc.alc.resolve_app(req.model) if kind == "app" else None
    svc.admit(key, "ask", ref)
    if ref is None:
        key.require_models()
        svc.adapted(key, req.model)  # an unknown adapter is refused before it is a label
    request.state.app = split_ref(req.model)[0]  # never a client-made "kb@<anything>" series
    usage_chunk = bool(req.stream_options and req.stream_options.include_usage)
    if tools is not None and ref is not None:
        raise InputError("tools are for raw models: an app runs its own steps",
                         hint="name a raw model in `model`, or deploy an agent app "
                              "(docs/agents.md)")
    if ref is not None and ref.version is not None and ref.version.spec.get("kind") == "chain":
        _no_app_options(req)
        _no_sampling(req)
        return await routes_chains.chat(svc, key, ref.version, messages, req.stream,
                                        usage_chunk, shape)
    params = decoding(ref)
    if ref is not None:
        return await _app(svc, key, ref, messages, params, req, req.stream,
                          usage_chunk, no_cache(request), shape)
    _no_app_options(req)
    return await raw(svc, key, req.model, messages, params, req.stream, usage_chunk, shape,
                     tools)


def _no_sampling(req: ChatRequest | CompletionRequest) -> None:
    """A chain's steps carry their own decoding: a knob sent for it would do nothing."""
    sent = sorted(k for k in req.model_fields_set if k in Sampling.model_fields
                  and k not in ("user", "n")) + (["n"] if req.n != 1 else [])
    if sent:
        raise InputError(f"{', '.join(sent)} do not apply to a chain app: its steps set "
                         "their own decoding", hint="drop them, or change the app's spec")


def _no_app_options(opts: AppOptions) -> None:
    used = [k for k in ("filters", "k", "mode", "extractiveness") if getattr(opts, k)]
    if used or opts.step_back:
        raise InputError(f"{', '.join(used or ['step_back'])} apply to apps, not raw models",
                         hint="name an app in `model`, or drop these fields")


async def _app(svc: Service, key: ApiKey, ref: AppRef, messages: list[Message],
               params: DecodingParams, opts: AppOptions, stream: bool, usage_chunk: bool,
               skip_cache: bool, shape: str) -> Any:
    if params.n > 1 or params.logprobs:
        raise InputError("an app answers with one candidate and no log-probabilities",
                         hint="drop n/logprobs, or call a raw model")
    app = ref.ref
    items = svc.answer(key, ref, messages, params, svc.app_options(opts),
                       use_cache=not skip_cache)
    first = await anext(items)  # request errors surface here, before any byte is sent
    if stream:
        return shapes.sse(_app_chunks(shapes.rid(shape), app, first, items, usage_chunk, shape))
    final: dict[str, Any] = first if isinstance(first, dict) else {}
    async for item in items:
        if isinstance(item, dict):
            final = item
    choice = (final["answer"], _finish(final, params), None)
    return shapes.completion(shapes.rid(shape, final["trace_id"]), app, [choice],
                            final["usage"], shape) | {"alicerce": _extra(final)}


async def _app_chunks(rid: str, app: str, first: str | dict[str, Any],
                      items: AsyncIterator[str | dict[str, Any]], usage_chunk: bool,
                      shape: str) -> AsyncIterator[dict[str, Any]]:
    yield shapes.chunk(rid, app, "", shape, role=True)
    item: str | dict[str, Any] = first
    while True:
        if isinstance(item, dict):
            yield shapes.chunk(rid, app, None, shape, finish="stop") | {"alicerce": _extra(item)}
            if usage_chunk:
                yield shapes.usage_chunk(rid, app, item["usage"], shape)
            return
        yield shapes.chunk(rid, app, item, shape)
        item = await anext(items)


def _finish(final: dict[str, Any], params: DecodingParams) -> str:
    """OpenAI's reasons; a guard rail that replaced the answer is `content_filter`."""
    if final.get("blocked"):
        return "content_filter"
    return "length" if final["usage"]["completion_tokens"] >= params.max_tokens else "stop"


def _extra(final: dict[str, Any]) -> dict[str, Any]:
    return {k: final[k] for k in ("answer", "citations", "trace_id", "abstained", "language",
                                  "timings", "versions", "cached", "standalone_question",
                                  "blocked", "guards", "redactions")}

