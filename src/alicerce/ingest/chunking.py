"""Structure-aware recursive chunking to a token budget with overlap.

Sections (headings) come from the loaders; inside a section the text is split at the
coarsest boundary that fits (paragraphs, then lines, then sentences, then words) and the
pieces are packed greedily up to the budget, each new chunk repeating the tail of the
previous one up to `overlap` tokens. A document that fits the budget stays one chunk, except
that pages are never merged, so every chunk of a PDF can cite its page.
Written by hand because the splitters in LangChain/LlamaIndex would pull in their whole
framework for ~100 lines, and they cannot carry our section paths and pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from alicerce.types import Chunk, Document, Section

TokenCounter = Callable[[str], int]

_SPLITTERS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?…;:])\s+"),
    re.compile(r"\s+"),
)


@dataclass(frozen=True)
class ChunkingConfig:
    tokens: int = 200
    overlap: int = 32
    redact_pii: bool = False  # chunk texts stored with personal data replaced (<CPF>, ...)

    def as_dict(self) -> dict[str, int | str | bool]:
        out: dict[str, int | str | bool] = {"method": "recursive-v1", "tokens": self.tokens,
                                            "overlap": self.overlap}
        if self.redact_pii:  # only when on, so earlier collections keep their identity
            out["redact_pii"] = True
        return out


def _split(text: str, budget: int, count: TokenCounter, level: int = 0) -> list[str]:
    """Split `text` into pieces of at most `budget` tokens at the coarsest possible boundary."""
    text = text.strip()
    if not text:
        return []
    if count(text) <= budget:
        return [text]
    if level >= len(_SPLITTERS):
        return _hard_split(text, budget, count)
    parts = [p for p in _SPLITTERS[level].split(text) if p.strip()]
    if len(parts) == 1:
        return _split(text, budget, count, level + 1)
    out: list[str] = []
    for part in parts:
        out.extend(_split(part, budget, count, level + 1))
    return out


def _hard_split(text: str, budget: int, count: TokenCounter) -> list[str]:
    """Last resort for a single over-long word (URLs, base64): cut by characters."""
    step = max(1, len(text) * budget // max(count(text), 1))
    return [text[i : i + step] for i in range(0, len(text), step)]


def _pack(pieces: list[str], budget: int, overlap: int, count: TokenCounter) -> list[str]:
    """Greedy packing with a token overlap carried from the end of the previous chunk."""
    sizes = [count(p) for p in pieces]
    chunks: list[str] = []
    cur: list[int] = []
    cur_tokens = 0
    for i, size in enumerate(sizes):
        if cur and cur_tokens + size > budget:
            chunks.append(" ".join(pieces[j] for j in cur))
            carry: list[int] = []
            carried = 0
            for j in reversed(cur):
                if carried + sizes[j] > overlap or carried + sizes[j] + size > budget:
                    break
                carry.insert(0, j)
                carried += sizes[j]
            cur, cur_tokens = carry, carried
        cur.append(i)
        cur_tokens += size
    if cur:
        chunks.append(" ".join(pieces[j] for j in cur))
    return chunks


def chunk_document(doc: Document, cfg: ChunkingConfig, count: TokenCounter) -> list[Chunk]:
    """Chunks of `doc` in reading order; each keeps title, section path, page and source."""
    whole = doc.text.strip()
    if not whole:
        return []
    total = count(whole)
    paged = any(s.page is not None for s in doc.sections)
    if total <= cfg.tokens and not (paged and len(doc.sections) > 1):
        first = doc.sections[0]
        name = _section_name(doc, first) if len(doc.sections) == 1 else ""
        return [_make(doc, 0, whole, name, first.page, total)]
    chunks: list[Chunk] = []
    for section in doc.sections:
        pieces = _split(section.text, cfg.tokens, count)
        for text in _pack(pieces, cfg.tokens, cfg.overlap, count):
            chunks.append(_make(doc, len(chunks), text, _section_name(doc, section),
                                section.page, count(text)))
    return chunks


def _section_name(doc: Document, section: Section) -> str:
    """Heading path below the title (a top heading equal to the title is not repeated)."""
    path = section.path[1:] if section.path[:1] == (doc.title,) else section.path
    return " > ".join(path)


def _make(doc: Document, ordinal: int, text: str, section: str, page: int | None,
          tokens: int) -> Chunk:
    return Chunk(doc_key=doc.key, ordinal=ordinal, text=text, title=doc.title, section=section,
                 page=page, source=doc.source, tokens=tokens, metadata=doc.metadata)


def embedding_text(chunk: Chunk) -> str:
    """What the embedder sees: title and section give a short chunk its context."""
    head = [p for p in (chunk.title, chunk.section) if p and p not in chunk.text[:200]]
    return "\n".join([*head, chunk.text])
