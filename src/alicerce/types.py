"""Frozen value types passed between the layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


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


# -- generation --------------------------------------------------------------------------

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability, and the best alternatives at that step."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        """The tokens of two calls together (a chain's steps, a technique's calls)."""
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens)


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Completion:
    """A finished generation: one or more candidates, token counts and timings (ms)."""

    model: str
    choices: tuple[Choice, ...]
    usage: Usage
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed generation; the last one carries finish reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Citation:
    """A source the answer cites as [n], with where to find it."""

    n: int
    chunk_id: int
    doc_key: str
    title: str
    section: str
    page: int | None
    source: str
    score: float


@dataclass(frozen=True)
class Answer:
    """A grounded answer and everything needed to trace it back.

    `versions` names the collection version, prompt name@version, model id and the decoding
    parameters; `timings` is milliseconds per stage. `guards` holds every rail's verdict
    (as dicts), `blocked` names the rail that replaced the answer ("output:grounding"), and
    `redactions` maps reversible placeholders back to what the user wrote: it is for the
    user's own display and is never stored.
    """

    question: str
    text: str
    citations: tuple[Citation, ...]
    chunks: tuple[Hit, ...]
    abstained: bool
    language: str
    usage: Usage
    timings: dict[str, float]
    versions: dict[str, Any]
    standalone_question: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    trace_id: str = ""
    guards: tuple[dict[str, Any], ...] = ()
    blocked: str = ""
    redactions: dict[str, str] = field(default_factory=dict)
