"""Copy collections between stores (SQLite <-> PostgreSQL), verified, safe to rerun.

Only what differs is written: a document whose content hash already matches in the target
is skipped, one the source lacks is deleted, so a second run after an interrupted one
finishes the job and a run on an up-to-date target writes nothing. Each batch of documents
is one transaction in the target, so a copy killed at any moment leaves whole documents.
After copying, both sides must give the same version id (a hash of every key and content
hash) and the same digest of every chunk's fields and vector bytes, or the copy fails.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alicerce.errors import NotFoundError, StoreError
from alicerce.store.base import DocumentWrite, Store, StoredCollection

BATCH_DOCUMENTS = 64

Progress = Callable[[str, int, int], None]  # (collection, documents done, to do)


@dataclass(frozen=True)
class CollectionCopy:
    name: str
    copied: int
    removed: int
    unchanged: int
    documents: int
    chunks: int
    version: str
    seconds: float


def digest(store: Store, coll: StoredCollection) -> tuple[str, int]:
    """(sha256 of every document's fields, chunks and vector bytes, chunk count)."""
    h = hashlib.sha256()
    chunks = 0
    for w in store.export_documents(coll):
        d = w.document
        h.update(json.dumps([d.key, d.source, d.title, w.content_hash, d.metadata],
                            sort_keys=True, ensure_ascii=False).encode())
        for c, ch, vec in zip(w.chunks, w.chunk_hashes, w.vectors, strict=True):
            h.update(json.dumps([c.ordinal, c.text, c.title, c.section, c.page, c.source,
                                 c.tokens, ch], ensure_ascii=False).encode())
            h.update(vec.tobytes())
            chunks += 1
    return h.hexdigest(), chunks


def _target(src: StoredCollection, dst: Store) -> StoredCollection:
    found = dst.collection(src.name)
    if found is None:
        return dst.create_collection(src.name, src.embedder, src.dim, src.chunking)
    if (found.embedder, found.dim, found.chunking) != (src.embedder, src.dim, src.chunking):
        raise StoreError(f"collection {src.name!r} exists in the target with another "
                         f"embedder or chunking ({found.embedder}, {found.dim} dims)",
                         hint="drop it there, or copy into an empty database")
    return found


def copy_collection(src: Store, dst: Store, name: str,
                    progress: Progress | None = None) -> CollectionCopy:
    start = time.perf_counter()
    source = src.collection(name)
    if source is None:
        raise NotFoundError(f"no collection {name!r} in the source",
                            hint="see `alicerce collections`")
    target = _target(source, dst)
    have, want = dst.document_hashes(target), src.document_hashes(source)
    todo = sorted(k for k, (h, _) in want.items() if have.get(k, ("",))[0] != h)
    gone = sorted(set(have) - set(want))
    batch: list[DocumentWrite] = []
    done = 0
    for write in src.export_documents(source, todo):
        batch.append(write)
        if len(batch) >= BATCH_DOCUMENTS:
            dst.write_documents(target, batch)
            done += len(batch)
            batch = []
            if progress:
                progress(name, done, len(todo))
    if batch:
        dst.write_documents(target, batch)
    dst.delete_documents(target, gone)
    dst.flush()
    if progress:
        progress(name, len(todo), len(todo))
    version = src.record_version(source)
    (src_digest, chunks), (dst_digest, _) = digest(src, source), digest(dst, target)
    if dst.record_version(target) != version or src_digest != dst_digest:
        raise StoreError(f"collection {name!r}: the copy differs from the source after "
                         "copying (was the source written to meanwhile?)",
                         hint="run the migration again; it copies only what differs")
    return CollectionCopy(name, len(todo), len(gone), len(want) - len(todo), len(want),
                          chunks, version, time.perf_counter() - start)


def copy_collections(src: Store, dst: Store, names: Sequence[str] | None = None,
                     progress: Progress | None = None) -> list[CollectionCopy]:
    return [copy_collection(src, dst, n, progress) for n in (names or src.collection_names())]
