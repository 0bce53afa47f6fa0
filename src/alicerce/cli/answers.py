"""Answer commands: ask, chat, generate, models."""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from alicerce.chains.techniques import TECHNIQUES, load_examples
from alicerce.cli import progress
from alicerce.cli.common import (
    AppOpt,
    HomeOpt,
    JsonOpt,
    ModelOpt,
    app,
    emit,
    open_home,
    read_text,
    with_decoding,
)
from alicerce.cli.kb import parse_filters
from alicerce.errors import AlicerceError, InputError
from alicerce.platform import Alicerce
from alicerce.types import Answer, TokenLogprob

StreamOpt = Annotated[bool, typer.Option("--stream", help="Print the answer as it is written.")]
LiveOpt = Annotated[bool | None, typer.Option(
    "--stream/--no-stream", help="Print the answer as it is written [default: when the "
                                 "output is a terminal]")]
ModeOpt = Annotated[str | None, typer.Option(help="Retrieval: sparse | dense | hybrid | rrf")]
KOpt = Annotated[int | None, typer.Option("-k", help="Chunks to retrieve [default: answer_k]")]
FilterOpt = Annotated[list[str] | None, typer.Option(
    "--filter", help="key=value on metadata (repeat; same key = OR).")]
StepBackOpt = Annotated[bool, typer.Option(
    "--step-back", help="Also retrieve for a more general version of the question.")]
ExtractOpt = Annotated[str | None, typer.Option(
    help="quote | balanced | paraphrase [default: setting extractiveness]")]
PromptOpt = Annotated[str | None, typer.Option(
    help="Answer prompt: NAME, NAME@VERSION or NAME@LABEL [default: the app's, or rag-answer]")]


def _sources(answer: Answer) -> None:
    if answer.abstained or not answer.citations:
        return
    typer.echo("\nSources:")
    for c in answer.citations:
        where = " > ".join(p for p in (c.title, c.section) if p)
        page = f", p. {c.page}" if c.page else ""
        typer.echo(f"  [{c.n}] {where} ({c.source}{page})")


def _likelihood(tokens: tuple[TokenLogprob, ...]) -> None:
    typer.echo("\nToken likelihood:")
    for t in tokens:
        alts = ", ".join(f"{a!r} {math.exp(lp):.2f}" for a, lp in t.top if a != t.token)
        typer.echo(f"  {t.token!r:<20} {math.exp(t.logprob):.3f}" + (f"   ({alts})" if alts
                                                                         else ""))


def load_model(alc: Alicerce, app: str, model: str | None, quiet: bool) -> None:
    """Load the answering model first, under a spinner: the first use joins its parts and
    loads it (a minute or more on a laptop), which would otherwise look like a hang."""
    alc.app_collections(app)  # an unknown app or collection fails before the slow part
    spec = alc.app(app) if alc.apps.exists(app.split("@")[0]) else None
    name = model or (spec.spec["model"]["name"] if spec else alc.settings.generator)
    with progress.status(f"loading the model {name} (the first time joins and checks its "
                         "files)", not quiet):
        alc.generator(name)


def _print_answer(stream: Any, live: bool, as_json: bool) -> Answer:
    answer: Answer | None = None
    items = iter(stream)
    with progress.status("searching the documents and reading the sources",
                         not as_json) as shown:
        first = next(items)  # the wait before the first words: retrieval and the prompt
        pieces = 0
        while not live and not isinstance(first, Answer):  # nothing shown until the end
            pieces += 1
            shown.say(f"writing the answer ({pieces} pieces)")
            first = next(items)
    for item in itertools.chain([first], items):
        if isinstance(item, Answer):
            answer = item
        elif live and not as_json:
            typer.echo(item, nl=False)
            sys.stdout.flush()
    assert answer is not None
    if as_json:
        emit(asdict(answer))
        return answer
    typer.echo("\n" if live else answer.text, nl=not live)
    if live and answer.blocked:  # a rail that judges the whole answer replaced it
        typer.echo(f"[{answer.blocked} replaced the answer above:]\n{answer.text}")
    _sources(answer)
    if answer.logprobs:
        _likelihood(answer.logprobs)
    if answer.trace_id:
        typer.echo(f"(trace {answer.trace_id})", err=True)
    return answer


@app.command()
@with_decoding
def ask(
    question: Annotated[str, typer.Argument(help="The question, in Portuguese or English.")],
    collection: AppOpt = "default",
    model: ModelOpt = None,
    stream: LiveOpt = None,
    k: KOpt = None,
    mode: ModeOpt = None,
    filter_: FilterOpt = None,
    step_back: StepBackOpt = False,
    extractiveness: ExtractOpt = None,
    prompt: PromptOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    decoding: dict[str, Any] | None = None,
) -> None:
    """Answer from a collection's documents, citing them as [n]; abstain when they don't say."""
    with open_home(home) as alc:
        options = dict(model=model, params=decoding, k=k, mode=mode,
                       filters=parse_filters(filter_), step_back=step_back or None,
                       extractiveness=extractiveness, prompt=prompt)
        load_model(alc, collection, model, as_json)
        out = alc.ask_stream(question, collection, **options)
        _print_answer(out, sys.stdout.isatty() if stream is None else stream, as_json)


