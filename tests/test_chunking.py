import itertools

from alicerce.embed.base import approx_tokens
from alicerce.ingest.chunking import ChunkingConfig, chunk_document, embedding_text
from alicerce.types import Document, Section


def doc(*sections: Section, title: str = "T") -> Document:
    return Document(key="k", source="s.md", title=title, sections=sections)


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}." if i % 10 == 9 else f"w{i}" for i in range(start, start + n))


def test_short_document_is_one_chunk() -> None:
    d = doc(Section("first part", ("T", "A")), Section("second part", ("T", "B")))
    [c] = chunk_document(d, ChunkingConfig(200, 20), approx_tokens)
    assert "first part" in c.text and "second part" in c.text and c.section == ""


def test_budget_is_respected_and_overlap_repeats_text() -> None:
    d = doc(Section(words(400)))
    chunks = chunk_document(d, ChunkingConfig(60, 15), approx_tokens)
    assert len(chunks) > 5
    assert all(c.tokens <= 60 for c in chunks)
    for a, b in itertools.pairwise(chunks):
        tail = a.text.split()[-3:]
        assert " ".join(tail) in b.text  # the next chunk starts with the previous tail
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_paragraph_boundaries_preferred() -> None:
    paras = [words(30, i * 100) for i in range(4)]
    d = doc(Section("\n\n".join(paras)))
    chunks = chunk_document(d, ChunkingConfig(45, 0), approx_tokens)
    assert [c.text for c in chunks] == paras


def test_sections_and_pages_are_kept() -> None:
    d = doc(Section(words(100), ("T", "Intro"), page=1), Section(words(100, 500), ("T", "End"),
                                                              page=2), title="T")
    chunks = chunk_document(d, ChunkingConfig(50, 0), approx_tokens)
    assert {c.section for c in chunks} == {"Intro", "End"}
    assert {c.page for c in chunks if c.section == "End"} == {2}


def test_giant_word_is_cut() -> None:
    d = doc(Section("x" * 5000))
    chunks = chunk_document(d, ChunkingConfig(50, 0), approx_tokens)
    assert "".join(c.text for c in chunks) == "x" * 5000


def test_embedding_text_adds_title_and_section() -> None:
    d = doc(Section(words(100), ("T", "Deep")), Section(words(100, 300), ("T", "Other")),
            title="Guide")
    c = chunk_document(d, ChunkingConfig(60, 0), approx_tokens)[0]
    assert embedding_text(c).startswith("Guide\nT > Deep\n")


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document(doc(Section("   ")), ChunkingConfig(), approx_tokens) == []


def test_pages_of_a_short_pdf_stay_separate() -> None:
    d = doc(Section("page one", page=1), Section("page two", page=2))
    chunks = chunk_document(d, ChunkingConfig(200, 20), approx_tokens)
    assert [(c.text, c.page) for c in chunks] == [("page one", 1), ("page two", 2)]
