"""Stored evaluation datasets: add a file as a new version, list, show, export."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from alicerce import datasets
from alicerce.cli.common import HomeOpt, JsonOpt, app, emit, open_home
from alicerce.evaluate.dataset_registry import DatasetVersion

datasets_app = typer.Typer(no_args_is_help=True,
                           help="Stored, versioned evaluation datasets (golden sets).")
app.add_typer(datasets_app, name="datasets")


def _row(v: DatasetVersion) -> dict[str, object]:
    return {**asdict(v), "ref": v.ref}


@datasets_app.command("add")
def add(path: Annotated[Path, typer.Argument(help="JSONL/CSV, SQuAD .json, Pirá .csv or "
                                                   "BEIR folder.")],
        name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.")],
        note: Annotated[str, typer.Option(help="Why this version exists.")] = "",
        home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Store a file's rows as the next version of NAME (the same rows: the same version)."""
    ds = datasets.load(path)
    with open_home(home) as alc:
        v, created = alc.datasets.add(name, ds.rows, note=note or f"from {path.name}")
    if as_json:
        emit(_row(v) | {"created": created, "skipped": len(ds.problems)})
        return
    typer.echo(f"{v.ref}: {v.rows} rows ({'new version' if created else 'unchanged'}), "
               f"content {v.hash}" + (f", {len(ds.problems)} lines skipped"
                                      if ds.problems else ""))


@datasets_app.command("list")
def list_(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Each stored dataset's newest version."""
    with open_home(home) as alc:
        rows = alc.datasets.all()
    if as_json:
        emit([_row(v) for v in rows])
        return
    if not rows:
        typer.echo("no stored datasets: alicerce datasets add FILE --name NAME")
    for v in rows:
        typer.echo(f"{v.ref:<24}{v.rows:>7} rows  {v.hash}  {v.note}")


@datasets_app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME (newest) or NAME@N")],
         home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """A dataset's versions, and the first rows of the one named."""
    with open_home(home) as alc:
        v = alc.datasets.version(ref)
        versions = alc.datasets.versions(v.name)
        rows = alc.datasets.rows(v, 0, 20)
    if as_json:
        emit(_row(v) | {"versions": [_row(x) for x in versions],
                        "items": [asdict(r) for r in rows]})
        return
    for x in versions:
        typer.echo(f"{'*' if x.version == v.version else ' '} {x.ref:<22}{x.rows:>7} rows  "
                   f"{x.hash}  {x.created_by}  {x.note}")
    for r in rows:
        typer.echo(f"  {r.id:<20} {r.question[:60]}  -> {r.reference[:40]}")


@datasets_app.command("export")
def export(ref: Annotated[str, typer.Argument(help="NAME (newest) or NAME@N")],
           to: Annotated[Path, typer.Option(help="Where to write the rows (JSONL).")],
           home: HomeOpt = None) -> None:
    """Write a stored version's rows as JSONL (what `eval run --dataset FILE` reads)."""
    with open_home(home) as alc:
        ds = alc.datasets.get(ref)
    n = datasets.write_jsonl(ds.rows, to)
    typer.echo(f"{n} rows of {ref} written to {to}")
