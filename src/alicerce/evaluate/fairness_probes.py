"""Counterfactual variants of questions: the same question with only a protected attribute
changed (gender, region, age, disability, the perceived origin of a person's name), in
Portuguese and English, from the term and name lists in `fairness_terms.json`.

A question that mentions an attribute is rewritten for each other group of it, term by term
(Portuguese articles and possessives follow a swapped noun's gender). With `personas`, a
question that mentions none is asked as each group's persona ("Sou mulher. ..."), the first
group's being the reference. Every question also gets a control variant, a change that
should not matter, whose answer-change rate is the floor an attribute's is read against;
with personas it is of the same size as a persona swap (one word of a prefixed sentence).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from alicerce.errors import InputError
from alicerce.language import detect

PRONOUNS = frozenset({"ele", "ela", "eles", "elas", "dele", "dela", "deles", "delas"})
CONTROL = "control"


@dataclass(frozen=True)
class Variant:
    group: str
    question: str
    swaps: tuple[tuple[str, str], ...] = ()  # (term in the reference, term here)


@dataclass(frozen=True)
class Probe:
    """One question under one attribute: the reference wording and its variants."""

    row_id: str
    attribute: str  # an attribute, or "control"
    mode: str  # "mention", "persona" or "control"
    language: str
    reference_group: str
    reference: str
    variants: tuple[Variant, ...]


@cache
def terms() -> dict[str, Any]:
    text = resources.files("alicerce.evaluate").joinpath("fairness_terms.json").read_text(
        encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def attributes() -> tuple[str, ...]:
    return tuple(terms()["attributes"])


def parse_attributes(text: str | Sequence[str] | None) -> list[str]:
    known = attributes()
    chosen = [a.strip() for a in (text.split(",") if isinstance(text, str) else text or ())
              if a.strip()] or list(known)
    unknown = [a for a in chosen if a not in known]
    if unknown:
        raise InputError(f"unknown attribute(s): {', '.join(unknown)}",
                         hint="choose from " + ", ".join(known))
    return chosen


def _case(like: str, word: str) -> str:
    if like[:1].isupper() and word:
        return word[:1].upper() + word[1:]
    return word


def _word(term: str) -> str:
    return r"(?<![\w-])" + re.escape(term) + r"(?![\w-])"


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    text: str
    forms: tuple[str, ...]  # the term in each group's form
    group: int


class Lexicon:
    """One attribute's lists in one language."""

    def __init__(self, attribute: str, language: str) -> None:
        spec = terms()["attributes"][attribute][language]
        self.attribute, self.language = attribute, language
        self.groups: list[str] = spec["groups"]
        self.slots: list[list[str]] = spec.get("slots", [])
        self.names: dict[str, dict[str, list[str]]] = spec.get("names", {})
        self.ages: list[int] = spec.get("ages", [])
        self.age_patterns = [re.compile(p, re.IGNORECASE) for p in spec.get("age_patterns", [])]
        self.personas: list[str] = spec.get("personas", [])
        self.determiners = {d[g].lower(): (i, g) for i, d in
                            enumerate(spec.get("determiners", [])) for g in range(len(d))}
        self._det_rows: list[list[str]] = spec.get("determiners", [])
        index: dict[str, tuple[int, int]] = {}
        for s, slot in enumerate(self.slots):
            for g, term in enumerate(slot):
                if term:
                    index.setdefault(term.lower(), (s, g))
        self._index = index
        alternation = "|".join(_word(t) for t in sorted(index, key=len, reverse=True))
        self._terms = re.compile(alternation, re.IGNORECASE) if alternation else None
        self._name_index = {n: (g, sex, i) for g, name in enumerate(self.groups)
                            for sex, lst in self.names.get(name, {}).items()
                            for i, n in enumerate(lst)}
        names = "|".join(_word(n) for n in sorted(self._name_index, key=len, reverse=True))
        self._names = re.compile(names) if names else None  # names are matched as written
        # gender also swaps a person's name for the other sex's at the same place in the list
        self._sexed: dict[str, tuple[str, ...]] = {}
        if attribute == "gender":
            origin = terms()["attributes"]["name-origin"][language]["names"]
            for lists in origin.values():
                for m, f in zip(lists["m"], lists["f"], strict=False):
                    self._sexed.setdefault(m, (m, f))
                    self._sexed.setdefault(f, (m, f))
        sexed = "|".join(_word(n) for n in sorted(self._sexed, key=len, reverse=True))
        self._sexed_re = re.compile(sexed) if sexed else None

    # -- mentions ------------------------------------------------------------------------
    def _matches(self, text: str) -> list[_Match]:
        out = []
        if self._terms is not None:
            for m in self._terms.finditer(text):
                s, g = self._index[m.group(0).lower()]
                out.append(_Match(m.start(), m.end(), m.group(0), tuple(self.slots[s]), g))
        if self._sexed_re is not None:
            for m in self._sexed_re.finditer(text):
                forms = self._sexed[m.group(0)]
                out.append(_Match(m.start(), m.end(), m.group(0), forms,
                                  forms.index(m.group(0))))
        return sorted(out, key=lambda m: m.start)

    def _age_group(self, age: int) -> int | None:
        if len(self.ages) < 2:
            return None
        return 0 if age < 35 else (len(self.ages) - 1 if age >= 55 else None)

    def mention_variants(self, question: str) -> tuple[str, list[Variant]] | None:
        """The reference group and the rewrites for every other group, or None when the
        question does not mention this attribute."""
        if self._names is not None:
            return self._name_variants(question)
        matches = self._matches(question)
        ages = [(m, self._age_group(int(m.group(1)))) for p in self.age_patterns
                for m in p.finditer(question)]
        ages = [(m, g) for m, g in ages if g is not None]
        if not matches and not ages:
            return None
        groups = [m.group for m in matches] + [g for _, g in ages if g is not None]
        ref = max(set(groups), key=groups.count)
        out = []
        for target in range(len(self.groups)):
            if target == ref:
                continue
            text, swaps = self._rewrite(question, matches, target)
            for m, _ in ages:
                new = m.group(0).replace(m.group(1), str(self.ages[target]))
                text = text.replace(m.group(0), new)
                swaps.append((m.group(0), new))
            if text != question:
                out.append(Variant(self.groups[target], text, tuple(swaps)))
        return self.groups[ref], out

    def _rewrite(self, text: str, matches: list[_Match],
                 target: int) -> tuple[str, list[tuple[str, str]]]:
        parts, swaps, last = [], [], 0
        for m in matches:
            new = _case(m.text, m.forms[target])
            head = text[last:m.start]
            if m.text.lower() not in PRONOUNS and self._det_rows:
                head = self._determiner(head, target)
            if not new:  # the attribute's absence: drop the term and its space
                head = head.rstrip(" ")
            parts.append(head)
            parts.append(new)
            swaps.append((m.text, new))
            last = m.end
        parts.append(text[last:])
        out = re.sub(r" {2,}", " ", "".join(parts))
        if self.language == "en":
            out = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", out)
            out = re.sub(r"\b([Aa])n (?=[^aeiouAEIOU\W])", r"\1 ", out)
        return out, swaps

    def to_group(self, text: str, group: str) -> str:
        """`text` with every term of this attribute in `group`'s form."""
        return self._rewrite(text, self._matches(text), self.groups.index(group))[0]

    def _determiner(self, head: str, target: int) -> str:
        m = re.search(r"(\w+)(\s+)$", head)
        if not m or m.group(1).lower() not in self.determiners:
            return head
        row, _ = self.determiners[m.group(1).lower()]
        return head[:m.start(1)] + _case(m.group(1), self._det_rows[row][target]) + m.group(2)

    def _name_variants(self, question: str) -> tuple[str, list[Variant]] | None:
        assert self._names is not None
        found = list(self._names.finditer(question))
        if not found:
            return None
        ref = self._name_index[found[0].group(0)][0]
        out = []
        for target, name in enumerate(self.groups):
            if target == ref:
                continue
            text, swaps = question, []
            for m in found:
                _, sex, i = self._name_index[m.group(0)]
                pool = self.names[name][sex]
                new = pool[i % len(pool)]
                text = re.sub(_word(m.group(0)), new, text)
                swaps.append((m.group(0), new))
            out.append(Variant(name, text, tuple(swaps)))
        return self.groups[ref], out

    # -- personas ------------------------------------------------------------------------
    def persona_variants(self, question: str, seq: int) -> tuple[str, str, list[Variant]]:
        """(reference group, reference question, other groups' questions)."""
        asked = []
        for g, name in enumerate(self.groups):
            if self.names:
                sex = "mf"[seq % 2]
                pool = self.names[name][sex]
                intro = self.personas[0].replace("{name}", pool[seq % len(pool)])
            else:
                intro = self.personas[g]
            asked.append((name, f"{intro} {question}".strip(), intro))
        ref_group, ref_q, ref_intro = asked[0]
        return ref_group, ref_q, [Variant(g, q, ((ref_intro, intro),) if ref_intro else ())
                                  for g, q, intro in asked[1:]]


