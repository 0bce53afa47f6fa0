"""Loaders: one function per format, each turning a file into documents.

A loader raises IngestError for a file it cannot read at all; record formats (CSV, JSON,
JSONL) return the documents they could build plus one failure per bad record, so one bad
row does not lose the rest of the file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicerce.errors import IngestError
from alicerce.types import Document, IngestFailure, Section


@dataclass(frozen=True)
class RecordMapping:
    """How fields of CSV/JSON records map onto documents."""

    text_field: str = "text"
    id_field: str | None = None  # None: the "id" field when a record has one, else row number
    title_field: str | None = None  # None: the "title" field when present
    metadata_fields: tuple[str, ...] | None = None  # None: every other scalar field


Loaded = tuple[list[Document], list[IngestFailure]]
Loader = Callable[[bytes, str, RecordMapping], Loaded]

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HTML_MARK = "\x01"
_WESTERN = ("cp1252", "latin_1", "iso8859_15")


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 first (with or without BOM), then detect the encoding; refuse binary data."""
    if b"\x00" in data[:8192]:
        raise IngestError(f"{name}: looks like a binary file",
                          hint="only text formats, PDF and DOCX are supported")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise IngestError(f"{name}: cannot detect the text encoding",
                          hint="convert the file to UTF-8")
    # Short texts often tie between code pages; Portuguese and English legacy files are
    # overwhelmingly Windows-1252/Latin-1, so that wins a tie.
    for m in matches:
        if (m.encoding in _WESTERN and m.chaos <= best.chaos
                and m.coherence >= best.coherence):
            return str(m)
    return str(best)


def _sections_from_headings(lines: Iterable[str], match: Callable[[str], tuple[int, str] | None]
                            ) -> tuple[str, list[Section]]:
    """Group lines under their heading path; returns the first top heading as a title."""
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    sections: list[Section] = []
    title = ""

    def flush() -> None:
        text = "\n".join(buf).strip()
        if text:
            sections.append(Section(text=re.sub(r"\n{3,}", "\n\n", text),
                                    path=tuple(h for _, h in path)))
        buf.clear()

    for line in lines:
        found = match(line)
        if found is None:
            buf.append(line)
            continue
        flush()
        level, heading = found
        title = title or heading
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
    flush()
    return title, sections


def _md_matcher() -> Callable[[str], tuple[int, str] | None]:
    in_fence = False

    def match(line: str) -> tuple[int, str] | None:
        nonlocal in_fence
        if _FENCE.match(line):
            in_fence = not in_fence
            return None
        m = None if in_fence else _HEADING.match(line)
        return (len(m.group(1)), m.group(2)) if m else None

    return match


def _stem(name: str) -> str:
    return Path(name).stem.replace("_", " ").replace("-", " ").strip() or name


def _one(name: str, title: str, sections: list[Section]) -> Loaded:
    if not any(s.text.strip() for s in sections):
        raise IngestError(f"{name}: no text found", hint="the file is empty or only markup")
    return [Document(key=name, source=name, title=title or _stem(name),
                     sections=tuple(sections))], []


def load_text(data: bytes, name: str, _: RecordMapping) -> Loaded:
    text = decode_text(data, name)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    title = first[:120] if len(first) <= 120 else _stem(name)
    return _one(name, title, [Section(text=text.strip())])


def load_markdown(data: bytes, name: str, _: RecordMapping) -> Loaded:
    text = decode_text(data, name)
    if text.startswith("---\n"):  # YAML front matter carries no searchable prose
        end = text.find("\n---", 4)
        text = text[end + 4 :] if end > 0 else text
    title, sections = _sections_from_headings(text.splitlines(), _md_matcher())
    return _one(name, title, sections)


def load_html(data: bytes, name: str, _: RecordMapping) -> Loaded:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode_text(data, name))
    for node in tree.css("script,style,noscript,template,nav,svg"):
        node.decompose()
    page_title = tree.css_first("title")
    for node in tree.css("h1,h2,h3,h4,h5,h6"):
        node.replace_with(f"\n{_HTML_MARK}{(node.tag or 'h1')[1]} {node.text(strip=True)}\n")
    for node in tree.css("p,li,div,br,tr,pre,blockquote,section,article,table,dd,dt"):
        node.insert_before("\n")
        node.insert_after("\n")
    root = tree.body or tree.root
    raw = root.text(separator="") if root is not None else ""

    def match(line: str) -> tuple[int, str] | None:
        if line.startswith(_HTML_MARK) and len(line) > 2:
            return int(line[1]), line[3:].strip()
        return None

    lines = [re.sub(r"[ \t\xa0]+", " ", ln).strip() for ln in raw.splitlines()]
    title, sections = _sections_from_headings(lines, match)
    if page_title is not None and page_title.text(strip=True):
        title = page_title.text(strip=True)
    return _one(name, title, sections)


