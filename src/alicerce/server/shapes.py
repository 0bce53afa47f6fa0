"""OpenAI's response shapes: completions, stream chunks, usage, log-probabilities, SSE."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from alicerce.server.errors import describe
from alicerce.types import TokenLogprob


def rid(shape: str, suffix: str = "") -> str:
    return f"{'chatcmpl' if shape == 'chat' else 'cmpl'}-{suffix or int(time.time() * 1000)}"


def sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
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

def logprobs_out(items: tuple[TokenLogprob, ...] | None, shape: str) -> Any:
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


def completion(rid: str, model: str,
                choices: list[tuple[str, str, tuple[TokenLogprob, ...] | None]],
                usage: dict[str, int], shape: str) -> dict[str, Any]:
    out = []
    for i, (text, finish, lps) in enumerate(choices):
        choice: dict[str, Any] = {"index": i, "finish_reason": finish,
                                  "logprobs": logprobs_out(lps, shape)}
        if shape == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        out.append(choice)
    return {"id": rid, "object": "chat.completion" if shape == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": out,
            "usage": usage_out(usage)}


def chunk(rid: str, model: str, text: str | None, shape: str, *, role: bool = False,
           finish: str | None = None,
           logprobs: tuple[TokenLogprob, ...] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish,
                              "logprobs": logprobs_out(logprobs, shape)}
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


def usage_chunk(rid: str, model: str, usage: dict[str, int], shape: str) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk" if shape == "chat"
            else "text_completion", "created": int(time.time()), "model": model,
            "choices": [], "usage": usage_out(usage)}


def usage_out(u: dict[str, int]) -> dict[str, int]:
    p, c = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
