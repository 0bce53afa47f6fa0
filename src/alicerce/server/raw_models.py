"""Raw-model requests on the completion routes: a model called without an app, with
OpenAI tool calling when the request has `tools` (generate/tool_calls.py).

Raw access is a scope of its own for collection-restricted keys (`ApiKey.require_models`,
checked by the route before anything else),
and the default rails run around it unless the key has the `unguarded` scope
(alicerce/guard/raw.py). A request a rail blocks never reaches the model; a blocked or
redacted output is not stored in the trace as the model wrote it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import anyio
import anyio.to_thread

from alicerce.access.keys import ApiKey
from alicerce.errors import AlicerceError, InputError
from alicerce.generate.params import DecodingParams
from alicerce.generate.tool_calls import ToolCall, ToolRequest, parse, with_tools
from alicerce.guard.config import Guards
from alicerce.guard.raw import RawCheck, check_input, check_output, watch_stream
from alicerce.server import shapes
from alicerce.server.service import Service
from alicerce.types import Completion, Delta, Message, Usage


async def raw(svc: Service, key: ApiKey, model: str, messages: list[Message],
              params: DecodingParams, stream: bool, usage_chunk: bool, shape: str,
              tools: ToolRequest | None = None) -> Any:
    guards = svc.raw_guards(key)
    call = RawCall(svc, key, model, params, shape, guards, time.perf_counter())
    call.check = (await anyio.to_thread.run_sync(check_input, guards, messages) if guards
                  else RawCheck(list(messages), "en"))
    if call.check.blocked:  # never reaches the model
        return await call.refused(stream)
    if tools is not None:
        return await tool_reply(call, tools, stream, usage_chunk)
    if not stream:
        return await call.complete()
    return await call.stream(usage_chunk)


class RawCall:
    def __init__(self, svc: Service, key: ApiKey, model: str, params: DecodingParams,
                 shape: str, guards: Guards, started: float) -> None:
        self.svc, self.key, self.params = svc, key, params
        self.shape, self.guards, self.started = shape, guards, started
        self.base, self.adapter = svc.adapted(key, model)
        self.model = f"{self.base}:{self.adapter}" if self.adapter else self.base
        self.gen = svc.alc.generator(self.base, self.adapter)
        self.check = RawCheck([], "en")

    async def trace(self, output: str, usage: Usage | None, ttft: float | None = None,
                    error: str = "") -> str:
        """In a thread: the first trace of a GGUF path hashes the file for its lineage."""
        check = self.check
        self.svc.metrics.verdicts(self.model, check.verdicts)
        if check.blocked.startswith("output"):
            output = f"[withheld by {check.blocked}]"
        return await anyio.to_thread.run_sync(functools.partial(
            self.svc.alc.trace_call, self.base, self.key.id, check.messages, self.params,
            output=output, usage=usage, latency_ms=(time.perf_counter() - self.started) * 1000,
            ttft_ms=ttft, error=error, guards=check.verdicts, blocked=check.blocked,
            adapter=self.adapter))

    async def refused(self, stream: bool) -> Any:
        tid = await self.trace(self.check.refusal, Usage())
        rid, name = shapes.rid(self.shape, tid), self.gen.name
        if stream:
            return shapes.sse(_refused_chunks(rid, name, self.check, self.shape))
        return shapes.completion(rid, name, [(self.check.refusal, "content_filter", None)],
                                 {"prompt_tokens": 0, "completion_tokens": 0}, self.shape)

    async def complete(self) -> Any:
        try:
            done: Completion = await self.svc.work.call(self.gen.complete,
                                                        self.check.messages, self.params)
        except AlicerceError as exc:
            await self.trace("", None, error=str(exc))
            raise
        choices = []
        for c in done.choices:
            text, blocked = c.text, False
            if self.guards:
                text, blocked = await anyio.to_thread.run_sync(check_output, self.guards,
                                                               self.check, c.text)
            choices.append((text, "content_filter" if blocked else c.finish_reason,
                            None if blocked else c.logprobs))
        self.svc.spend(self.key, self.model, done.usage.prompt_tokens,
                       done.usage.completion_tokens)
        tid = await self.trace(choices[0][0], done.usage)
        return shapes.completion(shapes.rid(self.shape, tid), self.gen.name, choices,
                                 {"prompt_tokens": done.usage.prompt_tokens,
                                  "completion_tokens": done.usage.completion_tokens},
                                 self.shape)

    async def stream(self, usage_chunk: bool) -> Any:
        guards, check, gen = self.guards, self.check, self.gen

        def make() -> Iterator[Delta]:
            deltas = gen.stream(check.messages, self.params)
            return (watch_stream(guards, check, deltas, self.svc.settings.stream_release)
                    if guards else deltas)

        deltas = self.svc.work.iterate(make)
        first = await anext(deltas)  # request errors surface here, before any byte is sent
        return shapes.sse(self._chunks(shapes.rid(self.shape), first, deltas, usage_chunk))

    async def _chunks(self, rid: str, first: Delta, deltas: AsyncIterator[Delta],
                      usage_chunk: bool) -> AsyncIterator[dict[str, Any]]:
        name, shape = self.gen.name, self.shape
        yield shapes.chunk(rid, name, "", shape, role=True)
        delta: Delta | None = first
        ttft: float | None = None
        text: list[str] = []
        usage: Usage | None = None
        while delta is not None:
            text.append(delta.text or "")
            usage = delta.usage or usage
            if delta.text and ttft is None:
                ttft = (time.perf_counter() - self.started) * 1000
                self.svc.metrics.ttft.labels(self.model).observe(ttft / 1000)
            if delta.text or delta.finish_reason:
                yield shapes.chunk(rid, name, delta.text or None, shape,
                                   finish=delta.finish_reason, logprobs=delta.logprobs or None)
            if delta.usage is not None:
                u = delta.usage
                self.svc.spend(self.key, self.model, u.prompt_tokens, u.completion_tokens)
                if usage_chunk:
                    yield shapes.usage_chunk(rid, name, {
                        "prompt_tokens": u.prompt_tokens,
                        "completion_tokens": u.completion_tokens}, shape)
            try:
                delta = await anext(deltas, None)
            except AlicerceError as exc:
                await self.trace("".join(text), usage, ttft, error=str(exc))
                raise
        await self.trace("".join(text), usage, ttft)


async def _refused_chunks(rid: str, model: str, check: RawCheck,
                          shape: str) -> AsyncIterator[dict[str, Any]]:
    yield shapes.chunk(rid, model, "", shape, role=True)
    yield shapes.chunk(rid, model, check.refusal, shape, finish="content_filter")


# -- tool calling (`tools` on /v1/chat/completions) ------------------------------------
async def tool_reply(call: RawCall, tools: ToolRequest, stream: bool, usage_chunk: bool) -> Any:
    if call.params.n != 1:
        raise InputError("with tools a request returns one choice", hint="use n=1")
    schema = tools.schema()
    # stop sequences apply to a text answer, not to the JSON around it (agent frameworks
    # send "Observation:", which must not cut a call short): applied after parsing
    params = (replace(call.params, format="json", json_schema=schema, stop=())
              if schema is not None else call.params)
    messages = with_tools(call.check.messages, tools)
    try:
        done: Completion = await call.svc.work.call(call.gen.complete, messages, params)
    except AlicerceError as exc:
        await call.trace("", None, error=str(exc))
        raise
    text = done.choices[0].text
    content, calls = parse(text) if schema is not None else (text, [])
    if content is not None and schema is not None:
        content = _cut_at(content, call.params.stop)
    finish = "tool_calls" if calls else done.choices[0].finish_reason
    if content is not None and call.guards:
        content, blocked = await anyio.to_thread.run_sync(check_output, call.guards,
                                                          call.check, content)
        finish = "content_filter" if blocked else finish
    u = done.usage
    call.svc.spend(call.key, call.model, u.prompt_tokens, u.completion_tokens)
    tid = await call.trace(text, u, (time.perf_counter() - call.started) * 1000)
    rid, name = shapes.rid("chat", tid), call.gen.name
    usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
    if stream:
        return shapes.sse(_chunks(rid, name, content, calls, finish, usage, usage_chunk))
    out = shapes.completion(rid, name, [(content or "", finish, None)], usage, "chat")
    message = out["choices"][0]["message"]
    message["content"] = content
    if calls:
        message["tool_calls"] = [c.as_dict() for c in calls]
    return out


async def _chunks(rid: str, model: str, content: str | None, calls: list[ToolCall],
                  finish: str, usage: dict[str, int],
                  usage_chunk: bool) -> AsyncIterator[dict[str, Any]]:
    yield shapes.chunk(rid, model, None if calls else "", "chat", role=True)
    for i, c in enumerate(calls):
        for delta in ({"index": i, "id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": ""}},
                      {"index": i, "function": {"arguments": c.arguments}}):
            piece = shapes.chunk(rid, model, None, "chat")
            piece["choices"][0]["delta"]["tool_calls"] = [delta]
            yield piece
    if content:
        yield shapes.chunk(rid, model, content, "chat")
    yield shapes.chunk(rid, model, None, "chat", finish=finish)
    if usage_chunk:
        yield shapes.usage_chunk(rid, model, usage, "chat")


def _cut_at(text: str, stops: tuple[str, ...]) -> str:
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(ends)] if ends else text
