"""Counterfactual re-runs: a traced request asked again with one stated change, both answers
side by side with their differences marked, the new request recorded as a trace linked to
the first.

The change, in words (Portuguese or English):
- `troque 'gerente' por 'estagiária'` / `replace 'X' with 'Y'`: the question edited;
- `pergunta: ...` / `question: ...`: another question;
- `sem a fonte 2` / `without source 2`: the recorded prompt with that source's text removed,
  answered again by the same model with the same decoding (no new retrieval);
- `prompt rag-answer@2`, `modelo qwen-0.5b` / `model qwen-0.5b`: another prompt version or
  model for the same request.

A re-run that retrieves again (question, prompt, model) says when the collection changed
since the first answer, since part of the difference may come from that.
"""

from __future__ import annotations

import difflib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from alicerce.errors import InputError
from alicerce.explain.ablation import Unit, ablate
from alicerce.explain.traced import pinned_model, recorded, span_attrs
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import Context
from alicerce.guard.rails import Rails
from alicerce.language import detect
from alicerce.observe.trace_records import Trace
from alicerce.store.db import connect, transaction

if TYPE_CHECKING:
    from alicerce.platform import Alicerce

SCHEMA = """
CREATE TABLE IF NOT EXISTS counterfactuals (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    new_trace_id TEXT NOT NULL,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS counterfactuals_trace ON counterfactuals (trace_id, at)
"""
_Q = "['\"\u2018\u2019\u201c\u201d\u00ab\u00bb]"  # straight, curly and angle quotes
_FORMS = [
    ("replace", re.compile(rf"^(?:troque|substitua|replace|change)\s+{_Q}(.+?){_Q}\s+"
                           rf"(?:por|with|to|by)\s+{_Q}(.*?){_Q}\s*$", re.I | re.S)),
    ("question", re.compile(r"^(?:pergunta|question)\s*:\s*(.+)$", re.I | re.S)),
    ("without_source", re.compile(r"^(?:sem a fonte|sem fonte|without source|remove "
                                  r"source)\s*\[?(\d{1,3})\]?\s*$", re.I)),
    ("prompt", re.compile(r"^prompt\s+(\S+)$", re.I)),
    ("model", re.compile(r"^(?:modelo|model)\s+(\S+)$", re.I)),
]
FORMS_HINT = ("write one of: troque 'X' por 'Y' (replace 'X' with 'Y'); pergunta: ... "
              "(question: ...); sem a fonte N (without source N); prompt NAME@V; "
              "modelo NAME (model NAME)")


@dataclass(frozen=True)
class Change:
    kind: str  # replace, question, without_source, prompt, model
    old: str = ""
    new: str = ""

    @property
    def label(self) -> str:
        return {"replace": f"'{self.old}' → '{self.new}'", "question": f"question: {self.new}",
                "without_source": f"without source [{self.new}]",
                "prompt": f"prompt {self.new}", "model": f"model {self.new}"}[self.kind]


def parse_change(text: str) -> Change:
    text = text.strip()[:2000]
    for kind, form in _FORMS:
        m = form.match(text)
        if m:
            if kind == "replace":
                return Change(kind, m.group(1), m.group(2))
            return Change(kind, "", m.group(1).strip())
    raise InputError(f"cannot read the change {text[:80]!r}", hint=FORMS_HINT)


@dataclass(frozen=True)
class Segment:
    op: str  # equal, insert (only in the new answer), delete (only in the first)
    text: str


