"""`alicerce tune data`: training rows from feedback, a golden dataset or a collection
(synthetic, reviewed by a person before training uses them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from alicerce.cli.common import HomeOpt, open_home
from alicerce.cli.progress import Bar
from alicerce.cli.tune import tune_app
from alicerce.datasets import load as load_dataset
from alicerce.errors import InputError
from alicerce.tune.build import Built, from_feedback, from_golden, pending, review, synthetic

data_app = typer.Typer(no_args_is_help=True,
                       help="Build and review training rows for `alicerce tune run`.")
tune_app.add_typer(data_app, name="data")


@data_app.command("build")
def build(
    to: Annotated[Path, typer.Option("--to", help="The JSONL file to write.")],
    feedback: Annotated[bool, typer.Option(
        "--from-feedback", help="Rated answers: users' corrections, and answers rated "
                                "up.")] = False,
    golden: Annotated[Path | None, typer.Option(
        "--golden", help="A golden dataset: each question with its reference answer.")] = None,
    synth: Annotated[bool, typer.Option(
        "--synth", help="Questions generated from --collection, answered by --app.")] = False,
    app: Annotated[str | None, typer.Option(help="Feedback: only this app's. Synthetic: the "
                                                 "app that answers [the collection].")] = None,
    collection: Annotated[str | None, typer.Option(help="Synthetic: the documents.")] = None,
    per_doc: Annotated[int, typer.Option(help="Synthetic: questions per document.")] = 3,
    max_docs: Annotated[int | None, typer.Option(help="Synthetic: at most this many "
                                                      "documents.")] = None,
    system: Annotated[str, typer.Option(help="Golden: a system prompt for every row.")] = "",
    home: HomeOpt = None) -> None:
    """Write training rows, and say what was left out and why."""
    if sum((feedback, golden is not None, synth)) != 1:
        raise InputError("choose one source", hint="--from-feedback, --golden FILE or --synth")
    with open_home(home) as alc:
        if feedback:
            built = from_feedback(alc.traces, app)
        elif golden is not None:
            built = from_golden(load_dataset(golden), system)
        else:
            if not collection:
                raise InputError("--synth needs --collection", hint="the documents to ask about")
            built = synthetic(alc, collection, app=app, per_doc=per_doc, max_docs=max_docs,
                              progress=Bar("answering"))
    n = built.write(to)
    _summary(built, n, to)


def _summary(built: Built, n: int, to: Path) -> None:
    typer.echo(f"{n} row(s) written to {to}")
    for what, why in built.skipped[:10]:
        typer.echo(f"  skipped {what[:60]!r}: {why}")
    if len(built.skipped) > 10:
        typer.echo(f"  ... and {len(built.skipped) - 10} more skipped")
    waiting = pending(built.rows)
    if waiting:
        typer.echo(f"{waiting} synthetic row(s) wait for review: alicerce tune data review {to}")


@data_app.command("review")
def review_(path: Annotated[Path, typer.Argument(help="A file `tune data build --synth` "
                                                      "wrote.")],
            accept_all: Annotated[bool, typer.Option(
                "--accept-all", help="Accept every pending row without asking.")] = False
            ) -> None:
    """Each synthetic row in turn: [a]ccept, [e]dit the answer, [r]eject or [q]uit (what
    was decided is saved at once)."""
    if not path.is_file():
        raise InputError(f"{path} not found", hint="give the file tune data build wrote")

    def decide(i: int, row: dict[str, Any]) -> str | dict[str, Any] | None:
        if accept_all:
            return "accept"
        msgs = row["messages"]
        question = next((m["content"] for m in reversed(msgs[:-1]) if m["role"] == "user"), "")
        typer.echo(f"\n#{i + 1} question: {question[-300:]}\nanswer: {msgs[-1]['content']}")
        choice = typer.prompt("[a]ccept, [e]dit, [r]eject, [q]uit", default="a").strip()[:1]
        if choice == "q":
            return None
        if choice == "r":
            return "reject"
        if choice == "e":
            fixed = typer.prompt("answer", default=msgs[-1]["content"])
            return {**row, "messages": [*msgs[:-1], {"role": "assistant", "content": fixed}],
                    "origin": {**row.get("origin", {}), "edited": True}}
        return "accept"

    accepted, rejected, left = review(path, decide)
    typer.echo(json.dumps({"accepted": accepted, "rejected": rejected, "pending": left}))
