"""Generators: local models on llama.cpp or transformers, or OpenAI-compatible endpoints."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from alicerce.config import Settings
from alicerce.generate.base import Generator
from alicerce.generate.llamacpp import load
from alicerce.generate.models import model_path, resolve
from alicerce.generate.params import DecodingParams
from alicerce.generate.remote import OpenAIGenerator

__all__ = ["DecodingParams", "Generator", "get_generator"]

# Clients are shared by every Alicerce instance in the process (local models: llamacpp.load).
_REMOTE: dict[tuple[str, ...], OpenAIGenerator] = {}
_TORCH: dict[tuple[str, ...], Generator] = {}  # transformers models, loaded once
_LOCK = threading.Lock()


def get_generator(name: str | None, settings: Settings,
                  adapters: tuple[Path, ...] = ()) -> Generator:
    """A model by name, loaded once per process; a local one with GGUF LoRA `adapters`
    attached (unapplied: LlamaCppGenerator.adapted applies one per request)."""
    ref = resolve(name or settings.generator, settings)
    if ref.kind == "openai":
        key = (ref.name, ref.url, ref.remote_model, ref.api_key_env,
               os.environ.get(ref.api_key_env, ""))
        with _LOCK:
            if key not in _REMOTE:
                _REMOTE[key] = OpenAIGenerator.from_env(
                    ref.name, ref.url, ref.remote_model, ref.api_key_env,
                    timeout=settings.llm_timeout_s, context=settings.llm_context)
            return _REMOTE[key]
    path = model_path(ref, settings)
    if ref.backend == "transformers":
        from alicerce.generate.hf import TransformersGenerator

        at = (ref.name, str(path.resolve()), str(settings.llm_context),
              str(settings.llm_parallel))
        with _LOCK:
            if at not in _TORCH:
                _TORCH[at] = TransformersGenerator(ref.name, path, settings.llm_context,
                                                   settings.llm_threads, settings.llm_parallel)
            return _TORCH[at]
    return load(ref.name, path, settings.llm_context, settings.llm_threads,
                settings.llm_parallel, settings.llm_cache_ram_mb, adapters)

