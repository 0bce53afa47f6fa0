"""Prompt registry commands: list, show, create, label, diff, history."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from alicerce.cli.common import HomeOpt, JsonOpt, app, emit, open_home, read_text
from alicerce.prompts.template import PromptTemplate

prompts_app = typer.Typer(no_args_is_help=True,
                          help="Versioned prompt templates: list, show, create, label, diff.")
app.add_typer(prompts_app, name="prompts")


def _row(p: PromptTemplate) -> dict[str, object]:
    return {**asdict(p), "ref": p.ref, "hash": p.hash, "variables": list(p.variables)}


@prompts_app.command("list")
def list_(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every prompt's newest version and labels."""
    with open_home(home) as alc:
        rows = alc.prompts.all()
        labelled = {p.name: alc.prompts.versions(p.name) for p in rows}
    if as_json:
        emit([_row(p) for p in rows])
        return
    for p in rows:
        labels = ", ".join(f"{lab}=@{v.version}" for v in labelled[p.name] for lab in v.labels)
        typer.echo(f"{p.name:<26}@{p.version:<4}{labels:<28}{p.description}")


@prompts_app.command()
def show(ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@LABEL")],
         home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """A prompt version: its variables, labels, system and user templates."""
    with open_home(home) as alc:
        p = alc.prompts.get(ref)
    if as_json:
        emit(_row(p))
        return
    typer.echo(f"{p.ref}  hash {p.hash}  created {p.created_at}  labels: "
               f"{', '.join(p.labels) or '-'}")
    typer.echo(f"variables: {', '.join(p.variables) or '-'}")
    if p.description:
        typer.echo(f"description: {p.description}")
    if p.system:
        typer.echo(f"--- system\n{p.system}")
    typer.echo(f"--- template\n{p.template}")


@prompts_app.command()
def create(name: Annotated[str, typer.Argument(help="Prompt name (new or existing).")],
           file: Annotated[Path, typer.Option("--file", "-f", help="Jinja2 user template.")],
           system_file: Annotated[Path | None, typer.Option(
               help="Jinja2 system template.")] = None,
           description: str = "",
           label: Annotated[str | None, typer.Option(
               help="Also point this label at the new version.")] = None,
           home: HomeOpt = None) -> None:
    """Save a new immutable version (same content = same version)."""
    with open_home(home) as alc:
        p = alc.prompts.create(name, read_text(file),
                               read_text(system_file) if system_file else "",
                               description)
        if label:
            p = alc.label_prompt(p.ref, label)
    typer.echo(f"{p.ref}  hash {p.hash}  variables: {', '.join(p.variables) or '-'}"
               + (f"  labels: {', '.join(p.labels)}" if p.labels else ""))


@prompts_app.command()
def label(ref: Annotated[str, typer.Argument(help="NAME@VERSION to point at")],
          name: Annotated[str, typer.Argument(help="Label: production, staging, ...")],
          home: HomeOpt = None) -> None:
    """Point a label at a version; rolling back is labelling the older version."""
    with open_home(home) as alc:
        p = alc.label_prompt(ref, name)
    typer.echo(f"{name} -> {p.ref}")


@prompts_app.command()
def diff(a: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@LABEL")],
         b: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@LABEL")],
         home: HomeOpt = None) -> None:
    """Unified diff between two versions."""
    with open_home(home) as alc:
        text = alc.prompts.diff(a, b)
    typer.echo(text.rstrip() or "identical")


@prompts_app.command()
def history(name: str, home: HomeOpt = None) -> None:
    """Versions and every label move, oldest first."""
    with open_home(home) as alc:
        versions = alc.prompts.versions(name)
        moves = alc.prompts.history(name)
    for v in versions:
        typer.echo(f"@{v.version:<4}{v.hash}  {v.created_at}  {v.description}")
    for lab, old, new, at in moves:
        typer.echo(f"{at}  {lab}: {'@' + str(old) if old else '-'} -> @{new}")
