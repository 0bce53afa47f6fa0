"""The Generator seam, and the OpenAI-style request/response mapping both backends share.

llama.cpp's server speaks the OpenAI chat format plus its own sampling fields (top_k, min_p,
repeat_penalty, grammar); vLLM accepts the same extras. So one mapping serves both backends,
and each backend only adds what is its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from alicerce.generate.params import DecodingParams
from alicerce.types import Choice, Completion, Delta, Message, TokenLogprob, Usage

# A bullet list, enforced token by token on llama.cpp: one or more "- ..." lines.
BULLETS_GBNF = 'root ::= item+\nitem ::= "- " [^\\n]+ "\\n"\n'

FORMAT_INSTRUCTIONS = {
    "bullets": "Format the reply as a bullet list: one '- ' line per point, nothing else.",
    "json": "Reply with JSON only, no prose.",
}


class Generator(Protocol):
    """A loaded model. Thread-safe; load once per process and share."""

    name: str
    backend: str
    context_size: int

    def complete(self, messages: Sequence[Message], params: DecodingParams) -> Completion:
        """All `params.n` candidates, with usage, timings and (if asked) log-probabilities."""
        ...

    def stream(self, messages: Sequence[Message], params: DecodingParams) -> Iterator[Delta]:
        """Text pieces as they are decoded; the last Delta has finish_reason and usage."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's tokenizer."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """A model that can say how likely a given reply is (answer explanations)."""

    def score(self, messages: Sequence[Message], text: str) -> float:
        """The log-likelihood of `text` as the assistant's reply to `messages`."""
        ...


def gbnf_tokens(ids: Sequence[int]) -> str:
    """A llama.cpp grammar that accepts exactly these tokens, in order."""
    return "root ::= " + " ".join(f"<[{int(i)}]>" for i in ids) if ids else 'root ::= ""'


def with_format(messages: Sequence[Message], params: DecodingParams) -> list[Message]:
    """Tell the model the output format (the grammar, where there is one, enforces it)."""
    note = FORMAT_INSTRUCTIONS.get(params.format)
    if note is None:
        return list(messages)
    if params.json_schema is not None:
        note += " It must follow this JSON schema: " + json.dumps(params.json_schema)
    out = list(messages)
    if out and out[0].role == "system":
        out[0] = Message("system", f"{out[0].content}\n\n{note}")
    else:
        out.insert(0, Message("system", note))
    return out


def request_body(messages: Sequence[Message], params: DecodingParams, model: str,
                 extras: bool) -> dict[str, Any]:
    """An OpenAI chat request; `extras` adds the sampling fields OpenAI itself lacks."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content}
                     for m in with_format(messages, params)],
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "n": params.n,
    }
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.logprobs or params.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = params.top_logprobs
    if params.format == "json":
        body["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "output", "strict": True,
                                                    "schema": params.json_schema}}
            if params.json_schema is not None else {"type": "json_object"})
    if extras:
        if params.top_k:
            body["top_k"] = params.top_k
        if params.min_p:
            body["min_p"] = params.min_p
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
    return body


def parse_logprobs(data: Any) -> tuple[TokenLogprob, ...]:
    if not data or not data.get("content"):
        return ()
    return tuple(TokenLogprob(t["token"], float(t["logprob"]),
                              tuple((a["token"], float(a["logprob"]))
                                    for a in t.get("top_logprobs") or ()))
                 for t in data["content"])


def parse_usage(data: Any) -> Usage:
    if not data:
        return Usage()
    details = data.get("prompt_tokens_details") or {}
    return Usage(int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0)),
                 int(details.get("cached_tokens") or 0))


def parse_completion(data: dict[str, Any], model: str, timings: dict[str, float]) -> Completion:
    choices = tuple(
        Choice(c["message"].get("content") or "", c.get("finish_reason") or "stop",
               parse_logprobs(c.get("logprobs")))
        for c in sorted(data["choices"], key=lambda c: c.get("index", 0)))
    return Completion(model, choices, parse_usage(data.get("usage")), timings)


def parse_chunk(data: dict[str, Any]) -> Delta:
    usage = parse_usage(data["usage"]) if data.get("usage") else None
    if not data.get("choices"):
        return Delta(usage=usage)
    c = data["choices"][0]
    return Delta((c.get("delta") or {}).get("content") or "", c.get("finish_reason"), usage,
                 parse_logprobs(c.get("logprobs")))
