"""POST /v1/collections/{name}/search: the same hits as the core API, each with the
retrievers' scores behind it, and the key's scope and collections enforced before any work
(a restricted key cannot tell another collection from a missing one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alicerce import Alicerce, Settings
from alicerce.server import create_app


@pytest.fixture
def served(tmp_path: Path, docs: Path) -> Iterator[tuple[Alicerce, TestClient]]:
    settings = Settings.load(home=tmp_path / "h", embedder="hashing", guards={})
    alc = Alicerce(settings)
    alc.ingest([docs], "kb")
    alc.ingest([docs / "faq.jsonl"], "other", id_field="id", title_field="title")
    with TestClient(create_app(settings, alc)) as client:
        yield alc, client
    alc.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_hits_equal_the_core_api_with_each_retrievers_score(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, key = alc.keys.create("ana", ["ask"])
    for mode in ("hybrid", "sparse", "dense"):
        r = client.post("/v1/collections/kb/search", headers=bearer(key),
                        json={"query": "receipts within how many days", "k": 3, "mode": mode})
        assert r.status_code == 200, r.text
        body = r.json()
        want = alc.search("receipts within how many days", "kb", mode=mode, k=3)
        assert [h["chunk_id"] for h in body["data"]] == [h.chunk_id for h in want]
        assert [h["score"] for h in body["data"]] == pytest.approx([h.score for h in want])
        assert body["mode"] == mode and body["collection"] == "kb"
        top = body["data"][0]
        assert top["doc_key"].endswith("refund.md") and "30 days" in top["text"]
        sides = {"sparse", "dense"} if mode == "hybrid" else {mode}
        assert sides & set(top["scores"]), top["scores"]
    def keys(area: str) -> list[str]:
        r = client.post("/v1/collections/other/search", headers=bearer(key), json={
            "query": "almoço code", "mode": "sparse", "filters": {"area": area}})
        return [h["doc_key"] for h in r.json()["data"]]
    assert keys("rh") == ["q2"] and keys("it") == ["q1"]  # each filter keeps only its own


def test_scope_and_collections_are_checked_before_any_work(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, kb_only = alc.keys.create("analyst", ["ask"], ["kb"])
    _, ingester = alc.keys.create("bot", ["ingest"])
    _, anyone = alc.keys.create("ana", ["ask"])
    body = {"query": "guest code"}
    assert client.post("/v1/collections/kb/search", json=body).status_code == 401
    assert client.post("/v1/collections/kb/search", headers=bearer(ingester),
                       json=body).status_code == 403
    assert client.post("/v1/collections/other/search", headers=bearer(kb_only),
                       json=body).status_code == 403
    # a restricted key gets the same answer for a missing collection as for another's
    assert client.post("/v1/collections/nope/search", headers=bearer(kb_only),
                       json=body).status_code == 403
    missing = client.post("/v1/collections/nope/search", headers=bearer(anyone), json=body)
    assert missing.status_code == 404 and "nope" in missing.text


def test_bad_requests_say_what_is_wrong(served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, key = alc.keys.create("ana", ["ask"])
    url, auth = "/v1/collections/kb/search", bearer(key)
    bad_filter = client.post(url, headers=auth, json={"query": "x",
                                                      "filters": {"bad key!": "v"}})
    assert bad_filter.status_code == 400 and "bad key!" in bad_filter.text
    for wrong in ({"query": ""}, {"query": "x", "k": 0}, {"query": "x", "k": 101},
                  {"query": "x", "mode": "magic"}, {"query": "x", "alpha": 2},
                  {"query": "x", "extra": 1}, {"query": "x" * 2001}):
        r = client.post(url, headers=auth, json=wrong)
        assert r.status_code in (400, 422), (wrong, r.status_code)
        assert r.json()["error"]["message"], wrong