def load_pdf(data: bytes, name: str, _: RecordMapping) -> Loaded:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    # pypdf logs its own repairs ("incorrect startxref pointer") to the terminal; a file it
    # cannot read is reported once, by us, with a hint.
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise IngestError(f"{name}: PDF is encrypted", hint="remove the password and retry")
        pages = [(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except IngestError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise IngestError(f"{name}: not a readable PDF ({exc.__class__.__name__}: {exc})",
                          hint="the file is corrupt or truncated; re-export it") from exc
    sections = [Section(text=t.strip(), page=n) for n, t in pages if t.strip()]
    if not sections:
        raise IngestError(f"{name}: PDF has no extractable text",
                          hint="it is probably scanned images; run OCR on it first")
    return _one(name, str(meta_title).strip(), sections)


def load_docx(data: bytes, name: str, _: RecordMapping) -> Loaded:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise IngestError(f"{name}: not a readable DOCX file ({exc})",
                          hint="the file is corrupt, or not Word 2007+ (.doc is unsupported)"
                          ) from exc
    lines: list[str] = []
    for para in document.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        level = style.removeprefix("Heading ").strip()
        if style.startswith("Heading") and level.isdigit():
            lines.append(f"{_HTML_MARK}{min(int(level), 6)} {para.text.strip()}")
        elif style == "Title":
            lines.append(f"{_HTML_MARK}1 {para.text.strip()}")
        else:
            lines.append(para.text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))

    def match(line: str) -> tuple[int, str] | None:
        return (int(line[1]), line[3:]) if line.startswith(_HTML_MARK) else None

    title, sections = _sections_from_headings(lines, match)
    title = (document.core_properties.title or "").strip() or title
    return _one(name, title, sections)


def _record_doc(rec: dict[str, Any], i: int, name: str, m: RecordMapping) -> Document:
    if not isinstance(rec, dict):
        raise IngestError(f"{name} record {i}: not an object", hint="each record must be an object")
    text = rec.get(m.text_field)
    if text is None or not str(text).strip():
        fields = ", ".join(sorted(rec)) or "none"
        raise IngestError(
            f"{name} record {i}: missing or empty field {m.text_field!r}",
            hint=f"pass --text-field with one of the fields present ({fields})")
    if m.id_field and rec.get(m.id_field) in (None, ""):
        raise IngestError(f"{name} record {i}: missing id field {m.id_field!r}",
                          hint="every record needs an id, or leave out --id-field")
    id_field = m.id_field or ("id" if rec.get("id") not in (None, "") else None)
    key = str(rec[id_field]) if id_field else f"{name}#{i}"
    title_field = m.title_field or "title"
    title = str(rec.get(title_field) or "")
    if m.metadata_fields is None:
        skip = {m.text_field, id_field, title_field}
        meta = {k: v for k, v in rec.items()
                if k not in skip and isinstance(v, str | int | float | bool)}
    else:
        meta = {k: rec[k] for k in m.metadata_fields if k in rec}
    return Document(key=key, source=name, title=title, sections=(Section(text=str(text)),),
                    metadata=meta)


def _records(rows: Iterable[tuple[int, Any]], name: str, m: RecordMapping) -> Loaded:
    docs: list[Document] = []
    failures: list[IngestFailure] = []
    for i, rec in rows:
        try:
            docs.append(_record_doc(rec, i, name, m))
        except IngestError as exc:
            failures.append(IngestFailure(name, exc.message, exc.hint))
    if not docs and not failures:
        raise IngestError(f"{name}: no records", hint="the file holds no rows")
    return docs, failures


def load_csv(data: bytes, name: str, m: RecordMapping) -> Loaded:
    text = decode_text(data, name)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
    if rows and m.text_field not in rows[0]:
        cols = ", ".join(k for k in rows[0] if k)
        raise IngestError(f"{name}: no column {m.text_field!r}",
                          hint=f"pass --text-field with one of: {cols}")
    return _records(enumerate(rows), name, m)


def load_json(data: bytes, name: str, m: RecordMapping) -> Loaded:
    try:
        parsed = json.loads(decode_text(data, name))
    except json.JSONDecodeError as exc:
        raise IngestError(f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}",
                          hint="fix the syntax, or use .jsonl for one object per line") from exc
    if isinstance(parsed, dict):
        lists = [v for v in parsed.values() if isinstance(v, list)]
        parsed = lists[0] if len(lists) == 1 else [parsed]
    if not isinstance(parsed, list):
        raise IngestError(f"{name}: expected a list of objects",
                          hint="the top level must be a list or an object with one list")
    return _records(enumerate(parsed), name, m)


def load_jsonl(data: bytes, name: str, m: RecordMapping) -> Loaded:
    rows: list[tuple[int, Any]] = []
    failures: list[IngestFailure] = []
    for i, line in enumerate(decode_text(data, name).splitlines()):
        if not line.strip():
            continue
        try:
            rows.append((i, json.loads(line)))
        except json.JSONDecodeError as exc:
            failures.append(IngestFailure(name, f"line {i + 1}: invalid JSON ({exc.msg})",
                                          "fix or remove that line"))
    docs, more = _records(rows, name, m) if rows else ([], [])
    if not docs and not failures and not more:
        raise IngestError(f"{name}: no records", hint="the file holds no JSON lines")
    return docs, failures + more


LOADERS: dict[str, Loader] = {
    ".txt": load_text, ".text": load_text, ".md": load_markdown, ".markdown": load_markdown,
    ".html": load_html, ".htm": load_html, ".pdf": load_pdf, ".docx": load_docx,
    ".csv": load_csv, ".tsv": load_csv, ".json": load_json, ".jsonl": load_jsonl,
    ".ndjson": load_jsonl,
}


def load_file(path: Path, name: str, mapping: RecordMapping, max_bytes: int) -> Loaded:
    """Read and parse one file; raises IngestError with a hint when it cannot."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise IngestError(f"{name}: unsupported file type {path.suffix or '(none)'!r}",
                          hint="supported: " + " ".join(sorted(LOADERS)))
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise IngestError(f"{name}: file is {size / 2**20:.1f} MiB, over the limit "
                              f"of {max_bytes / 2**20:.1f} MiB", hint="raise max_file_mb")
        if size == 0:
            raise IngestError(f"{name}: empty file", hint="remove it or add content")
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{name}: cannot read file ({exc.strerror})",
                          hint="check that it exists and its permissions") from exc
    return loader(data, name, mapping)
