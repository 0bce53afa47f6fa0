"""Explanations of traced answers: which sources and sentences an answer rests on, measured
on the prompt the model read as the trace recorded it, under the model that answered.

Everything comes from the trace: the prompt as sent, where each source's text sits in it,
the model's raw output, and the model's name and weights hash. Nothing is recomputed
against other data: a trace recorded without its sources' places, an answer a rail withheld,
a model no longer available or whose weights changed since, each get an error saying so;
a source since deleted from its collection is flagged, its recorded text still used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from alicerce.chains.select import sentence_spans
from alicerce.errors import AlicerceError, InputError
from alicerce.explain.ablation import Unit, attribute
from alicerce.explain.explanation import (
    RELIED_NATS,
    Explanation,
    Explanations,
    SentenceWeight,
    SourceWeight,
)
from alicerce.generate.base import Generator, Scorer
from alicerce.observe.trace_records import Trace
from alicerce.types import Message

if TYPE_CHECKING:
    from alicerce.platform import Alicerce

DEFAULT_BUDGET = 24


def span_attrs(t: Trace, name: str) -> dict[str, Any] | None:
    """The attributes of the trace's last span called `name`."""
    found = [s["attrs"] for s in t.spans if s["name"] == name]
    return found[-1] if found else None


class Explainer:
    def __init__(self, alc: Alicerce) -> None:
        self.alc = alc
        self.store = Explanations(alc.db_path)

    def explain(self, trace_id: str, *, budget: int = DEFAULT_BUDGET, seed: int = 0,
                refresh: bool = False,
                progress: Callable[[int, int], None] | None = None) -> Explanation:
        """The attribution of a traced answer to its sources' sentences (kept once made)."""
        t = self.alc.traces.get(trace_id)
        if not refresh and (kept := self.store.get(t.id, budget, seed)) is not None:
            return kept
        messages, located, answer = recorded(t)
        gen, identity = pinned_model(self.alc, t)
        if not isinstance(gen, Scorer):
            raise InputError(f"{gen.name} ({gen.backend}) cannot score an answer's likelihood",
                             hint="explanations need a llama.cpp or transformers model")
        scorer = gen
        units = _units(messages, located)
        started = time.perf_counter()
        ab = attribute(lambda m: scorer.score(m, answer), messages, units, budget, seed=seed,
                       parallel=int(getattr(scorer, "parallel", 1)), progress=progress)
        live = self.alc.store.hits([int(s["chunk_id"]) for s in located])
        cited = {int(c["chunk_id"]) for c in t.citations if "chunk_id" in c}
        sources = tuple(SourceWeight(
            int(s["n"]), str(s.get("title") or s["doc_key"]), str(s["doc_key"]),
            int(s["chunk_id"]), int(s["chunk_id"]) in cited, round(ab.sources.get(s["n"], 0.0), 4),
            ab.sources.get(s["n"], 0.0) >= RELIED_NATS, int(s["chunk_id"]) not in live)
            for s in located)
        ranked = sorted((SentenceWeight(u.source, u.text, round(w, 4))
                         for u, w in zip(units, ab.units, strict=True)),
                        key=lambda x: -x.score)
        notes = [f"source [{s.n}] ({s.doc_key}) is no longer in its collection: the text the "
                 "model read, as the trace recorded it, was used" for s in sources if s.gone]
        notes += [f"source [{x['n']}] has no place in the recorded prompt and was not "
                  "ablated" for x in located if "start" not in x]
        e = Explanation(t.id, time.time(), t.question, answer, str(t.lineage.get("model")),
                        identity, ab.method, budget, ab.calls,
                        round(time.perf_counter() - started, 3), round(ab.full, 4),
                        round(ab.empty, 4), None if ab.fit_r2 is None else round(ab.fit_r2, 4),
                        sources, tuple(ranked), tuple(notes))
        self.store.put(e, seed)
        return e

    def close(self) -> None:
        self.store.close()


def recorded(t: Trace) -> tuple[list[Message], list[dict[str, Any]], str]:
    """The prompt as sent, where its sources sit in it, and the model's raw output."""
    prompt, gen = span_attrs(t, "prompt"), span_attrs(t, "generate")
    if prompt is None or gen is None or "messages" not in prompt:
        raise InputError(f"trace {t.id} has no model answer from documents to explain "
                         "(it abstained before asking the model, failed, or is not a "
                         "RAG answer)", hint="explain an answer that cites sources")
    if "sources" not in prompt:
        raise InputError(f"trace {t.id} was recorded before explanations existed: where "
                         "its sources sit in the prompt is not known",
                         hint="ask the question again and explain the new trace")
    if gen.get("fusion"):
        raise InputError(f"trace {t.id} fused answers from one passage at a time "
                         f"({gen['fusion']}): explanations cover one-prompt answers",
                         hint="its generate span's scores say which passage won")
    output = gen.get("output")
    if not isinstance(output, str) or output.startswith("[withheld by "):
        raise InputError(f"the answer of trace {t.id} was blocked or redacted by a rail, "
                         "and the model's output is not kept: it cannot be explained",
                         hint=str(output or "no output recorded"))
    messages = [Message(m["role"], m["content"]) for m in prompt["messages"]]
    return messages, list(prompt["sources"]), output


def pinned_model(alc: Alicerce, t: Trace) -> tuple[Generator, str]:
    """The model that answered the trace (with its adapter), and its weights' identity:
    refused when it is gone or its weights changed since, rather than another model's."""
    model, pinned = t.lineage.get("model"), str(t.lineage.get("model_identity") or "")
    if not model:
        raise InputError(f"trace {t.id} does not name the model that answered")
    adapter = t.lineage.get("adapter") or None
    try:
        gen = alc.generator(str(model), adapter)
    except AlicerceError as exc:
        raise InputError(f"the model that answered trace {t.id}, {model}"
                         f"{' with ' + str(adapter) if adapter else ''}, is not available "
                         f"here: {exc.message}",
                         hint="explanations use the model that answered, or none") from None
    identity = alc.model_identity(gen)
    if pinned and identity != pinned:
        raise InputError(f"{model} is not the model that answered trace {t.id}: its weights "
                         f"are {identity[:19]}..., the answer's were {pinned[:19]}...",
                         hint="an explanation under other weights would explain another "
                              "model's answer")
    return gen, identity


def _units(messages: Sequence[Message], located: Sequence[dict[str, Any]]) -> list[Unit]:
    """The sentences of each located source, where they sit in the prompt."""
    out = []
    for s in located:
        if "start" not in s:
            continue
        m, start = int(s["message"]), int(s["start"])
        text = messages[m].content[start:int(s["end"])]
        out += [Unit(int(s["n"]), m, start + a, start + b, text[a:b])
                for a, b in sentence_spans(text)]
    return out
