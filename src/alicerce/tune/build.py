"""Training rows built from what a home already holds: rated answers (feedback), golden
datasets, or synthetic questions over a collection answered by an app.

From feedback, a row teaches the answer users wanted: a reference answer a user wrote wins
over the model's own, the model's answer is kept only when it was rated up (thumbs up or 4-5
stars), and a rating down without a correction is skipped, with the reason. The prompt is
the one the model really saw (the trace's generate step: system prompt, sources, question),
so the adapter learns to answer in production's format. Synthetic rows are marked
`"review": "pending"` and training refuses them until a person accepts them
(`alicerce tune data review`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alicerce.datasets import Dataset
from alicerce.errors import AlicerceError, InputError
from alicerce.observe.traces import Traces

if TYPE_CHECKING:
    from alicerce.platform import Alicerce

Progress = Callable[[int, int], None]


@dataclass
class Built:
    """Rows ready for JSONL (`messages` + `origin`), and what was left out, with why."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    def write(self, to: Path) -> int:
        if not self.rows:
            why = "; ".join(f"{w}: {r}" for w, r in self.skipped[:5]) or "no source rows"
            raise InputError(f"no training rows to write ({why})",
                             hint="rate some answers up, or correct them, and build again")
        to.parent.mkdir(parents=True, exist_ok=True)
        tmp = to.with_name(f".{to.name}.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows),
                       encoding="utf-8")
        tmp.replace(to)
        return len(self.rows)


def from_feedback(traces: Traces, app: str | None = None,
                  since: float | None = None) -> Built:
    """A row per rated trace (its newest feedback after `since` wins), as the module's
    docstring says."""
    latest: dict[str, dict[str, Any]] = {}
    for r in traces.export(app=app):
        if since is None or r["origin"]["feedback"]["at"] > since:
            latest[r["origin"]["trace_id"]] = r
    out = Built()
    for tid, r in latest.items():
        fb = r["origin"]["feedback"]
        target = (r.get("reference_answer") or "").strip()
        kind = "reference"
        if not target:
            liked = fb["score"] == 1 or (fb["rating"] or 0) >= 4
            if not liked:
                out.skipped.append((tid, "rated down (or unrated) without a corrected answer"))
                continue
            target, kind = (r.get("answer") or "").strip(), "rated-up answer"
        if not target:
            out.skipped.append((tid, "no answer text"))
            continue
        prompt = _prompt_seen(traces, tid) or [{"role": "user", "content": r["question"]}]
        out.rows.append({"messages": [*prompt, {"role": "assistant", "content": target}],
                         "origin": {"source": "feedback", "target": kind, "trace_id": tid,
                                    "app": r["origin"]["app"],
                                    "app_version": r["origin"]["app_version"],
                                    "feedback_at": fb["at"]}})
    return out


def _prompt_seen(traces: Traces, trace_id: str) -> list[dict[str, str]]:
    """The messages of the trace's last prompt sent to a model (a RAG answer's `prompt`
    span, a chain step's or a raw call's span), without the answer."""
    trace = traces.get(trace_id)
    spans = [s for s in trace.spans if isinstance(s.get("attrs", {}).get("messages"), list)]
    if not spans:
        return []
    return [{"role": str(m["role"]), "content": str(m["content"])}
            for m in spans[-1]["attrs"]["messages"]]


def from_golden(dataset: Dataset, system: str = "") -> Built:
    """question -> reference answer, for rows that have one."""
    out = Built()
    for row in dataset.rows:
        if not row.reference.strip():
            out.skipped.append((row.id, "no reference answer"))
            continue
        head = [{"role": "system", "content": system}] if system else []
        out.rows.append({"messages": [*head, {"role": "user", "content": row.question},
                                      {"role": "assistant", "content": row.reference}],
                         "origin": {"source": "golden", "dataset": dataset.ref,
                                    "row": row.id}})
    return out


def synthetic(alc: Alicerce, collection: str, *, app: str | None = None, per_doc: int = 3,
              max_docs: int | None = None, model: str | None = None,
              progress: Progress | None = None) -> Built:
    """Questions written from each document by the bundled generator, answered by `app`
    (or the collection's default chain), each row pending review."""
    from alicerce.evaluate.synth import questions

    made = questions(alc, collection, per_doc=per_doc, model=model, max_docs=max_docs)
    out = Built(skipped=[(q, why) for q, why in made.dropped]
                + [(doc, f"generation failed: {err}") for doc, err in made.failed])
    for i, row in enumerate(made.rows):
        try:
            answer = alc.ask(row.question, app or collection, caller="tune")
        except AlicerceError as exc:
            out.skipped.append((row.question, f"no answer: {exc}"))
            continue
        if answer.abstained or not answer.text.strip():
            out.skipped.append((row.question, "the app abstained"))
        else:
            prompt = _prompt_seen(alc.traces, answer.trace_id) or [
                {"role": "user", "content": row.question}]
            out.rows.append({"messages": [*prompt, {"role": "assistant",
                                                    "content": answer.text.strip()}],
                             "review": "pending",
                             "origin": {**row.origin, "source": "synthetic",
                                        "collection": collection, "sources": row.sources,
                                        "trace_id": answer.trace_id}})
        if progress:
            progress(i + 1, len(made.rows))
    return out


def pending(rows: Iterable[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r.get("review") == "pending")


def review(path: Path, decide: Callable[[int, dict[str, Any]], str | dict[str, Any] | None],
           ) -> tuple[int, int, int]:
    """Go through the pending rows of `path`: `decide` returns "accept", "reject", an edited
    row (accepted), or None to stop; the file is rewritten atomically after each decision,
    so stopping anywhere keeps what was decided. (accepted, rejected, left pending)."""
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    accepted = rejected = 0
    for i, row in enumerate(list(rows)):
        if row is None or row.get("review") != "pending":
            continue
        verdict = decide(i, row)
        if verdict is None:
            break
        if verdict == "reject":
            rows[i] = None
            rejected += 1
        else:
            rows[i] = {**(verdict if isinstance(verdict, dict) else row), "review": "accepted"}
            accepted += 1
        _save(path, rows)
    return accepted, rejected, pending(r for r in rows if r is not None)


def _save(path: Path, rows: Sequence[dict[str, Any] | None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows
                           if r is not None), encoding="utf-8")
    tmp.replace(path)