@app.command()
@with_decoding
def chat(
    collection: AppOpt = "default",
    conversation: Annotated[str | None, typer.Option(
        help="Conversation id to continue [default: a new one]")] = None,
    message: Annotated[str | None, typer.Option(
        help="Send one message and exit (for scripts) instead of the interactive prompt.")
    ] = None,
    model: ModelOpt = None,
    stream: StreamOpt = True,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    decoding: dict[str, Any] | None = None,
) -> None:
    """Multi-turn chat over a collection; follow-ups are rewritten into standalone questions."""
    with open_home(home) as alc:
        load_model(alc, collection, model, as_json)
        if message is not None:
            started, out = alc.chat(message, collection, conversation,
                                    stream=stream and not as_json, model=model, params=decoding)
            if not as_json:
                typer.echo(f"(conversation {started})", err=True)
            _print_answer(out, stream, as_json)
            return
        typer.echo("Ask a question; /new starts over, /exit (or Ctrl-D) leaves.", err=True)
        cid: str | None = conversation
        for line in sys.stdin if not sys.stdin.isatty() else iter(lambda: input("> "), None):
            text = line.strip()
            if text in ("/exit", "/quit"):
                break
            if text == "/new":
                cid = None
                continue
            if not text:
                continue
            try:
                cid, out = alc.chat(text, collection, cid, stream=stream, model=model,
                                    params=decoding)
                answer = _print_answer(out, stream, False)
                if answer.standalone_question and answer.standalone_question != text:
                    typer.echo(f"(searched for: {answer.standalone_question})", err=True)
            except AlicerceError as exc:  # one bad turn does not end the conversation
                typer.echo(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""),
                           err=True)
        if cid:
            typer.echo(f"(conversation {cid})", err=True)


@app.command()
@with_decoding
def generate(
    text: Annotated[str, typer.Argument(help="The input or task.")],
    technique: Annotated[str, typer.Option(help=" | ".join(TECHNIQUES))] = "zero-shot",
    instructions: Annotated[str, typer.Option(help="In-context instructions.")] = "",
    examples: Annotated[Path | None, typer.Option(
        help='JSONL of {"input", "output"} examples (k-shot).')] = None,
    k: Annotated[int, typer.Option(
        "-k", help="Pick the k examples most similar to the input (0 = use all).")] = 0,
    model: ModelOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    decoding: dict[str, Any] | None = None,
) -> None:
    """Generate with a prompting technique: zero/k-shot, chain of thought, least-to-most..."""
    rows = _read_jsonl(examples) if examples else []
    with open_home(home) as alc:
        out = alc.generate(text, technique=technique, model=model, params=decoding,
                           instructions=instructions, examples=load_examples(rows), k=k)
    typer.echo(f"(trace {out.trace_id})", err=True)
    if as_json:
        emit(asdict(out))
        return
    if out.reasoning:
        typer.echo(f"Reasoning:\n{out.reasoning}\n\nAnswer:")
    for q, a in out.steps:
        typer.echo(f"- {q}\n  {a}")
    for i, cand in enumerate(out.candidates):
        typer.echo(cand if len(out.candidates) == 1 else f"[{i + 1}] {cand}")
    if out.last.choices[0].logprobs:
        _likelihood(out.last.choices[0].logprobs)


models_app = typer.Typer(invoke_without_command=True,
                         help="Bundled and configured models; `models compare` on a dataset.")
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Bundled and configured models: size, context, languages, measured speed."""
    if ctx.invoked_subcommand is not None:
        return
    with open_home(home) as alc:
        rows = alc.models()
        default = alc.settings.generator
    if as_json:
        emit([{**asdict(r), "default": r.name == default} for r in rows])
        return
    typer.echo(f"{'name':<16}{'source':<9}{'MB':>7}{'context':>9}{'tok/s':>7}  "
               f"{'lang':<7}notes")
    for r in rows:
        mark = "*" if r.name == default else " "
        size = f"{r.size_mb:.0f}" if r.size_mb else "-"
        speed = f"{r.decode_tok_s:.0f}" if r.decode_tok_s else "-"
        typer.echo(f"{mark}{r.name:<15}{r.source:<9}{size:>7}{r.context or '-':>9}{speed:>7}  "
                   f"{r.languages or '-':<7}{'' if r.installed else 'NOT INSTALLED; '}{r.note}")
    typer.echo("* default (setting generator); tok/s: decode speed measured on 2 CPU threads")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = read_text(path).splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {i} is not JSON: {exc.msg}",
                                 hint="one JSON object per line") from None
    return rows
