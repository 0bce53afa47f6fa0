"""A home moved to PostgreSQL and back: the same search results, a verified copy that is
safe to rerun (also after an interruption), and clear refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings
from alicerce.errors import InputError, StoreError
from alicerce.store import migrate as migration


def cli(*args: str, home: Path, store: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing",
           "ALICERCE_STORE": store}
    return subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def ranked(alc: Alicerce, query: str, mode: str) -> list[tuple[float, str]]:
    """(score, document) of all four documents, ordered by score then key: equal scores
    (the hashing embedder gives many zeros) come back from the stores in any order."""
    hits = alc.search(query, "kb", mode=mode, k=4)  # type: ignore[arg-type]
    return sorted(((round(h.score, 3), h.doc_key) for h in hits), reverse=True)


def test_a_home_moves_to_postgresql_and_back_with_the_same_answers(
        tmp_path: Path, docs: Path, pg_url: str) -> None:
    home = tmp_path / "home"
    r = cli("ingest", str(docs), "-c", "kb", home=home)
    assert r.returncode == 0, r.stderr
    r = cli("migrate", "--to", pg_url, "--json", home=home)
    assert r.returncode == 0, r.stderr
    copy = json.loads(r.stdout)["collections"][0]
    assert (copy["name"], copy["copied"], copy["documents"]) == ("kb", 4, 4)
    lite = Alicerce(Settings.load(home=home, embedder="hashing"))
    pg = Alicerce(Settings.load(home=home, embedder="hashing", store=pg_url))
    assert [c.version for c in pg.collections()] == [c.version for c in lite.collections()]
    for query in ("guest code", "refund hotel taxi", "férias antecedência"):
        for mode in ("dense", "hybrid"):
            got, want = (ranked(a, query, mode) for a in (pg, lite))
            assert got == want, (query, mode)
    assert [h.doc_key for h in pg.search("almoço", "kb", mode="sparse",
                                         filters={"area": "rh"})] == ["q2"]
    lite.close()
    pg.close()
    # Rerun: nothing to do. Then a change at the source: only it is copied.
    r = cli("migrate", "--to", pg_url, "--json", home=home)
    assert json.loads(r.stdout)["collections"][0]["copied"] == 0, r.stderr
    (docs / "refund.md").write_text("# Refund policy\n\nReceipts within 60 days.\n")
    (docs / "ferias.txt").unlink()
    assert cli("ingest", str(docs), "-c", "kb", "--sync", home=home).returncode == 0
    r = cli("migrate", "--to", pg_url, "--json", home=home)
    copy = json.loads(r.stdout)["collections"][0]
    assert (copy["copied"], copy["removed"], copy["unchanged"]) == (1, 1, 2), r.stderr
    # And back, into another home's SQLite file, from the PostgreSQL one.
    other = tmp_path / "other"
    r = cli("migrate", "--to", "sqlite", "--json", home=other, store=pg_url)
    assert r.returncode == 0, r.stderr
    with Alicerce(Settings.load(home=other, embedder="hashing")) as back:
        assert [h.doc_key for h in back.search("receipts 60 days", "kb", k=1)] == \
            ["docs/refund.md"]


def test_an_interrupted_copy_is_finished_by_running_it_again(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src_dir = tmp_path / "docs"
    src_dir.mkdir()
    for i in range(7):
        (src_dir / f"d{i}.txt").write_text(f"document number {i} about topic {i % 3}")
    alc = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing"))
    alc.ingest([src_dir], "kb")
    monkeypatch.setattr(migration, "BATCH_DOCUMENTS", 2)

    def stop(name: str, done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt  # as a user's Ctrl-C, or a kill, between batches

    with pytest.raises(KeyboardInterrupt):
        alc.migrate(pg_url, progress=stop)
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", store=pg_url)) as pg:
        kb = pg.store.collection("kb")
        assert kb is not None and len(pg.store.document_hashes(kb)) == 4  # whole batches
    copy = alc.migrate(pg_url).collections[0]
    assert (copy.copied, copy.unchanged, copy.documents) == (3, 4, 7)
    alc.close()


def test_refusals(tmp_path: Path, pg_url: str, alc: Alicerce, docs: Path) -> None:
    with pytest.raises(InputError, match="same store"):
        alc.migrate("sqlite")
    with pytest.raises(InputError, match="unknown store"):
        alc.migrate("mysql://x")
    with pytest.raises(StoreError, match="unreachable"):
        alc.migrate(f"postgresql://u:pw@/db?host={tmp_path}&port=1")
    alc.ingest([docs], "kb")
    with Alicerce(Settings.load(home=tmp_path / "x", embedder="e5-small",
                                store=pg_url)) as other:
        other.store.create_collection("kb", "e5-small", 384, {"tokens": 200})
    with pytest.raises(StoreError, match="another embedder"):
        alc.migrate(pg_url)


def test_apps_keys_prompts_and_traces_move_with_the_home(
        tmp_path: Path, docs: Path, pg_url: str) -> None:
    spec = "name: faq\ncollections: [kb]\ndecoding: {max_tokens: 16}\n"
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing")) as alc:
        alc.ingest([docs], "kb")
        alc.deploy_app(spec)
        alc.deploy_app(spec.replace("16", "32"))
        alc.apps.label("faq@1", "production", "cli")
        _, secret = alc.keys.create("analyst", ["ask"], ["kb"])
        revoked, _ = alc.keys.create("gone", ["ask"])
        alc.keys.revoke(revoked.id)
        trace = alc.traces.record("faq", "local", "first question", answer={"text": "a"})
        alc.traces.flush()
        alc.traces.feedback(trace, 1)
        alc.prompts.create("mine", "Q: {{ question }}")
        moved = alc.migrate(pg_url)
        again = alc.migrate(pg_url)  # a second run changes nothing and still verifies
    assert {t.name for t in moved.tables} >= {"api_keys", "app_versions", "app_labels",
                                               "app_label_log", "traces", "feedback",
                                               "prompt_versions", "audit_log"}
    assert [(t.name, t.rows) for t in again.tables] == [(t.name, t.rows) for t in moved.tables]
    with Alicerce(Settings.load(home=tmp_path / "fresh", embedder="hashing",
                                store=pg_url)) as pg:
        assert pg.app("faq@production").version == 1 and pg.app("faq@2").version == 2
        assert pg.keys.verify(secret).collections == ("kb",)
        assert pg.keys.get(revoked.id).revoked_at is not None
        assert pg.traces.get(trace).question == "first question"
        assert [f.score for f in pg.traces.feedback_for(trace)] == [1]
        assert pg.prompts.get("mine").template == "Q: {{ question }}"
        # New rows after the copy get new keys (identities continue after the copied ones).
        pg.traces.record("faq", "local", "second", answer={"text": "b"})
        pg.traces.flush()
        assert pg.traces.count() == 2
        assert [e.action for e in pg.keys.audit_log()][:1] == ["key.revoke"]
        _, later = pg.keys.create("later", ["ask"])
        assert pg.keys.verify(later).name == "later"
