"""The Store seam: documents, chunks, vectors, keyword and vector search, versions.

Every implementation passes `alicerce.testing.store_contract.StoreContract`, so the embedded
SQLite store and later server stores behave the same to the core.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from alicerce.errors import InputError
from alicerce.types import Chunk, CollectionInfo, Document, Hit

Filters = dict[str, str | list[str]]
Scored = list[tuple[int, float]]
_FILTER_KEY = re.compile(r"^[A-Za-z_][\w.-]{0,63}$")


@dataclass(frozen=True)
class StoredCollection:
    id: int
    name: str
    embedder: str
    dim: int
    chunking: dict[str, Any]


@dataclass(frozen=True)
class DocumentWrite:
    """A new or changed document with its chunks, their content hashes and vectors."""

    document: Document
    content_hash: str
    chunks: Sequence[Chunk]
    chunk_hashes: Sequence[str]
    vectors: NDArray[np.float32]


@dataclass(frozen=True)
class BoostWeights:
    """BM25 weight per indexed field (like minsearch's boosts)."""

    title: float = 3.0
    section: float = 0.5
    text: float = 1.0


class Store(Protocol):
    def collection(self, name: str) -> StoredCollection | None: ...

    def create_collection(self, name: str, embedder: str, dim: int,
                          chunking: dict[str, Any]) -> StoredCollection: ...

    def collections(self) -> list[CollectionInfo]: ...

    def collection_names(self) -> list[str]:
        """Names only: `collections()` counts every document and chunk."""
        ...

    def document_hashes(self, coll: StoredCollection) -> dict[str, tuple[str, str]]:
        """key -> (content hash, source) for every document in the collection."""
        ...

    def document_chunks(self, coll: StoredCollection) -> Iterator[tuple[str, str, list[str]]]:
        """(key, title, chunk texts in order) for every document, in key order."""
        ...

    def export_documents(self, coll: StoredCollection,
                         keys: Sequence[str] | None = None) -> Iterator[DocumentWrite]:
        """Every document (or those of `keys`) with its chunks and vectors, in key order:
        what `write_documents` takes, so a collection can be copied to another store."""
        ...

    def vectors_by_hash(self, coll: StoredCollection,
                        hashes: Sequence[str]) -> dict[str, NDArray[np.float32]]: ...

    def write_documents(self, coll: StoredCollection, writes: Sequence[DocumentWrite]) -> None:
        """Insert or replace documents with their chunks, atomically."""
        ...

    def delete_documents(self, coll: StoredCollection, keys: Sequence[str]) -> int: ...

    def record_version(self, coll: StoredCollection) -> str:
        """Make a version id from the current content; store it if new; return it."""
        ...

    def versions(self, coll: StoredCollection) -> list[dict[str, Any]]: ...

    def flush(self) -> None:
        """Persist derived indexes (a crash before this only costs a rebuild)."""
        ...

    def sparse_search(self, coll: StoredCollection, query: str, k: int,
                      filters: Filters | None, boosts: BoostWeights) -> Scored: ...

    def dense_search(self, coll: StoredCollection, vector: NDArray[np.float32], k: int,
                     filters: Filters | None) -> Scored: ...

    def hits(self, ids: Sequence[int]) -> dict[int, Hit]: ...

    def close(self) -> None: ...


def group_chunks(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[str, str, list[str]]]:
    """Rows of (document key, title, chunk text), ordered by key and ordinal -> one
    (key, title, texts) per document: what `Store.document_chunks` yields."""
    doc: tuple[str, str, list[str]] | None = None
    for key, title, text in rows:
        if doc is None or doc[0] != key:
            if doc is not None:
                yield doc
            doc = (key, title, [])
        doc[2].append(text)
    if doc is not None:
        yield doc


# The columns `group_writes` reads, in order, from a query joining documents and chunks.
EXPORT_COLUMNS = ("d.key", "d.source", "d.title", "d.content_hash", "d.metadata", "c.ordinal",
                  "c.text", "c.title", "c.section", "c.page", "c.source", "c.tokens",
                  "c.content_hash", "c.{vector}")


def group_writes(rows: Iterable[Sequence[Any]],
                 to_vector: Callable[[Any], NDArray[np.float32]],
                 to_meta: Callable[[Any], dict[str, Any]]) -> Iterator[DocumentWrite]:
    """Rows of EXPORT_COLUMNS ordered by document key and chunk ordinal -> one write per
    document. A chunk's metadata is its document's, as ingestion stores it."""
    head: Sequence[Any] | None = None  # the current document's first row
    chunks: list[Chunk] = []
    hashes: list[str] = []
    vectors: list[NDArray[np.float32]] = []

    def done() -> DocumentWrite:
        assert head is not None
        meta = to_meta(head[4])
        doc = Document(head[0], head[1], head[2], (), meta)
        return DocumentWrite(doc, head[3], chunks, hashes,
                             np.vstack(vectors) if vectors else np.zeros((0, 0), np.float32))

    for row in rows:
        if head is None or head[0] != row[0]:
            if head is not None:
                yield done()
            head, chunks, hashes, vectors = row, [], [], []
        if row[5] is None:  # a document without chunks (LEFT JOIN)
            continue
        meta = to_meta(row[4])
        chunks.append(Chunk(row[0], int(row[5]), row[6], row[7], row[8], row[9], row[10],
                            int(row[11]), meta))
        hashes.append(row[12])
        vectors.append(to_vector(row[13]))
    if head is not None:
        yield done()


def check_filters(filters: Filters | None) -> Filters:
    """Validate filter keys early so a typo gets a clear message instead of an empty result."""
    if not filters:
        return {}
    for key, value in filters.items():
        if not _FILTER_KEY.match(key):
            raise InputError(f"invalid filter field {key!r}",
                             hint="use letters, digits, '_', '.', '-', e.g. --filter course=x")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            raise InputError(f"filter {key!r} needs one or more text values",
                             hint="write --filter key=value (repeat for OR)")
    return filters
