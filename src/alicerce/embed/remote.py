"""Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint (vLLM, Ollama, TEI, ...),
or several servers of one model (comma-separated URLs: least busy first, failover)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from alicerce.embed.base import Vectors, approx_tokens, batched, normalise
from alicerce.endpoints import Endpoints
from alicerce.errors import ConfigError, EmbedderError


class RemoteEmbedder:
    """Calls the real `openai` client; prefixes let asymmetric models (e5, bge) work remotely."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        batch_size: int = 64,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        if not base_url:
            raise ConfigError(
                "embedder 'remote' needs a base URL",
                hint="set remote_embed_url (ALICERCE_REMOTE_EMBED_URL), "
                     "e.g. http://127.0.0.1:8080/v1",
            )
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise EmbedderError("the remote embedder needs the openai package",
                                hint="pip install 'alicerce[remote]'") from exc
        urls = [u.strip() for u in base_url.split(",") if u.strip()]
        retries = 2 if len(urls) == 1 else 0  # with several servers, failover is the retry
        self.endpoints = Endpoints(urls, lambda u: OpenAI(base_url=u, api_key=api_key or "none",
                                                          max_retries=retries))
        self._model = model
        self._batch = batch_size
        self._qp, self._pp = query_prefix, passage_prefix
        self.name = f"remote:{model}@{urls[0]}"  # the model's identity: any server of it
        self.dim = int(self._call(["dimension probe"]).shape[1])

    @classmethod
    def from_env(cls, base_url: str, model: str, key_env: str, **kw: Any) -> RemoteEmbedder:
        return cls(base_url, model, api_key=os.environ.get(key_env, ""), **kw)

    def _call(self, texts: Sequence[str]) -> Vectors:
        try:
            resp = self.endpoints.call(
                lambda c: c.embeddings.create(model=self._model, input=list(texts)))
        except Exception as exc:
            raise EmbedderError(
                f"remote embedder at {self.endpoints.description} failed: {exc}",
                hint="check that the server is running and that remote_embed_model names "
                     "a model it serves",
            ) from exc
        rows = sorted(resp.data, key=lambda d: d.index)
        return normalise(np.array([r.embedding for r in rows], dtype=np.float32))

    def _encode(self, texts: Sequence[str], prefix: str) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._call([prefix + t for t in b]) for b in batched(texts, self._batch)]
        return np.vstack(parts)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, self._pp)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, self._qp)

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)
