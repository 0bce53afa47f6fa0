from pathlib import Path

import pytest

from alicerce import Alicerce
from alicerce.embed import get_embedder
from alicerce.errors import InputError


def embedded(alc: Alicerce) -> int:
    return get_embedder("hashing", alc.settings).calls  # type: ignore[attr-defined, no-any-return]


def test_ingest_mixed_folder(alc: Alicerce, docs: Path) -> None:
    report = alc.ingest([docs], "kb")
    assert report.ok and report.added == 4 and report.version
    [info] = alc.collections()
    assert (info.name, info.documents) == ("kb", 4) and info.chunks >= 4
    hits = alc.search("guest code", "kb", k=1)
    assert hits[0].doc_key == "q1" and hits[0].title == "Wi-Fi password"


def test_reingest_unchanged_embeds_nothing(alc: Alicerce, docs: Path) -> None:
    first = alc.ingest([docs], "kb")
    calls = embedded(alc)
    again = alc.ingest([docs], "kb")
    assert embedded(alc) == calls
    assert (again.unchanged, again.added, again.updated, again.chunks_embedded) == (4, 0, 0, 0)
    assert again.version == first.version
    assert len(alc.versions("kb")) == 1


def test_changed_file_replaces_only_its_chunks(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    before = {h.chunk_id for h in alc.search("férias", "kb", k=20, mode="sparse")}
    md = docs / "refund.md"
    md.write_text(md.read_text() + "\n## Meals\n\nMeals up to 120 per day.\n")
    calls = embedded(alc)
    report = alc.ingest([docs], "kb")
    assert (report.updated, report.unchanged) == (1, 3)
    assert embedded(alc) - calls == report.chunks_embedded
    assert report.chunks_reused >= 0
    after = {h.chunk_id for h in alc.search("férias", "kb", k=20, mode="sparse")}
    assert before == after  # the other documents' chunks were not touched
    assert alc.search("meals per day", "kb", k=1)[0].source.endswith("refund.md")
    assert len(alc.versions("kb")) == 2


def test_record_removed_from_a_file_disappears(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    faq = docs / "faq.jsonl"
    faq.write_text(faq.read_text().splitlines()[1] + "\n")
    report = alc.ingest([docs], "kb")
    assert report.removed == 1
    assert all(h.doc_key != "q1" for h in alc.search("guest code", "kb", k=10))


def test_sync_removes_vanished_files_only_with_flag(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    (docs / "ferias.txt").unlink()
    assert alc.ingest([docs], "kb").removed == 0
    report = alc.ingest([docs], "kb", sync=True)
    assert report.removed == 1 and alc.collections()[0].documents == 3


def test_sync_keeps_documents_of_a_file_that_now_fails(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    (docs / "faq.jsonl").write_bytes(b"\x00\x01binary now")
    report = alc.ingest([docs], "kb", sync=True)
    assert not report.ok and report.removed == 0
    assert alc.collections()[0].documents == 4


def test_bad_files_are_reported_and_the_rest_ingested(alc: Alicerce, docs: Path) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 nonsense")
    (docs / "empty.md").write_text("")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    report = alc.ingest([docs, docs / "missing.txt"], "kb")
    assert not report.ok and report.added == 4
    failed = {Path(f.path).name: f for f in report.failures}
    assert set(failed) == {"broken.pdf", "empty.md", "image.png", "missing.txt"}
    assert all(f.hint for f in report.failures)


def test_invalid_collection_name(alc: Alicerce, docs: Path) -> None:
    with pytest.raises(InputError, match="invalid collection name"):
        alc.ingest([docs], "bad name!")


def test_examples_folder_ingests_cleanly(alc: Alicerce) -> None:
    from conftest import EXAMPLES

    report = alc.ingest([EXAMPLES], "handbook")
    assert report.ok, report.failures
    assert report.added == 11  # 5 files + 6 FAQ records
    kinds = {Path(h.source).suffix for h in alc.search("política", "handbook", k=50,
                                                        mode="sparse")}
    assert ".md" in kinds


def test_chunking_is_per_collection_and_fixed(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "small", chunk_tokens=32, chunk_overlap=4)
    alc.ingest([docs], "big")
    by_name = {c.name: c for c in alc.collections()}
    assert (by_name["small"].chunk_tokens, by_name["small"].chunk_overlap) == (32, 4)
    assert by_name["big"].chunk_tokens == alc.settings.chunk_tokens
    assert alc.ingest([docs], "small", chunk_tokens=32).unchanged == 4
    with pytest.raises(InputError, match="fixed when a collection is created"):
        alc.ingest([docs], "small", chunk_tokens=64)
    with pytest.raises(InputError, match="overlap"):
        alc.ingest([docs], "other", chunk_tokens=20, chunk_overlap=20)


def test_embedder_is_fixed_per_collection(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb", embedder="hashing")
    with pytest.raises(InputError, match="is embedded with hashing"):
        alc.ingest([docs], "kb", embedder="e5-small")


def test_identical_chunks_are_embedded_once(alc: Alicerce, tmp_path: Path) -> None:
    f = tmp_path / "dup.jsonl"
    f.write_text("".join(f'{{"id": "{i}", "text": "the same answer"}}\n' for i in range(5)))
    calls = embedded(alc)
    report = alc.ingest([f], "kb")
    assert report.added == 5 and report.chunks_embedded == 1 and report.chunks_reused == 4
    assert embedded(alc) - calls == 1
    assert len(alc.search("same answer", "kb", mode="dense", k=10)) == 5


def test_a_parser_crash_on_one_file_is_reported(alc: Alicerce, docs: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from alicerce.ingest import loaders

    def explode(data: bytes, name: str, mapping: object) -> object:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(loaders.LOADERS, ".txt", explode)
    report = alc.ingest([docs], "kb")
    assert report.added == 3
    [failure] = report.failures
    assert failure.path.endswith("ferias.txt") and "RecursionError" in failure.reason
