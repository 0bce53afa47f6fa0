"""Models: loaded once per process and shared; raw generation and its traces."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from alicerce.apps.registry import AppVersion
from alicerce.chains.techniques import Example, Generation, run
from alicerce.core.adapter_serving import AdapterServing
from alicerce.embed import get_embedder
from alicerce.errors import InputError
from alicerce.generate import Generator
from alicerce.generate.models import ModelInfo, list_models
from alicerce.generate.params import DecodingParams
from alicerce.generate.pool import BasePool
from alicerce.types import Message, Usage
from alicerce.version import __version__


class Models(AdapterServing):
    """Generators by name, loaded once per process; prompting techniques."""

    def generator(self, model: str | None = None, adapter: str | None = None) -> Generator:
        """A loaded model (once per process): bundled name, [models.NAME], or .gguf path;
        with `adapter` (NAME@N), that adapter applied on it (core/adapter_serving)."""
        name = model or self.settings.generator
        if name in self._generators:
            if adapter:
                raise InputError(f"{name} is registered in this process and takes no adapter")
            return self._generators[name]
        if adapter:
            return self._with_adapter(name, adapter)
        base = self._base(name)
        if isinstance(base, BasePool):
            return base.instance(lambda: self._attachable(name))
        return base

    def use_generator(self, name: str, generator: Generator) -> None:
        """Serve `name` with an object of your own (a plugin backend, or a test double)."""
        self._generators[name] = generator

    def models(self) -> list[ModelInfo]:
        """Bundled and configured models, then those registered with `use_generator`."""
        return list_models(self.settings) + [
            ModelInfo(name, "custom", gen.name, True, None, gen.context_size, "", None,
                      "registered in this process") for name, gen in self._generators.items()]

    def model_identity(self, gen: Generator) -> str:
        """What pins a model's weights (memoised: hashing a GGUF file reads all of it)."""
        if any(g is gen for g in self._generators.values()):
            return f"custom:{gen.name}"  # registered in-process: no file to hash
        return self._weights(getattr(gen, "base", gen.name))

    def generate(self, text: str, *, technique: str = "zero-shot", model: str | None = None,
                 params: DecodingParams | dict[str, Any] | None = None,
                 instructions: str = "", examples: Sequence[Example] = (),
                 k: int = 0) -> Generation:
        """Apply a prompting technique to `text` (docs/generation.md lists them)."""
        self._check_text(text)
        embedder = get_embedder(self.settings.embedder, self.settings) if k else None
        gen, decoding = self.generator(model), self._decoding(params, None)
        started = time.perf_counter()
        out = run(technique, text, gen, self.prompts.get, decoding,
                  instructions=instructions, examples=examples, k=k, embedder=embedder)
        tid = self.trace_call(model or self.settings.generator, "local",
                              [Message("user", p) for p in out.prompts], decoding,
                              output=out.text, usage=out.usage,
                              latency_ms=(time.perf_counter() - started) * 1000,
                              question=text, technique=technique, steps=len(out.prompts))
        return replace(out, trace_id=tid)

    def trace_call(self, model: str, caller: str, messages: Sequence[Message],
                   params: DecodingParams, *, output: str = "", usage: Usage | None = None,
                   latency_ms: float = 0.0, ttft_ms: float | None = None, error: str = "",
                   question: str | None = None, adapter: str | None = None,
                   **attrs: Any) -> str:
        """Trace a call to a model without retrieval (raw completions over HTTP, `generate`):
        one `generate` span with the prompt as sent, so every request is traceable."""
        gen = self.generator(model, adapter)
        span = {"name": "generate", "start_ms": 0.0, "ms": round(latency_ms, 3), "attrs": {
            "model": gen.name, "backend": gen.backend, "params": params.as_dict(),
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "output": output, "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "time_to_first_token_ms": ttft_ms, **attrs}}
        if question is None:
            question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        lineage = {"model": gen.name, "backend": gen.backend,
                   "model_identity": self.model_identity(gen), "adapter": adapter,
                   "software": f"alicerce {__version__}"}
        return self.traces.record(
            gen.name, caller, question, error=error, spans=[span], lineage=lineage,
            answer=None if error else {"answer": output, "abstained": False, "citations": []},
            latency_ms=latency_ms)

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InputError("the question is empty", hint="type a question")
        if len(text) > self.settings.max_question_chars:
            raise InputError(f"the question has {len(text)} characters, over the limit of "
                             f"{self.settings.max_question_chars}",
                             hint="shorten it, or raise max_question_chars")

    def _decoding(self, params: DecodingParams | dict[str, Any] | None,
                  version: AppVersion | None) -> DecodingParams:
        if isinstance(params, DecodingParams):
            return params
        base = version.spec["decoding"] if version else {
            "max_tokens": self.settings.max_tokens, "temperature": self.settings.temperature}
        return DecodingParams.build(**{**base, **(params or {})})
