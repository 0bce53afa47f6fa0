"""`alicerce explain TRACE_ID`: which sources and sentences an answer rests on
(docs/responsible-ai.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from alicerce.cli.common import HomeOpt, JsonOpt, app, emit, open_home
from alicerce.cli.progress import Bar, status
from alicerce.evaluate.text import excerpt
from alicerce.explain.counterfactual import Counterfactual
from alicerce.explain.explanation import Explanation
from alicerce.explain.traced import DEFAULT_BUDGET

TOP = 5


@app.command("explain")
def explain(
    trace_id: Annotated[str, typer.Argument(help="The trace of the answer to explain.")],
    budget: Annotated[int, typer.Option(
        min=1, max=512, help="Most model calls to spend (each scores the answer under a "
                             "prompt with parts of the sources removed).")] = DEFAULT_BUDGET,
    seed: Annotated[int, typer.Option(help="Seed of the random ablations.")] = 0,
    refresh: Annotated[bool, typer.Option(
        help="Compute again instead of showing the kept explanation.")] = False,
    counterfactual: Annotated[str | None, typer.Option(
        help="Ask again with one change instead: \"troque 'X' por 'Y'\", \"sem a fonte 2\", "
             "\"modelo NAME\", \"prompt NAME@V\", \"pergunta: ...\" (or in English)")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Estimate how much each source and sentence the model read supports its answer; or,
    with --counterfactual, show the answer the same request gets with one change."""
    if counterfactual is not None:
        with open_home(home) as alc, status("asking again with the change"):
            cf = alc.counterfactual(trace_id, counterfactual)
        if as_json:
            emit(cf.as_dict())
        else:
            typer.echo(render_counterfactual(cf))
        return
    with open_home(home) as alc:
        e = alc.explain(trace_id, budget=budget, seed=seed, refresh=refresh,
                        progress=None if as_json else Bar("model calls"))
    if as_json:
        emit(e.as_dict())
    else:
        typer.echo(render(e))


def render(e: Explanation, top: int = TOP) -> str:
    lines = [f"Why this answer (trace {e.trace_id}, {e.model}, {e.method}, {e.calls} model "
             f"calls, {e.seconds:.1f} s)", f"Question: {e.question}",
             f"Answer: {' '.join(e.answer.split())}", "",
             f"Log-likelihood of the answer: {e.full_logprob:.1f} with the sources, "
             f"{e.empty_logprob:.1f} without them.", "Sources (the answer's loss without each):"]
    for s in e.sources:
        state = "relied on" if s.relied else "not relied on"
        lines.append(f"  [{s.n}] {s.title} ({s.doc_key}){' cited,' if s.cited else ''} "
                     f"{state}: {s.drop:+.1f}" + (" (no longer in the collection)"
                                                 if s.gone else ""))
    lines += ["", "The sentences it rests on most:"]
    lines += [f"  [{x.source}] {x.score:+.2f}  {excerpt(x.text, 140)}" for x in e.sentences[:top]]
    if e.unrelied:
        lines += ["", "Cited but not relied on: " + ", ".join(f"[{s.n}]" for s in e.unrelied)]
    lines += [f"note: {n}" for n in e.notes]
    return "\n".join(lines)


def render_counterfactual(cf: Counterfactual) -> str:
    """Both answers, then the differences: [-only in the first-] {+only in the new+}."""
    marks = {"equal": "{}", "delete": "[-{}-]", "insert": "{{+{}+}}"}
    diff = "".join(marks[s.op].format(s.text.strip()) + (" " if s.text.endswith(" ") else "")
                   for s in cf.diff)
    lines = [f"Change: {cf.change.label} (new trace {cf.new_trace_id}, of {cf.trace_id})",
             f"Question:     {cf.question}"]
    if cf.new_question != cf.question:
        lines.append(f"New question: {cf.new_question}")
    lines += [f"Answer:       {' '.join(cf.answer.split())}",
              f"New answer:   {' '.join(cf.new_answer.split())}", f"Differences:  {diff}"]
    lines += [f"note: {n}" for n in cf.notes]
    return "\n".join(lines)
