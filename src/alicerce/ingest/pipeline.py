"""Ingestion: files -> documents -> chunks -> vectors -> store, incrementally.

Documents are compared by content hash: unchanged ones cost nothing, changed ones replace
only their own chunks, and chunks whose text did not change reuse their stored vectors.
Writes are committed in batches, so an interrupted run keeps what it committed and the next
run carries on from there.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from alicerce.embed.base import Embedder
from alicerce.errors import IngestError, InputError
from alicerce.ingest.chunking import ChunkingConfig, chunk_document, embedding_text
from alicerce.ingest.loaders import RecordMapping, load_file
from alicerce.store.base import DocumentWrite, Store, StoredCollection
from alicerce.types import Chunk, Document, IngestFailure, IngestReport

Progress = Callable[[IngestReport], None]
BATCH_CHUNKS = 64


@dataclass
class _Batch:
    docs: list[tuple[Document, str, list[Chunk]]] = field(default_factory=list)
    chunks: int = 0


def doc_hash(doc: Document) -> str:
    payload = json.dumps([doc.title, [[s.text, list(s.path), s.page] for s in doc.sections],
                          doc.metadata], ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def chunk_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def source_name(file: Path, root: Path) -> str:
    """A file's id: its path from the ingested folder's name (`docs/a/b.md`), or its name.

    Independent of the working directory, so re-ingesting from elsewhere still matches.
    """
    if root.is_dir():
        return file.relative_to(root.resolve().parent).as_posix()
    return file.name


def discover(paths: Sequence[Path]) -> Iterator[tuple[Path | None, str, IngestFailure | None]]:
    """Files under `paths` (hidden ones skipped in folders); a missing path is a failure."""
    for path in paths:
        if path.is_dir():
            for file in sorted(path.resolve().rglob("*")):
                rel = file.relative_to(path.resolve()).parts
                if file.is_file() and not any(p.startswith(".") for p in rel):
                    yield file, source_name(file, path), None
        elif path.is_file():
            yield path, source_name(path, path), None
        else:
            yield None, str(path), IngestFailure(str(path), "no such file or folder",
                                                 "check the path")


class Ingestor:
    def __init__(self, store: Store, embedder: Embedder, coll: StoredCollection,
                 chunking: ChunkingConfig, max_bytes: int,
                 progress: Progress | None = None) -> None:
        self.store, self.embedder, self.coll = store, embedder, coll
        self.chunking, self.max_bytes = chunking, max_bytes
        self.progress = progress

    def run(self, paths: Sequence[Path], mapping: RecordMapping, sync: bool) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(collection=self.coll.name)
        stored = self.store.document_hashes(self.coll)
        seen_keys: set[str] = set()
        loaded_sources: set[str] = set()
        batch = _Batch()
        for file, name, failure in discover(paths):
            if failure is not None or file is None:
                report.failures.append(failure or IngestFailure(name, "unreadable"))
                continue
            try:
                docs, failures = load_file(file, name, mapping, self.max_bytes)
            except IngestError as exc:  # its message starts with the name: said once
                report.failures.append(IngestFailure(
                    name, exc.message.removeprefix(f"{name}: "), exc.hint))
                continue
            except Exception as exc:  # a parser bug on one odd file must not stop the run
                report.failures.append(IngestFailure(
                    name, f"could not be parsed ({exc.__class__.__name__}: {exc})",
                    "the file may be malformed; re-save it, or report it with the file"))
                continue
            report.failures.extend(failures)
            loaded_sources.add(name)
            for doc in docs:
                if doc.key in seen_keys:
                    report.failures.append(IngestFailure(
                        name, f"duplicate document id {doc.key!r}", "ids must be unique"))
                    continue
                seen_keys.add(doc.key)
                h = doc_hash(doc)
                if stored.get(doc.key, ("",))[0] == h:
                    report.unchanged += 1
                    continue
                if doc.key in stored:
                    report.updated += 1
                else:
                    report.added += 1
                chunks = chunk_document(doc, self.chunking, self.embedder.count_tokens)
                if self.chunking.redact_pii:
                    from alicerce.guard.pii import scrub  # loads spaCy: only when asked

                    chunks = [replace(c, text=scrub(c.text)) for c in chunks]
                batch.docs.append((doc, h, chunks))
                batch.chunks += len(chunks)
                if batch.chunks >= BATCH_CHUNKS:
                    self._flush(batch, report)
                    batch = _Batch()
        self._flush(batch, report)
        # A file that failed to load this time keeps its old chunks, even with --sync.
        failed = {f.path for f in report.failures}
        gone = [k for k, (_, src) in stored.items() if k not in seen_keys
                and (src in loaded_sources or (sync and src not in failed))]
        report.removed = self.store.delete_documents(self.coll, gone)
        report.version = self.store.record_version(self.coll)
        report.seconds = time.perf_counter() - started
        return report

    def _flush(self, batch: _Batch, report: IngestReport) -> None:
        if not batch.docs:
            return
        texts = [embedding_text(c) for _, _, chunks in batch.docs for c in chunks]
        hashes = [chunk_hash(t) for t in texts]
        known = self.store.vectors_by_hash(self.coll, hashes)
        # Embed each distinct new text once (FAQs and boilerplate repeat), reuse the rest.
        todo: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h not in known:
                todo.setdefault(h, i)
        fresh = self.embedder.embed_passages([texts[i] for i in todo.values()])
        known.update(zip(todo, fresh, strict=True))
        vectors = np.zeros((len(hashes), self.embedder.dim), dtype=np.float32)
        for i, h in enumerate(hashes):
            vectors[i] = known[h]
        writes, start = [], 0
        for doc, h, chunks in batch.docs:
            end = start + len(chunks)
            writes.append(DocumentWrite(doc, h, chunks, hashes[start:end], vectors[start:end]))
            start = end
        self.store.write_documents(self.coll, writes)
        report.chunks_embedded += len(todo)
        report.chunks_reused += len(texts) - len(todo)
        if self.progress:
            self.progress(report)


def parse_mapping(text_field: str | None, id_field: str | None, title_field: str | None,
                  metadata_fields: str | Sequence[str] | None) -> RecordMapping:
    if isinstance(metadata_fields, str):
        metadata_fields = [f.strip() for f in metadata_fields.split(",") if f.strip()]
    if text_field is not None and not text_field.strip():
        raise InputError("--text-field is empty", hint="name the field that holds the text")
    return RecordMapping(text_field=text_field or "text", id_field=id_field or None,
                         title_field=title_field or None,
                         metadata_fields=tuple(metadata_fields) if metadata_fields else None)


def max_bytes(mb: float) -> int:
    return int(mb * 2**20)

