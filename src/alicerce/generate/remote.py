"""Any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, hosted APIs), or
several servers of one model used as one (`endpoints.py`: least busy first, failover).

Uses the real `openai` client. Sampling knobs that OpenAI's API lacks (top_k, min_p,
repetition_penalty) travel in `extra_body`, which vLLM and llama.cpp's server read; they are
sent only when set, so a plain request stays acceptable to strict servers. Bullet lists have
no grammar here: the model is told the format and the reply is normalised to '- ' lines.
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from alicerce.endpoints import Endpoints
from alicerce.errors import ConfigError, GeneratorError, InputError
from alicerce.generate.base import parse_chunk, parse_completion, request_body
from alicerce.generate.params import DecodingParams, require
from alicerce.types import Completion, Delta, Message

_EXTRAS = ("top_k", "min_p", "repetition_penalty")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


class OpenAIGenerator:
    backend = "openai"

    def __init__(self, name: str, url: str, model: str, api_key: str = "",
                 timeout: float = 600.0, context: int = 8192) -> None:
        if not url:
            raise ConfigError(f"model {name!r} needs a url", hint="set [models.NAME] url")
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise GeneratorError("the remote backend needs the openai package",
                                 hint="pip install 'alicerce[remote]'") from exc
        urls = [u.strip() for u in url.split(",") if u.strip()]
        retries = 1 if len(urls) == 1 else 0  # with several servers, failover is the retry
        self.endpoints = Endpoints(urls, lambda u: OpenAI(
            base_url=u, api_key=api_key or "none", timeout=timeout, max_retries=retries))
        self.name, self.remote_model, self.context_size = name, model, context
        self.base = name  # an adapter's view keeps it: the configured model

    def adapted(self, remote_model: str, name: str) -> OpenAIGenerator:
        """The endpoint's adapter `remote_model` (vLLM serves a LoRA under its own model
        name): a view sharing this client."""
        view = copy.copy(self)
        view.name, view.remote_model = name, remote_model
        return view

    @classmethod
    def from_env(cls, name: str, url: str, model: str, key_env: str,
                 **kw: Any) -> OpenAIGenerator:
        return cls(name, url, model, api_key=os.environ.get(key_env, ""), **kw)

    def _kwargs(self, messages: Sequence[Message], params: DecodingParams) -> dict[str, Any]:
        require(params, self.backend, self.name)
        body = request_body(messages, params, self.remote_model, extras=True)
        extra = {k: body.pop(k) for k in _EXTRAS if k in body}
        if extra:
            body["extra_body"] = extra
        return body

    def complete(self, messages: Sequence[Message], params: DecodingParams) -> Completion:
        kwargs = self._kwargs(messages, params)
        started = time.perf_counter()
        try:
            resp = self.endpoints.call(lambda c: c.chat.completions.create(**kwargs))
        except Exception as exc:
            raise _error(exc, self.name, self.endpoints.description) from exc
        out = parse_completion(resp.model_dump(), self.name,
                               {"total_ms": (time.perf_counter() - started) * 1000})
        if params.format == "bullets":
            out = replace(out, choices=tuple(replace(c, text=as_bullets(c.text))
                                             for c in out.choices))
        return out

    def stream(self, messages: Sequence[Message], params: DecodingParams) -> Iterator[Delta]:
        kwargs = self._kwargs(messages, params)
        if params.n > 1:
            raise InputError("streaming returns one candidate", hint="use n=1 to stream")
        if params.format == "bullets":
            raise InputError("bullet lists cannot be streamed from a remote model (they are "
                             "normalised after the reply ends)",
                             hint="leave out --stream, or use a llama.cpp model")
        try:
            for chunk in self.endpoints.stream(lambda c: c.chat.completions.create(
                    stream=True, stream_options={"include_usage": True}, **kwargs)):
                yield parse_chunk(chunk.model_dump())
        except Exception as exc:
            raise _error(exc, self.name, self.endpoints.description) from exc

    def count_tokens(self, text: str) -> int:
        # No tokenizer endpoint is standard; 4 characters a token is the usual estimate.
        return max(1, len(text) // 4)


def as_bullets(text: str) -> str:
    lines = [_BULLET.sub("", ln).strip() for ln in text.splitlines()]
    return "".join(f"- {ln}\n" for ln in lines if ln)


def _error(exc: Exception, name: str, url: Any) -> Exception:
    status = getattr(exc, "status_code", None)
    if status is not None and 400 <= status < 500 and status not in (401, 403, 404, 429):
        return InputError(f"{name} at {url} rejected the request: {exc}")
    return GeneratorError(f"remote model {name} at {url} failed: {exc}",
                          hint="check that the server is running, the model name, and the "
                               "API key variable")
