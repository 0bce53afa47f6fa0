"""Contract tests every Store implementation inherits (Haystack-style mixin).

A test module subclasses `StoreContract` and provides the `store` fixture; each test here
then runs against that implementation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from alicerce.ingest.pipeline import chunk_hash, doc_hash
from alicerce.store.base import BoostWeights, DocumentWrite, Filters, Store
from alicerce.testing.fakes import HashingEmbedder
from alicerce.types import Chunk, Document, Section

EMB = HashingEmbedder(dim=64)
CHUNKING: dict[str, Any] = {"method": "recursive-v1", "tokens": 200, "overlap": 32}


def make_write(key: str, texts: list[str], title: str = "", **meta: Any) -> DocumentWrite:
    doc = Document(key=key, source=f"{key}.txt", title=title or key,
                   sections=tuple(Section(t) for t in texts), metadata=meta)
    chunks = [Chunk(key, i, t, doc.title, "", None, doc.source, len(t.split()), meta)
              for i, t in enumerate(texts)]
    return DocumentWrite(doc, doc_hash(doc), chunks, [chunk_hash(t) for t in texts],
                         EMB.embed_passages(texts))


class StoreContract:
    """Behaviour the core relies on; subclasses supply a fresh empty `store` fixture."""

    @pytest.fixture
    def store(self) -> Store:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_create_and_find_collection(self, store: Store) -> None:
        assert store.collection("kb") is None
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        again = store.collection("kb")
        assert again == coll
        assert [c.name for c in store.collections()] == ["kb"]

    def test_collection_names_without_counting(self, store: Store) -> None:
        for name in ("zeta", "alpha"):
            store.create_collection(name, EMB.name, EMB.dim, CHUNKING)
        assert store.collection_names() == ["alpha", "zeta"]

    def test_write_then_search_both_ways(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(coll, [make_write("a", ["refund policy for travel expenses"]),
                                     make_write("b", ["vacation days and public holidays"])])
        sparse = store.sparse_search(coll, "travel refund", 5, None, BoostWeights())
        assert [store.hits([i])[i].doc_key for i, _ in sparse] == ["a"]
        vec = EMB.embed_queries(["vacation holidays"])[0]
        dense = store.dense_search(coll, vec, 1, None)
        assert store.hits([dense[0][0]])[dense[0][0]].doc_key == "b"

    def test_replace_keeps_no_stale_chunks(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(coll, [make_write("a", ["old text about apples", "more apples"])])
        store.write_documents(coll, [make_write("a", ["new text about pears"])])
        assert store.sparse_search(coll, "apples", 5, None, BoostWeights()) == []
        vec = EMB.embed_queries(["apples"])[0]
        ids = [i for i, _ in store.dense_search(coll, vec, 10, None)]
        assert [store.hits(ids)[i].text for i in ids] == ["new text about pears"]
        assert store.collections()[0].chunks == 1

    def test_delete_documents(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(coll, [make_write("a", ["alpha"]), make_write("b", ["beta"])])
        assert store.delete_documents(coll, ["a", "missing"]) == 1
        assert set(store.document_hashes(coll)) == {"b"}
        assert store.sparse_search(coll, "alpha", 5, None, BoostWeights()) == []

    def test_metadata_filters(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(coll, [make_write("a", ["course faq text"], course="ml"),
                                     make_write("b", ["course faq text"], course="de"),
                                     make_write("c", ["course faq text"], course="ops")])
        vec = EMB.embed_queries(["course faq"])[0]
        cases: list[tuple[Filters, set[str]]] = [({"course": "de"}, {"b"}),
                                                 ({"course": ["ml", "ops"]}, {"a", "c"})]
        for filters, expected in cases:
            s = store.sparse_search(coll, "course", 5, filters, BoostWeights())
            d = store.dense_search(coll, vec, 5, filters)
            assert {store.hits([i])[i].doc_key for i, _ in s} == expected
            assert {store.hits([i])[i].doc_key for i, _ in d} == expected

    def test_title_boost_changes_ranking(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(coll, [
            make_write("t", ["unrelated body words here"], title="certificate"),
            make_write("b", ["certificate certificate in the body text"], title="other")])
        top = store.sparse_search(coll, "certificate", 2, None, BoostWeights(10, 0, 1))
        assert store.hits([top[0][0]])[top[0][0]].doc_key == "t"
        top = store.sparse_search(coll, "certificate", 2, None, BoostWeights(0.01, 0, 1))
        assert store.hits([top[0][0]])[top[0][0]].doc_key == "b"

    def test_collections_are_isolated(self, store: Store) -> None:
        one = store.create_collection("one", EMB.name, EMB.dim, CHUNKING)
        two = store.create_collection("two", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(one, [make_write("a", ["shared words"])])
        store.write_documents(two, [make_write("a", ["shared words"])])
        ids_one = {i for i, _ in store.sparse_search(one, "shared", 5, None, BoostWeights())}
        ids_two = {i for i, _ in store.sparse_search(two, "shared", 5, None, BoostWeights())}
        assert ids_one and ids_two and not ids_one & ids_two

    def test_version_is_content_addressed(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(coll, [make_write("a", ["alpha"])])
        v1 = store.record_version(coll)
        assert store.record_version(coll) == v1
        store.write_documents(coll, [make_write("b", ["beta"])])
        v2 = store.record_version(coll)
        store.delete_documents(coll, ["b"])
        assert v2 != v1 and store.record_version(coll) == v1

    def test_vectors_by_hash_reuses_embeddings(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        w = make_write("a", ["alpha text"])
        store.write_documents(coll, [w])
        found = store.vectors_by_hash(coll, [chunk_hash("alpha text"), "nope"])
        assert list(found) == [chunk_hash("alpha text")]
        np.testing.assert_allclose(found[chunk_hash("alpha text")], w.vectors[0], rtol=1e-6)

    def test_export_gives_back_what_was_written(self, store: Store) -> None:
        coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        writes = [make_write("b", ["beta one", "beta two"], course="x"),
                  make_write("a", ["alpha"], title="Alpha", page="3")]
        store.write_documents(coll, writes)
        out = list(store.export_documents(coll))
        assert [w.document.key for w in out] == ["a", "b"]
        for got, want in zip(out, sorted(writes, key=lambda w: w.document.key), strict=True):
            assert got.content_hash == want.content_hash
            assert got.document.metadata == want.document.metadata
            assert got.chunks == list(want.chunks)
            assert list(got.chunk_hashes) == list(want.chunk_hashes)
            np.testing.assert_array_equal(got.vectors, want.vectors)
        assert [w.document.key for w in store.export_documents(coll, ["b", "nope"])] == ["b"]
        assert list(store.export_documents(coll, [])) == []
        copy = store.create_collection("copy", EMB.name, EMB.dim, CHUNKING)
        store.write_documents(copy, out)
        assert store.document_hashes(copy) == store.document_hashes(coll)
