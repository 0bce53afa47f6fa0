"""Knowledge-base commands: ingest, search, collections, versions, migrate."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from alicerce.cli import progress
from alicerce.cli.common import CollOpt, ExecutorOpt, HomeOpt, JsonOpt, app, emit, open_home
from alicerce.errors import InputError
from alicerce.types import IngestReport


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders, any mix of formats.")],
    collection: CollOpt = "default",
    sync: Annotated[bool, typer.Option(help="Remove documents whose files are gone.")] = False,
    text_field: Annotated[str | None, typer.Option(help="CSV/JSON field with the text.")] = None,
    id_field: Annotated[str | None, typer.Option(help="CSV/JSON field with the id.")] = None,
    title_field: Annotated[str | None, typer.Option(help="CSV/JSON field with the title.")
                           ] = None,
    metadata_fields: Annotated[str | None, typer.Option(
        help="Comma-separated CSV/JSON fields kept as metadata [default: all scalar fields]")
    ] = None,
    embedder: Annotated[str | None, typer.Option(
        help="e5-small | minilm | remote, for a new collection [default: setting embedder]")
    ] = None,
    chunk_tokens: Annotated[int | None, typer.Option(
        help="Chunk budget in tokens, for a new collection [default: setting chunk_tokens]")
    ] = None,
    chunk_overlap: Annotated[int | None, typer.Option(
        help="Overlap in tokens, for a new collection [default: setting chunk_overlap]")
    ] = None,
    redact_pii: Annotated[bool | None, typer.Option(
        "--redact-pii/--keep-pii",
        help="For a new collection: store chunk texts with personal data replaced (<CPF>, "
             "<EMAIL_ADDRESS>, ...)")] = None,
    executor: ExecutorOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or update documents in a collection; unchanged files cost nothing."""
    with open_home(home, executor=executor) as alc, \
            progress.status(f"ingesting into {collection}", not as_json) as shown:
        def show(report: IngestReport) -> None:
            done = report.added + report.updated + report.unchanged
            shown.say(f"ingesting into {collection}: {done} documents, "
                      f"{report.chunks_embedded} chunks embedded")

        report = alc.ingest(paths, collection, sync=sync, text_field=text_field,
                            id_field=id_field, title_field=title_field,
                            metadata_fields=metadata_fields, chunk_tokens=chunk_tokens,
                            chunk_overlap=chunk_overlap, redact_pii=redact_pii,
                            embedder=embedder,  # type: ignore[arg-type]
                            progress=show)
    if as_json:
        emit({**asdict(report), "ok": report.ok})
    else:
        typer.echo(f"{collection}: {report.added} added, {report.updated} updated, "
                   f"{report.unchanged} unchanged, {report.removed} removed; "
                   f"{report.chunks_embedded} chunks embedded, {report.chunks_reused} reused; "
                   f"version {report.version} ({report.seconds:.1f}s)")
        for f in report.failures:
            typer.echo(f"FAILED {f.path}: {f.reason}" + (f" -> {f.hint}" if f.hint else ""),
                       err=True)
        if report.failures:
            done = report.added + report.updated + report.unchanged
            typer.echo(f"{len(report.failures)} file(s) or record(s) failed; "
                       + ("the rest was ingested." if done else "nothing was ingested."),
                       err=True)
    raise typer.Exit(0 if report.ok else 1)


def parse_filters(items: list[str] | None) -> dict[str, str | list[str]]:
    filters: dict[str, str | list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"bad filter {item!r}", hint="write --filter key=value")
        prev = filters.get(key.strip())
        if prev is None:
            filters[key.strip()] = value.strip()
        else:
            filters[key.strip()] = [*(prev if isinstance(prev, list) else [prev]), value.strip()]
    return filters


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Question or keywords.")],
    collection: CollOpt = "default",
    mode: Annotated[str | None, typer.Option(help="sparse | dense | hybrid | rrf")] = None,
    alpha: Annotated[float | None, typer.Option(help="Dense weight in hybrid (0-1).")] = None,
    k: Annotated[int | None, typer.Option("-k", help="Number of results.")] = None,
    filter_: Annotated[list[str] | None, typer.Option(
        "--filter", help="key=value on metadata (repeat; same key = OR).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection: keywords (BM25), embeddings, or both fused."""
    with open_home(home) as alc:
        hits = alc.search(query, collection, mode=mode,  # type: ignore[arg-type]
                          k=k, alpha=alpha, filters=parse_filters(filter_))
    if as_json:
        emit([asdict(h) for h in hits])
        return
    if not hits:
        typer.echo("no results")
    for rank, h in enumerate(hits, 1):
        where = " > ".join(p for p in (h.title, h.section) if p)
        page = f" p.{h.page}" if h.page else ""
        typer.echo(f"[{rank}] {h.score:.3f}  {where}  ({h.source}{page})")
        snippet = " ".join(h.text.split())
        typer.echo(f"    {snippet[:240]}{'...' if len(snippet) > 240 else ''}")


@app.command()
def collections(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List collections: documents, chunks, version, embedder."""
    with open_home(home) as alc:
        rows = alc.collections()
    if as_json:
        emit([asdict(r) for r in rows])
        return
    if not rows:
        typer.echo("no collections yet: run `alicerce ingest PATH --collection NAME`")
    typer.echo(f"{'name':<20}{'documents':>10}{'chunks':>9}  {'version':<18}embedder")
    for r in rows:
        typer.echo(f"{r.name:<20}{r.documents:>10}{r.chunks:>9}  {r.version:<18}{r.embedder}")


@app.command()
def versions(collection: CollOpt = "default", home: HomeOpt = None,
             as_json: JsonOpt = False) -> None:
    """History of a collection's versions, with the embedder and chunking behind each."""
    with open_home(home) as alc:
        rows = alc.versions(collection)
    if as_json:
        emit(rows)
        return
    for r in rows:
        typer.echo(f"#{r['seq']:<4}{r['id']}  {r['created_at']}  {r['documents']} docs, "
                   f"{r['chunks']} chunks  {r['embedder']}  {r['chunking']}")


@app.command()
def migrate(
    to: Annotated[str, typer.Option(
        "--to", help="Target store: 'sqlite' (the home's file) or postgresql://user:pass@host/db")],
    source: Annotated[str | None, typer.Option(
        "--from", help="Source store, as --to [default: the home's, setting store]")] = None,
    collection: Annotated[list[str] | None, typer.Option(
        "--collection", "-c", help="Only this collection (repeat) [default: all]")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy collections, apps, prompts, keys, traces and jobs to another store, verified;
    rerun it to finish an interrupted copy."""
    with open_home(home) as alc, progress.status("migrating", not as_json) as shown:
        def show(name: str, done: int, total: int) -> None:
            shown.say(f"migrating {name}: {done}/{total} documents")

        done = alc.migrate(to, source, collection, show)
    if as_json:
        emit(asdict(done))
        return
    if not done.collections:
        typer.echo("no collections to copy")
    for c in done.collections:
        typer.echo(f"{c.name}: {c.copied} copied, {c.unchanged} unchanged, {c.removed} "
                   f"removed; {c.documents} documents, {c.chunks} chunks verified; "
                   f"version {c.version} ({c.seconds:.1f}s)")
    if done.tables:
        typer.echo(f"{len(done.tables)} registry tables copied and verified, "
                   f"{sum(t.rows for t in done.tables)} rows (apps, prompts, keys, traces, "
                   "jobs, runs)")
