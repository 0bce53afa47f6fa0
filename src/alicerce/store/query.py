"""Keyword query parsing for FTS5: words only, stopwords dropped, every term OR-ed.

Quoting each term makes any user input safe for the FTS5 query language.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)

_EN = """a an and are as at be by can do does for from how i in is it its me my of on or our
that the their there this to was we what when where which who why will with you your"""
_PT = """o os as um uma uns umas e é de do da dos das no na nos nas em ao aos à às por para pelo
pela com sem que se como qual quais quando onde quem eu meu minha ele ela eles elas isso isto
este esta esse essa ser são foi há tem ou mais mas não sim já"""
STOPWORDS = frozenset((_EN + " " + _PT).split())


def words(text: str) -> list[str]:
    """The lowercased words of `text`, in order."""
    return [w.lower() for w in _WORD.findall(text)]


def fts_query(text: str) -> str:
    """Turn free text into an FTS5 OR-query; empty string when nothing is searchable."""
    found = words(text)
    terms = [w for w in found if w not in STOPWORDS] or found
    seen: dict[str, None] = dict.fromkeys(terms)
    return " OR ".join(f'"{t}"' for t in seen)
