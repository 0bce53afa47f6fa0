"""Frozen value types passed between the layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path, on one page when the format has pages."""

    text: str
    path: tuple[str, ...] = ()
    page: int | None = None


@dataclass(frozen=True)
class Document:
    """One logical document: a file, or a record of a CSV/JSON file.

    `key` is the document's identity inside a collection: the id field of a record, or the
    file path relative to the ingested root.
    """

    key: str
    source: str
    title: str
    sections: tuple[Section, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document sized for the embedder, with where it came from."""

    doc_key: str
    ordinal: int
    text: str
    title: str
    section: str
    page: int | None
    source: str
    tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result: a chunk, its score, and the per-retriever scores behind it."""

    chunk_id: int
    doc_key: str
    score: float
    text: str
    title: str
    section: str
    page: int | None
    source: str
    metadata: dict[str, Any]
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestFailure:
    """A file or record that could not be ingested, with a hint to fix it."""

    path: str
    reason: str
    hint: str = ""


@dataclass
class IngestReport:
    """What one ingest run did; `ok` is false when any file failed."""

    collection: str
    version: str = ""
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    failures: list[IngestFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class CollectionInfo:
    """A collection as `alicerce collections` lists it."""

    name: str
    documents: int
    chunks: int
    version: str
    embedder: str
    chunk_tokens: int
    chunk_overlap: int
    updated_at: str
