"""Raw-model requests on the completion routes: a model called without an app.

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
from typing import Any

import anyio
import anyio.to_thread

from alicerce.access.keys import ApiKey
from alicerce.errors import AlicerceError
from alicerce.generate.params import DecodingParams
from alicerce.guard.config import Guards
from alicerce.guard.raw import RawCheck, check_input, check_output, watch_stream
from alicerce.server import shapes
from alicerce.server.service import Service
from alicerce.types import Completion, Delta, Message, Usage


async def raw(svc: Service, key: ApiKey, model: str, messages: list[Message],
              params: DecodingParams, stream: bool, usage_chunk: bool, shape: str) -> Any:
    guards = svc.raw_guards(key)
    call = _Call(svc, key, model, params, shape, guards, time.perf_counter())
    call.check = (await anyio.to_thread.run_sync(check_input, guards, messages) if guards
                  else RawCheck(list(messages), "en"))
    if call.check.blocked:  # never reaches the model
        return await call.refused(stream)
    if not stream:
        return await call.complete()
    return await call.stream(usage_chunk)


class _Call:
    def __init__(self, svc: Service, key: ApiKey, model: str, params: DecodingParams,
                 shape: str, guards: Guards, started: float) -> None:
        self.svc, self.key, self.model, self.params = svc, key, model, params
        self.shape, self.guards, self.started = shape, guards, started
        self.gen = svc.alc.generator(model)
        self.check = RawCheck([], "en")

    async def trace(self, output: str, usage: Usage | None, ttft: float | None = None,
                    error: str = "") -> str:
        """In a thread: the first trace of a GGUF path hashes the file for its lineage."""
        check = self.check
        self.svc.metrics.verdicts(self.model, check.verdicts)
        if check.blocked.startswith("output"):
            output = f"[withheld by {check.blocked}]"
        return await anyio.to_thread.run_sync(functools.partial(
            self.svc.alc.trace_call, self.model, self.key.id, check.messages, self.params,
            output=output, usage=usage, latency_ms=(time.perf_counter() - self.started) * 1000,
            ttft_ms=ttft, error=error, guards=check.verdicts, blocked=check.blocked))

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
            return watch_stream(guards, check, deltas) if guards else deltas

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