@cache
def lexicon(attribute: str, language: str) -> Lexicon:
    return Lexicon(attribute, language)


def probes(rows: Sequence[tuple[str, str]], attrs: Sequence[str], personas: bool = False
           ) -> tuple[list[Probe], dict[str, int]]:
    """The probes for (row id, question) pairs, and how many questions mention each
    attribute (personas do not count as mentions)."""
    out: list[Probe] = []
    mentioned = dict.fromkeys(attrs, 0)
    control = terms()["control"]["persona" if personas else "mention"]
    for seq, (row_id, question) in enumerate(rows):
        lang = detect(question)
        for attr in attrs:
            lex = lexicon(attr, lang)
            found = lex.mention_variants(question)
            if found is not None:
                mentioned[attr] += 1
                ref, variants = found
                if variants:
                    out.append(Probe(row_id, attr, "mention", lang, ref, question,
                                     tuple(variants)))
            elif personas:
                ref, ref_q, variants = lex.persona_variants(question, seq)
                out.append(Probe(row_id, attr, "persona", lang, ref, ref_q, tuple(variants)))
        before, after = (c.replace("{question}", question) for c in control[lang])
        out.append(Probe(row_id, CONTROL, CONTROL, lang, "as-written", before,
                         (Variant(CONTROL, after),)))
    return out, mentioned


def restore(answer: str, probe: Probe, variant: Variant) -> str:
    """A variant's answer with the attribute put back as the reference has it, so comparing
    the two answers does not count the swap itself (or its grammar) as a change."""
    if probe.mode == "mention" and probe.attribute in attributes():
        lex = lexicon(probe.attribute, probe.language)
        if not lex.names:
            answer = lex.to_group(answer, probe.reference_group)
    for original, new in variant.swaps:
        if original and new:
            answer = re.sub(_word(new), original, answer)
        elif new:  # a persona sentence the answer echoes
            answer = answer.replace(new, "")
    return answer
