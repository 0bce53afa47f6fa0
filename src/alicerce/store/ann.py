"""HNSW index file kept in step with the vectors in the database.

usearch was chosen over faiss by `bench/ann_compare.py` (docs/benchmarks.md): it supports
removing vectors by key and fetching stored vectors, which incremental sync and exact
filtered search need, at similar recall and latency. The file carries a stamp (the
collection's vector epoch in SQLite); a missing file or a stamp that does not match the
database means the file is stale and is rebuilt from SQLite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from alicerce.errors import StoreError

VectorSource = Callable[[], tuple[NDArray[np.int64], NDArray[np.float32]]]


class AnnIndex:
    """Cosine HNSW over chunk ids; callers hold the database's epoch as `stamp`."""

    def __init__(self, path: Path, dim: int, connectivity: int = 16, expansion_add: int = 128,
                 expansion_search: int = 96, dtype: str = "f16") -> None:
        from usearch.index import Index

        self.path = path
        self._meta = path.with_suffix(".json")
        self._index = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=connectivity,
                            expansion_add=expansion_add, expansion_search=expansion_search)
        self.stamp = -1
        self.dirty = False

    def __len__(self) -> int:
        return len(self._index)

    def load_or_rebuild(self, stamp: int, source: VectorSource) -> bool:
        """Load the file when its stamp matches; otherwise rebuild. Returns True on rebuild."""
        try:
            meta = json.loads(self._meta.read_text())
            if meta.get("stamp") == stamp and self.path.exists():
                self._index.load(str(self.path))
                if len(self._index) == meta.get("count"):
                    self.stamp = stamp
                    return False
        except (OSError, ValueError, RuntimeError):
            pass
        self._index.reset()  # type: ignore[no-untyped-call]
        ids, vectors = source()
        if len(ids):
            self._index.add(ids, vectors, threads=0)
        self.stamp = stamp
        self.dirty = True
        self.save()
        return True

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32], stamp: int) -> None:
        if len(ids):
            self._index.add(ids, vectors, threads=0)
        self.stamp, self.dirty = stamp, True

    def remove(self, ids: list[int], stamp: int) -> None:
        if ids:
            self._index.remove(np.asarray(ids, dtype=np.int64))
        self.stamp, self.dirty = stamp, True

    def search(self, vector: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64],
                                                                   NDArray[np.float32]]:
        """Top-k ids and cosine similarities."""
        if len(self._index) == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        m = self._index.search(vector, min(k, len(self._index)), threads=1)
        return np.asarray(m.keys, np.int64), 1.0 - np.asarray(m.distances, np.float32)

    def get(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        """Stored vectors for `ids` (all must be present)."""
        out = self._index.get(ids, dtype="f32")
        if out is None or (isinstance(out, np.ndarray) and out.ndim != 2):
            raise StoreError("vector index is missing ids", hint="delete the .usearch file")
        return np.asarray(out, dtype=np.float32)

    def save(self) -> None:
        """Write atomically: index to a temp name, rename, then the stamp file."""
        if not self.dirty:
            return
        tmp = self.path.with_suffix(".tmp")
        self._index.save(str(tmp))
        os.chmod(tmp, 0o600)  # document vectors are as private as the texts
        os.replace(tmp, self.path)
        meta_tmp = self._meta.with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps({"stamp": self.stamp, "count": len(self._index)}))
        os.chmod(meta_tmp, 0o600)
        os.replace(meta_tmp, self._meta)
        self.dirty = False
