"""Embedded store: SQLite in WAL mode (documents, chunks, vectors, FTS5) + HNSW files.

SQLite is the source of truth; each write is one transaction, so `kill -9` at any moment
loses nothing committed. The HNSW file per collection is derived data, rebuilt when its
stamp does not match the collection's vector epoch.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from alicerce.errors import StoreError
from alicerce.store.ann import AnnIndex
from alicerce.store.base import (
    EXPORT_COLUMNS,
    BoostWeights,
    DocumentWrite,
    Filters,
    Scored,
    StoredCollection,
    check_filters,
    group_chunks,
    group_writes,
)
from alicerce.store.db import add_columns, connect_sqlite, private_dir, transaction
from alicerce.store.query import fts_query
from alicerce.store.schema import FTS, SCHEMA, SCHEMA_VERSION
from alicerce.types import CollectionInfo, Hit

HnswParams = dict[str, Any]


class SQLiteStore:
    """One SQLite file plus one `.usearch` file per collection under `home`."""

    def __init__(self, home: Path, hnsw: HnswParams | None = None,
                 exact_search_limit: int = 20000) -> None:
        private_dir(home)
        self.home = home
        self.path = home / "alicerce.db"
        self._hnsw = hnsw or {}
        self._exact_limit = exact_search_limit
        self._ann: dict[int, AnnIndex] = {}
        self._db = connect_sqlite(self.path, SCHEMA)
        # 1 from a content write until a version names that content (same transactions), so
        # an ingest killed half-way is seen, and its committed part becomes a version.
        add_columns(self._db, "collections", {"dirty": "INTEGER NOT NULL DEFAULT 0"})
        with self._tx():
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"store at {self.path} has schema {row[0]}, this version "
                                 f"of Alicerce reads {SCHEMA_VERSION}",
                                 hint="use a new ALICERCE_HOME or a matching Alicerce")

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return cast("AbstractContextManager[sqlite3.Connection]", transaction(self._db))

    # -- collections -------------------------------------------------------------------
    def collection(self, name: str) -> StoredCollection | None:
        row = self._db.execute("SELECT id, name, embedder, dim, chunking FROM collections "
                               "WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return StoredCollection(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def create_collection(self, name: str, embedder: str, dim: int,
                          chunking: dict[str, Any]) -> StoredCollection:
        with self._tx() as db:
            cur = db.execute("INSERT INTO collections (name, embedder, dim, chunking) "
                             "VALUES (?, ?, ?, ?)", (name, embedder, dim, json.dumps(chunking)))
            db.execute(FTS.format(cid=int(cur.lastrowid or 0)))
        coll = self.collection(name)
        assert coll is not None
        return coll

    def collection_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM collections ORDER BY name")]

    def collections(self) -> list[CollectionInfo]:
        self._reconcile()
        rows = self._db.execute(
            "SELECT c.name, c.embedder, c.chunking, c.updated_at,"
            " (SELECT count(*) FROM documents d WHERE d.collection_id=c.id),"
            " (SELECT count(*) FROM chunks k WHERE k.collection_id=c.id),"
            " (SELECT v.id FROM collection_versions v WHERE v.collection_id=c.id"
            "  ORDER BY v.seq DESC LIMIT 1)"
            " FROM collections c ORDER BY c.name").fetchall()
        out = []
        for name, emb, chunking, updated, docs, chunks, version in rows:
            cfg = json.loads(chunking)
            out.append(CollectionInfo(name, docs, chunks, version or "", emb,
                                      int(cfg.get("tokens", 0)), int(cfg.get("overlap", 0)),
                                      updated))
        return out

    def _epoch(self, cid: int) -> int:
        return int(self._db.execute("SELECT vec_epoch FROM collections WHERE id=?",
                                    (cid,)).fetchone()[0])

    # -- documents ---------------------------------------------------------------------
    def document_hashes(self, coll: StoredCollection) -> dict[str, tuple[str, str]]:
        rows = self._db.execute("SELECT key, content_hash, source FROM documents "
                                "WHERE collection_id=?", (coll.id,))
        return {k: (h, s) for k, h, s in rows}

    def document_chunks(self, coll: StoredCollection) -> Iterator[tuple[str, str, list[str]]]:
        """(key, title, chunk texts in order) for every document, in key order."""
        yield from group_chunks(self._db.execute(
            "SELECT d.key, d.title, c.text FROM chunks c JOIN documents d "
            "ON d.id = c.document_id WHERE c.collection_id=? ORDER BY d.key, c.ordinal",
            (coll.id,)))

    def export_documents(self, coll: StoredCollection,
                         keys: Sequence[str] | None = None) -> Iterator[DocumentWrite]:
        cols = ", ".join(EXPORT_COLUMNS).format(vector="vector")
        sql = (f"SELECT {cols} FROM documents d LEFT JOIN chunks c ON c.document_id = d.id "
               "WHERE d.collection_id = ? {keys} ORDER BY d.key, c.ordinal")
        wanted = sorted(set(keys)) if keys is not None else None
        parts = [wanted[i : i + 500] for i in range(0, len(wanted), 500)] if wanted else []
        for part in parts if wanted is not None else [None]:
            where = f"AND d.key IN ({','.join('?' * len(part))})" if part else ""
            rows = self._db.execute(sql.format(keys=where), (coll.id, *(part or ())))
            yield from group_writes(rows, lambda b: np.frombuffer(b, np.float32).copy(),
                                    json.loads)

    def vectors_by_hash(self, coll: StoredCollection,
                        hashes: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        out: dict[str, NDArray[np.float32]] = {}
        uniq = list(dict.fromkeys(hashes))
        for i in range(0, len(uniq), 500):
            part = uniq[i : i + 500]
            marks = ",".join("?" * len(part))
            for h, blob in self._db.execute(
                    f"SELECT content_hash, vector FROM chunks WHERE collection_id=? "
                    f"AND content_hash IN ({marks})", (coll.id, *part)):
                out[h] = np.frombuffer(blob, dtype=np.float32)
        return out

    def _drop_chunks(self, db: sqlite3.Connection, cid: int, doc_ids: Sequence[int]) -> list[int]:
        removed: list[int] = []
        for doc_id in doc_ids:
            rows = db.execute("SELECT id, title, section, text FROM chunks WHERE document_id=?",
                              (doc_id,)).fetchall()
            db.executemany(f"INSERT INTO fts_{cid} (fts_{cid}, rowid, title, section, text) "
                           "VALUES ('delete', ?, ?, ?, ?)", rows)
            db.execute("DELETE FROM chunks WHERE document_id=?", (doc_id,))
            removed.extend(r[0] for r in rows)
        return removed

    def write_documents(self, coll: StoredCollection, writes: Sequence[DocumentWrite]) -> None:
        self._index(coll)  # loaded first, so this write is mirrored instead of forcing a rebuild
        cid = coll.id
        added_ids: list[int] = []
        added_vecs: list[NDArray[np.float32]] = []
        with self._tx() as db:
            removed: list[int] = []
            for w in writes:
                doc = w.document
                row = db.execute("SELECT id FROM documents WHERE collection_id=? AND key=?",
                                 (cid, doc.key)).fetchone()
                meta = json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True)
                if row:
                    doc_id = int(row[0])
                    removed += self._drop_chunks(db, cid, [doc_id])
                    db.execute("UPDATE documents SET source=?, title=?, content_hash=?, "
                               "metadata=?, updated_at=strftime('%Y-%m-%dT%H:%M:%SZ','now') "
                               "WHERE id=?", (doc.source, doc.title, w.content_hash, meta, doc_id))
                else:
                    cur = db.execute("INSERT INTO documents (collection_id, key, source, title, "
                                     "content_hash, metadata) VALUES (?, ?, ?, ?, ?, ?)",
                                     (cid, doc.key, doc.source, doc.title, w.content_hash, meta))
                    doc_id = int(cur.lastrowid or 0)
                for c, h, vec in zip(w.chunks, w.chunk_hashes, w.vectors, strict=True):
                    cur = db.execute(
                        "INSERT INTO chunks (collection_id, document_id, ordinal, text, title, "
                        "section, page, source, tokens, metadata, content_hash, vector) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (cid, doc_id, c.ordinal, c.text, c.title, c.section, c.page, c.source,
                         c.tokens, meta, h, np.asarray(vec, np.float32).tobytes()))
                    chunk_id = int(cur.lastrowid or 0)
                    db.execute(f"INSERT INTO fts_{cid} (rowid, title, section, text) "
                               "VALUES (?, ?, ?, ?)", (chunk_id, c.title, c.section, c.text))
                    added_ids.append(chunk_id)
                    added_vecs.append(vec)
            epoch = self._bump(db, cid)
        self._apply(cid, removed, added_ids, added_vecs, epoch)

    def delete_documents(self, coll: StoredCollection, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        self._index(coll)
        with self._tx() as db:
            ids = [int(r[0]) for k in keys for r in db.execute(
                "SELECT id FROM documents WHERE collection_id=? AND key=?", (coll.id, k))]
            removed = self._drop_chunks(db, coll.id, ids)
            db.executemany("DELETE FROM documents WHERE id=?", [(i,) for i in ids])
            epoch = self._bump(db, coll.id)
        self._apply(coll.id, removed, [], [], epoch)
        return len(ids)

    def _bump(self, db: sqlite3.Connection, cid: int) -> int:
        db.execute("UPDATE collections SET vec_epoch=vec_epoch+1, dirty=1, "
                   "updated_at=strftime('%Y-%m-%dT%H:%M:%SZ','now') WHERE id=?", (cid,))
        return self._epoch(cid)

    def _apply(self, cid: int, removed: list[int], ids: list[int],
               vecs: list[NDArray[np.float32]], epoch: int) -> None:
        """Mirror a committed write into the HNSW index; saved by `flush` at the end of a run."""
        ann = self._ann[cid]
        ann.remove(removed, epoch)
        if ids:
            ann.add(np.asarray(ids, np.int64), np.vstack(vecs).astype(np.float32), epoch)

    def flush(self) -> None:
        """Persist HNSW indexes changed since they were loaded."""
        for ann in self._ann.values():
            ann.save()

    def record_version(self, coll: StoredCollection) -> str:
        """Name what is stored now: the version is a hash of every document's key and
        content hash (with the embedder and chunking), computed and recorded in one
        transaction with clearing the collection's dirty mark."""
        with self._tx() as db:
            digest = hashlib.sha256()
            digest.update(json.dumps([coll.embedder, coll.chunking], sort_keys=True).encode())
            docs = 0
            for key, h in db.execute("SELECT key, content_hash FROM documents "
                                     "WHERE collection_id=? ORDER BY key", (coll.id,)):
                digest.update(f"{key}\x00{h}\n".encode())
                docs += 1
            vid = digest.hexdigest()[:16]
            last = db.execute("SELECT id FROM collection_versions WHERE collection_id=? "
                              "ORDER BY seq DESC LIMIT 1", (coll.id,)).fetchone()
            if last is None or last[0] != vid:
                chunks = db.execute("SELECT count(*) FROM chunks WHERE collection_id=?",
                                    (coll.id,)).fetchone()[0]
                seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM collection_versions "
                                 "WHERE collection_id=?", (coll.id,)).fetchone()[0]
                db.execute("INSERT OR REPLACE INTO collection_versions (collection_id, id, seq, "
                           "embedder, chunking, documents, chunks) VALUES (?,?,?,?,?,?,?)",
                           (coll.id, vid, seq, coll.embedder, json.dumps(coll.chunking), docs,
                            chunks))
            db.execute("UPDATE collections SET dirty=0 WHERE id=?", (coll.id,))
        return vid

    def _reconcile(self, coll: StoredCollection | None = None) -> None:
        """Record a version for content no version names yet (an ingest that was killed,
        or one still running): a version always names what a reader sees."""
        where, args = ("WHERE dirty=1 AND id=?", (coll.id,)) if coll else ("WHERE dirty=1", ())
        for (name,) in self._db.execute(f"SELECT name FROM collections {where}",
                                        args).fetchall():
            if (dirty := self.collection(name)) is not None:
                self.record_version(dirty)

    def versions(self, coll: StoredCollection) -> list[dict[str, Any]]:
        self._reconcile(coll)
        cols = ("id", "seq", "embedder", "chunking", "documents", "chunks", "created_at")
        rows = self._db.execute(f"SELECT {', '.join(cols)} FROM collection_versions "
                                "WHERE collection_id=? ORDER BY seq", (coll.id,))
        return [dict(zip(cols, r, strict=True)) for r in rows]

    # -- search ------------------------------------------------------------------------
    def _filter_sql(self, filters: Filters | None, alias: str) -> tuple[str, list[str]]:
        sql, args = "", []
        for key, value in check_filters(filters).items():
            values = value if isinstance(value, list) else [value]
            column = (f"{alias}.source" if key == "source" else
                      f"CAST(json_extract({alias}.metadata, '$.\"{key}\"') AS TEXT)")
            sql += f" AND {column} IN ({','.join('?' * len(values))})"
            args += values
        return sql, args

    def sparse_search(self, coll: StoredCollection, query: str, k: int,
                      filters: Filters | None, boosts: BoostWeights) -> Scored:
        match = fts_query(query)
        if not match:
            return []
        where, args = self._filter_sql(filters, "c")
        cid = coll.id
        rank = f"bm25(fts_{cid}, {boosts.title:f}, {boosts.section:f}, {boosts.text:f})"
        if where:
            sql = (f"SELECT c.id, -{rank} FROM fts_{cid} JOIN chunks c ON c.id = fts_{cid}.rowid "
                   f"WHERE fts_{cid} MATCH ? {where} ORDER BY {rank} LIMIT ?")
        else:
            sql = (f"SELECT rowid, -{rank} FROM fts_{cid} WHERE fts_{cid} MATCH ? "
                   f"ORDER BY {rank} LIMIT ?")
        return [(int(i), float(s)) for i, s in self._db.execute(sql, (match, *args, k))]

    def _index(self, coll: StoredCollection) -> AnnIndex:
        """The collection's HNSW index, reloaded when another process changed the data."""
        ann = self._ann.get(coll.id)
        epoch = self._epoch(coll.id)
        if ann is None or ann.stamp != epoch:
            ann = AnnIndex(self.home / f"collection-{coll.id}.usearch", coll.dim, **self._hnsw)
            ann.load_or_rebuild(epoch, lambda: self._all_vectors(coll.id))
            self._ann[coll.id] = ann
        return ann

    def _all_vectors(self, cid: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        rows = self._db.execute("SELECT id, vector FROM chunks WHERE collection_id=? ORDER BY id",
                                (cid,)).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, 0), np.float32)
        return ids, np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    def dense_search(self, coll: StoredCollection, vector: NDArray[np.float32], k: int,
                     filters: Filters | None) -> Scored:
        ann = self._index(coll)
        if not filters:
            ids, sims = ann.search(vector, k)
            return [(int(i), float(s)) for i, s in zip(ids, sims, strict=True)]
        where, args = self._filter_sql(filters, "c")
        allowed = np.fromiter((r[0] for r in self._db.execute(
            f"SELECT c.id FROM chunks c WHERE c.collection_id=? {where}", (coll.id, *args))),
            dtype=np.int64)
        if len(allowed) <= self._exact_limit:
            if not len(allowed):
                return []
            sims = ann.get(allowed) @ np.asarray(vector, np.float32)
            top = np.argsort(-sims)[:k]
            return [(int(allowed[i]), float(sims[i])) for i in top]
        keep = set(allowed.tolist())
        fetch = k * 4
        while True:  # widen the ANN candidate list until enough survive the filter
            ids, sims = ann.search(vector, fetch)
            hits = [(int(i), float(s)) for i, s in zip(ids, sims, strict=True) if int(i) in keep]
            if len(hits) >= k or fetch >= len(ann):
                return hits[:k]
            fetch *= 4

    def hits(self, ids: Sequence[int]) -> dict[int, Hit]:
        out: dict[int, Hit] = {}
        for i in range(0, len(ids), 500):
            part = list(ids[i : i + 500])
            rows = self._db.execute(
                "SELECT c.id, d.key, c.text, c.title, c.section, c.page, c.source, c.metadata "
                f"FROM chunks c JOIN documents d ON d.id = c.document_id "
                f"WHERE c.id IN ({','.join('?' * len(part))})", part)
            for cid, key, text, title, section, page, source, meta in rows:
                out[cid] = Hit(cid, key, 0.0, text, title, section, page, source, json.loads(meta))
        return out

    def integrity(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.flush()
        self._db.close()
