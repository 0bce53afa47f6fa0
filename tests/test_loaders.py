from pathlib import Path

import docx
import pytest
from fpdf import FPDF

from alicerce.errors import IngestError
from alicerce.ingest.loaders import RecordMapping, load_file

M = RecordMapping()
MB = 2**20


def load(path: Path, mapping: RecordMapping = M, limit: int = MB):  # type: ignore[no-untyped-def]
    return load_file(path, path.name, mapping, limit)


def test_markdown_sections_and_title(tmp_path: Path) -> None:
    p = tmp_path / "a.md"
    p.write_text("---\nx: 1\n---\n# Guide\n\nintro\n\n## Part A\n\ntext a\n\n```\n# not a "
                 "heading\n```\n\n### Deep\n\ndeep text\n\n## Part B\n\ntext b\n")
    [doc], failures = load(p)
    assert not failures and doc.title == "Guide"
    paths = [s.path for s in doc.sections]
    assert paths == [("Guide",), ("Guide", "Part A"), ("Guide", "Part A", "Deep"),
                     ("Guide", "Part B")]
    assert "# not a heading" in doc.sections[1].text


def test_text_in_latin1_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "old.txt"
    p.write_bytes("Informações sobre férias e reembolso de despesas da região.\n".encode("cp1252"))
    [doc], _ = load(p)
    assert "Informações" in doc.text and "férias" in doc.text


def test_html_drops_scripts_and_nav_keeps_headings(tmp_path: Path) -> None:
    p = tmp_path / "p.html"
    p.write_text("<html><head><title>Page</title><script>var x</script></head><body><nav>menu"
                 "</nav><h1>Top</h1><p>Hello <b>bold</b> world</p><h2>Sub</h2><ul><li>one</li>"
                 "</ul></body></html>")
    [doc], _ = load(p)
    assert doc.title == "Page"
    assert "var x" not in doc.text and "menu" not in doc.text
    assert "Hello bold world" in doc.text
    assert doc.sections[-1].path == ("Top", "Sub") and "one" in doc.sections[-1].text


def test_pdf_keeps_pages(tmp_path: Path) -> None:
    pdf = FPDF()
    for n in (1, 2):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, f"Page {n} talks about topic number {n}.")
    p = tmp_path / "d.pdf"
    pdf.output(str(p))
    [doc], _ = load(p)
    assert [s.page for s in doc.sections] == [1, 2]
    assert "topic number 2" in doc.sections[1].text


def test_corrupt_pdf(tmp_path: Path) -> None:
    p = tmp_path / "bad.pdf"
    p.write_bytes(b"%PDF-1.4\n1 0 obj garbage\n")
    with pytest.raises(IngestError) as err:
        load(p)
    assert "bad.pdf" in err.value.message and err.value.hint


def test_docx_headings_and_tables(tmp_path: Path) -> None:
    d = docx.Document()
    d.add_heading("Handbook", 1)
    d.add_paragraph("Intro text.")
    d.add_heading("Leave", 2)
    d.add_paragraph("Thirty days.")
    t = d.add_table(rows=1, cols=2)
    t.rows[0].cells[0].text, t.rows[0].cells[1].text = "IT", "ext 4000"
    p = tmp_path / "h.docx"
    d.save(str(p))
    [doc], _ = load(p)
    assert doc.title == "Handbook"
    assert ("Handbook", "Leave") in [s.path for s in doc.sections]
    assert "IT | ext 4000" in doc.text


def test_docx_that_is_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "x.docx"
    p.write_text("plain text")
    with pytest.raises(IngestError, match="not a readable DOCX"):
        load(p)


def test_jsonl_mapping_and_bad_records(tmp_path: Path) -> None:
    p = tmp_path / "f.jsonl"
    p.write_text('{"id": 1, "q": "Title one", "body": "text one", "course": "ml", "n": 3}\n'
                 '{"id": 2, "q": "no body"}\n'
                 "not json\n"
                 '{"id": 3, "q": "Three", "body": "text three", "course": "de"}\n')
    m = RecordMapping(text_field="body", id_field="id", title_field="q",
                      metadata_fields=("course",))
    docs, failures = load(p, m)
    assert [d.key for d in docs] == ["1", "3"]
    assert docs[0].title == "Title one" and docs[0].metadata == {"course": "ml"}
    reasons = " ".join(f.reason for f in failures)
    assert "line 3: invalid JSON" in reasons and "missing or empty field 'body'" in reasons
    assert any("--text-field" in f.hint for f in failures)


def test_json_default_metadata_is_every_scalar(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    p.write_text('[{"id": "a", "text": "hello", "course": "x", "tags": ["no"], "n": 2}]')
    [doc], _ = load(p)
    assert doc.key == "a" and doc.metadata == {"course": "x", "n": 2}


def test_csv_with_semicolons(tmp_path: Path) -> None:
    p = tmp_path / "f.csv"
    p.write_text("id;text;area\n1;primeiro texto;rh\n2;segundo texto;ti\n")
    docs, _ = load(p)
    assert [d.metadata["area"] for d in docs] == ["rh", "ti"]


def test_csv_missing_text_column_lists_columns(tmp_path: Path) -> None:
    p = tmp_path / "f.csv"
    p.write_text("id,body\n1,x\n")
    with pytest.raises(IngestError) as err:
        load(p)
    assert "body" in err.value.hint


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("empty.txt", b"", "empty file"), ("bin.txt", b"\x00\x01\x02abc", "binary"),
     ("x.xyz", b"data", "unsupported file type"), ("big.txt", b"a" * 2048, "over the limit"),
     ("bad.json", b"[{", "invalid JSON")],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, name: str, content: bytes,
                                     message: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(IngestError, match=message) as err:
        load(p, limit=1024)
    assert err.value.hint


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secret.txt"
    p.write_text("x")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(IngestError, match="cannot read file"):
        load(p)