@dataclass(frozen=True)
class Counterfactual:
    id: str
    at: float
    trace_id: str
    new_trace_id: str
    change: Change
    question: str
    new_question: str
    answer: str
    new_answer: str
    diff: tuple[Segment, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counterfactual:
        return cls(**{**d, "change": Change(**d["change"]),
                      "diff": tuple(Segment(**s) for s in d["diff"]),
                      "notes": tuple(d.get("notes", ()))})


def word_diff(a: str, b: str) -> tuple[Segment, ...]:
    """The answers' differences word by word (with their spacing)."""
    wa, wb = re.findall(r"\S+\s*", a), re.findall(r"\S+\s*", b)
    out: list[Segment] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op in ("equal", "delete", "replace") and i2 > i1:
            out.append(Segment("equal" if op == "equal" else "delete", "".join(wa[i1:i2])))
        if op in ("insert", "replace") and j2 > j1:
            out.append(Segment("insert", "".join(wb[j1:j2])))
    return tuple(out)


class Counterfactuals:
    def __init__(self, alc: Alicerce) -> None:
        self.alc = alc
        self._db = connect(alc.db_path, SCHEMA)

    def run(self, trace_id: str, change: Change, caller: str = "local") -> Counterfactual:
        t = self.alc.traces.get(trace_id)
        if not t.question or t.status != "ok":
            raise InputError(f"trace {t.id} has no answered question to ask again",
                             hint="choose a trace of an answer")
        notes: list[str] = []
        if change.kind == "without_source":
            question, answer, new_id = t.question, *self._without(t, int(change.new), caller,
                                                                   notes)
        else:
            question, answer, new_id = self._again(t, change, caller, notes)
        cf = Counterfactual("cf-" + secrets.token_hex(6), time.time(), t.id, new_id, change,
                            t.question, question, t.answer, answer, word_diff(t.answer, answer),
                            tuple(notes))
        with transaction(self._db) as db:
            db.execute("INSERT INTO counterfactuals VALUES (?, ?, ?, ?, ?)",
                       (cf.id, cf.trace_id, cf.new_trace_id, cf.at,
                        json.dumps(cf.as_dict(), ensure_ascii=False)))
        return cf

    def of(self, trace_id: str) -> list[dict[str, Any]]:
        """The counterfactuals asked of a trace, or that a trace answers, newest first
        (JSON, as the API returns them)."""
        rows = self._db.execute("SELECT body FROM counterfactuals WHERE trace_id=? OR "
                                "new_trace_id=? ORDER BY at DESC LIMIT 50",
                                (trace_id, trace_id)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def _again(self, t: Trace, change: Change, caller: str,
               notes: list[str]) -> tuple[str, str, str]:
        """The request asked again through the app at its recorded version."""
        question, options = t.question, {}
        if change.kind == "replace":
            if change.old not in question:
                raise InputError(f"{change.old!r} is not in the question {question[:120]!r}",
                                 hint="quote a part of the question as it was asked")
            question = question.replace(change.old, change.new)
        elif change.kind == "question":
            question = change.new
        elif change.kind == "prompt":
            options["prompt"] = change.new
        elif change.kind == "model":
            options["model"] = change.new
        if t.lineage.get("model") and "model" not in options:
            options["model"] = t.lineage["model"]
        ref = f"{t.app}@{t.app_version}" if t.app_version else t.app
        answer = self.alc.ask(question, ref, caller=caller, **options)
        before = t.lineage.get("collection")
        now = answer.versions.get("collection")  # the new trace's lineage
        if before and now and before != now:
            notes.append(f"the collection changed since the first answer ({before} → {now}): "
                         "part of the difference may come from that")
        return question, answer.text, answer.trace_id

    def _without(self, t: Trace, n: int, caller: str, notes: list[str]) -> tuple[str, str]:
        """The recorded prompt without source n's text, answered by the same model with
        the same decoding, through the app's output rails (all but grounding, which would
        need the sources again)."""
        messages, located, _ = recorded(t)
        place = next((s for s in located if int(s["n"]) == n and "start" in s), None)
        if place is None:
            raise InputError(f"trace {t.id} has no source [{n}] in its prompt",
                             hint=f"its sources are {[int(s['n']) for s in located]}")
        unit = Unit(n, int(place["message"]), int(place["start"]), int(place["end"]), "")
        prompt = ablate(messages, [unit], [False])
        gen_span = span_attrs(t, "generate") or {}
        params = DecodingParams.build(**(gen_span.get("params") or {}))
        gen, _ = pinned_model(self.alc, t)
        done = gen.complete(prompt, params)
        version = self.alc.app(f"{t.app}@{t.app_version}") if t.app_version else None
        rails = Rails("output", [r for r in self.alc.guards(version).output.rails
                                 if r.guard.name != "grounding"])
        out = rails.run(done.text.strip(), Context(question=t.question,
                                                   language=detect(t.question),
                                                   canary=self.alc.canary))
        text = "" if out.blocked else out.text
        if out.blocked:
            notes.append(f"the new answer was blocked by the output rail {out.blocked.rail}")
        spans = [{"name": "prompt", "start_ms": 0.0, "ms": 0.0, "attrs": {
                     "messages": [{"role": m.role, "content": m.content} for m in prompt],
                     "counterfactual_of": t.id, "removed_source": n}},
                 {"name": "generate", "start_ms": 0.0, "ms": done.timings.get("total_ms", 0.0),
                  "attrs": {"model": gen.name, "params": params.as_dict(), "output": text}}]
        new_id = self.alc.traces.record(
            t.app, caller, t.question, app_version=t.app_version, spans=spans,
            lineage={**t.lineage, "counterfactual_of": t.id},
            answer={"answer": text, "abstained": False, "citations": [], "versions": {},
                    "usage": {"prompt_tokens": done.usage.prompt_tokens,
                              "completion_tokens": done.usage.completion_tokens},
                    "timings": {}}, origin="counterfactual")
        self.alc.traces.flush()
        return text, new_id

    def close(self) -> None:
        self._db.close()
