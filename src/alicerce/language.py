"""Which language a question is in (Portuguese or English), to answer in the same one.

Counting function words that only one of the two languages uses is enough for questions,
and needs no model; Portuguese diacritics tip close calls. Undecided text gets `default`.
"""

from __future__ import annotations

import re

Language = str  # "pt" | "en"

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_PT_WORDS = """o os um uma uns umas é do da dos das no na nos nas em ao aos à às por para
pelo pela pelos pelas com sem que não são está estão esta este essa esse isso isto qual quais
quando onde quem como posso pode podem devo preciso tenho tem têm meu minha meus minhas seu sua
você vocês há foi ser ter fazer sobre até após também muito mais ou"""
_EN_WORDS = """the is are was were be been what which who whom when where why how do does
did can could should would will shall may might must of to in on for with without and not my
your you i it its this that these those there their they we our an any from about after
also very more or have has had get"""
_PT, _EN = frozenset(_PT_WORDS.split()), frozenset(_EN_WORDS.split())
FUNCTION_WORDS = _PT | _EN  # the words that tell the two languages apart
_DIACRITICS = re.compile(r"[ãõçáéíóúâêôà]", re.IGNORECASE)


def detect(text: str, default: Language = "pt") -> Language:
    words = [w.lower() for w in _WORD.findall(text)]
    pt = sum(w in _PT for w in words) + 2 * len(_DIACRITICS.findall(text))
    en = sum(w in _EN for w in words)
    if pt == en:
        return default
    return "pt" if pt > en else "en"
