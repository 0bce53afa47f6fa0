"""App, trace and feedback commands: deploy/list/show/diff/label/rollback apps, list and
show traces, give and export feedback."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from alicerce.apps.registry import AppVersion
from alicerce.chains.describe import plan_rows
from alicerce.cli.common import HomeOpt, JsonOpt, app, emit, open_home
from alicerce.cli.plans import print_plan
from alicerce.durations import duration_s
from alicerce.errors import InputError
from alicerce.observe.trace_records import FeedbackFilter, Trace

apps_app = typer.Typer(no_args_is_help=True,
                       help="Apps as versioned artifacts: deploy, list, show, diff, label.")
traces_app = typer.Typer(no_args_is_help=True, help="What each request did: list and show.")
feedback_app = typer.Typer(no_args_is_help=True, help="Rate answers; export rated ones.")
app.add_typer(apps_app, name="apps")
app.add_typer(traces_app, name="traces")
app.add_typer(feedback_app, name="feedback")

RefArg = Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@LABEL")]


def _row(v: AppVersion) -> dict[str, Any]:
    return {"name": v.name, "version": v.version, "ref": v.ref, "hash": v.hash,
            "labels": list(v.labels), "created_at": v.created_at, "created_by": v.created_by}


@apps_app.command()
def deploy(file: Annotated[Path, typer.Argument(help="App spec (YAML).")],
           label: Annotated[str | None, typer.Option(
               help="Also point this label at the version (e.g. production).")] = None,
           home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Validate the spec, pin its references, store it as a new version (same spec, same
    version). The first version of an app becomes production."""
    with open_home(home) as alc:
        version, created = alc.deploy_app(file)
        if label:
            version, _ = alc.label_app(version.ref, label)
    if as_json:
        emit(_row(version) | {"created": created})
        return
    state = "stored" if created else "unchanged, already"
    typer.echo(f"{version.ref} {state}  hash {version.hash[:12]}  labels: "
               f"{', '.join(version.labels) or '-'}")


@apps_app.command("list")
def list_(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every app's newest version and where its labels point."""
    with open_home(home) as alc:
        rows = []
        for v in alc.apps.all():
            labels = {lab: w.version for w in alc.apps.versions(v.name) for lab in w.labels}
            rows.append(_row(v) | {"label_targets": labels,
                                   "description": v.spec["description"]})
    if as_json:
        emit(rows)
        return
    if not rows:
        typer.echo("no apps deployed yet: alicerce apps deploy app.yaml")
    for r in rows:
        where = ", ".join(f"{k}=@{n}" for k, n in r["label_targets"].items())
        typer.echo(f"{r['name']:<24}@{r['version']:<4}{where:<30}{r['description']}")


@apps_app.command()
def show(ref: RefArg, plan: Annotated[bool, typer.Option(
             "--plan", help="The compiled plan (a chain app's steps, or a RAG app's chain "
             "written out): steps in run order, models, prompts, rails.")] = False,
         home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """One version: its resolved spec, labels, label history and feedback per version."""
    with open_home(home) as alc:
        if plan:
            v = alc.apps.get(ref)
            compiled = alc.chains.plan(v)
            if as_json:
                emit({"app": v.ref, "hash": v.hash, "steps": plan_rows(compiled.nodes),
                      "outputs": {k: t.type for k, t in compiled.output_types.items()}})
            else:
                typer.echo(f"{v.ref}  hash {v.hash[:12]}")
                print_plan(compiled)
            return
        v = alc.apps.get(ref)
        history = alc.apps.history(v.name)
        summary = alc.traces.summary(v.name)
    if as_json:
        emit(_row(v) | {"spec": v.spec, "source": v.source, "history": history,
                        "feedback": summary})
        return
    typer.echo(f"{v.ref}  hash {v.hash[:12]}  created {v.created_at} by {v.created_by}  "
               f"labels: {', '.join(v.labels) or '-'}")
    typer.echo(json.dumps(v.spec, ensure_ascii=False, indent=2))
    for h in history:
        typer.echo(f"  {h['at']}  {h['label']}: @{h['from'] or '-'} -> @{h['to']} by {h['by']}")
    for s in summary:
        typer.echo(f"  version {s['app_version']}: {s['traces']} traces, {s['up']} up, "
                   f"{s['down']} down, rating {s['mean_rating'] or '-'}, "
                   f"{s['errors']} errors")


@apps_app.command()
def diff(a: RefArg, b: RefArg, home: HomeOpt = None) -> None:
    """What changed between two versions' resolved specs."""
    with open_home(home) as alc:
        out = alc.apps.diff(a, b)
    typer.echo(out or "(no differences)", nl=bool(not out))


@apps_app.command()
def card(ref: RefArg,
         html_to: Annotated[Path | None, typer.Option(
             "--html", help="Also write the card as an HTML page.")] = None,
         md_to: Annotated[Path | None, typer.Option(
             "--md", help="Also write the card as Markdown.")] = None,
         vs: Annotated[str | None, typer.Option(
             "--diff", help="Print what changed since this other version's card.")] = None,
         home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The version's app card, generated from what was recorded: use case, models and
    their licences and hashes, prompts, collections, rails, the latest evaluation, red-team
    and drift results, known limits, who deployed it (docs/apps.md)."""
    from alicerce.apps import card as cards

    with open_home(home) as alc:
        c = cards.build(alc, ref)
        other = cards.build(alc, vs) if vs else None
    if html_to:
        html_to.write_text(cards.to_html(c), encoding="utf-8")
    if md_to:
        md_to.write_text(cards.markdown(c), encoding="utf-8")
    if as_json:
        emit(asdict(c))
    elif other is not None:
        typer.echo(cards.diff(other, c) or "(no differences)")
    else:
        typer.echo(cards.markdown(c))


@apps_app.command()
def label(ref: Annotated[str, typer.Argument(help="NAME@VERSION to point at")],
          name: Annotated[str, typer.Argument(help="Label: production, staging, ...")],
          home: HomeOpt = None) -> None:
    """Point a label at a version; a running server answers with it from the next request."""
    with open_home(home) as alc:
        v, old = alc.label_app(ref, name)
    typer.echo(f"{v.name}@{name}: @{old or '-'} -> @{v.version}")


@apps_app.command()
def rollback(name: Annotated[str, typer.Argument(help="App name")],
             label_: Annotated[str, typer.Option("--label", help="Label to move back")] =
             "production", home: HomeOpt = None) -> None:
    """Move a label back to the version it pointed at before (again to go further back)."""
    with open_home(home) as alc:
        v, left = alc.rollback_app(name, label_)
    typer.echo(f"{name}@{label_}: @{left} -> @{v.version}")


def _since(text: str | None) -> float | None:
    return None if text is None else duration_s(text, "--since")


@traces_app.command("list")
def traces_list(
    app_: Annotated[str | None, typer.Option("--app", help="Only this app.")] = None,
    since: Annotated[str | None, typer.Option(help="Only this recent: 30m, 1h, 7d.")] = None,
    feedback: Annotated[str, typer.Option(help="up | down | none | any")] = "any",
    status: Annotated[str | None, typer.Option(help="ok | error")] = None,
    version: Annotated[int | None, typer.Option(help="Only this app version.")] = None,
    limit: int = 50, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Newest traces first."""
    fb: FeedbackFilter = feedback  # type: ignore[assignment]  # checked by find()
    with open_home(home) as alc:
        rows = alc.traces.find(app=app_, since_s=_since(since), feedback=fb, status=status,
                               app_version=version, limit=limit)
    if as_json:
        emit([_brief(t) for t in rows])
        return
    if rows:
        typer.echo(f"{'id':<24}  {'when':<19}  {'app':<10} {'latency':>11}  question -> answer")
    for t in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.at))
        ver = f"@{t.app_version}" if t.app_version else ""
        what = t.error if t.status == "error" else t.answer
        typer.echo(f"{t.id}  {when}  {t.app}{ver:<5} {t.latency_ms or 0:>8.0f} ms  "
                   f"{t.question[:50]!r} -> {what[:60]!r}")


def _brief(t: Trace) -> dict[str, Any]:
    return {"id": t.id, "at": t.at, "app": t.app, "app_version": t.app_version,
            "caller": t.caller, "question": t.question, "answer": t.answer,
            "status": t.status, "error": t.error, "latency_ms": t.latency_ms}


@traces_app.command("show")
def traces_show(trace_id: Annotated[str, typer.Argument(help="Trace id")],
                home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every step of one request: inputs, outputs, timings, and the exact versions."""
    with open_home(home) as alc:
        t = alc.traces.get(trace_id)
        fbs = alc.traces.feedback_for(trace_id)
    if as_json:
        from dataclasses import asdict

        emit(asdict(t) | {"feedback": [asdict(f) for f in fbs]})
        return
    typer.echo(f"trace {t.id}  app {t.app}{'@' + str(t.app_version) if t.app_version else ''}"
               f"  by {t.caller}  {t.status}  {t.latency_ms or 0:.1f} ms")
    typer.echo(f"question: {t.question}")
    typer.echo(f"answer:   {t.error or t.answer}")
    typer.echo("lineage:  " + json.dumps(t.lineage, ensure_ascii=False))
    for s in t.spans:
        attrs = {k: v for k, v in s["attrs"].items() if k != "messages"}
        typer.echo(f"  {s['start_ms']:>9.1f} ms  {s['name']:<17}{s['ms']:>9.1f} ms  "
                   + json.dumps(attrs, ensure_ascii=False)[:300])
        messages = s["attrs"].get("messages")
        for m in messages if isinstance(messages, list) else []:  # a string when redacted
            typer.echo(f"      [{m['role']}] " + m["content"].replace("\n", "\n      "))
    for f in fbs:
        typer.echo(f"  feedback by {f.caller}: score {f.score:+d} rating {f.rating or '-'} "
                   f"{f.comment!r}")


@traces_app.command("prune")
def traces_prune(days: Annotated[float | None, typer.Option(
                     help="Drop older than this [default: trace_keep_days]")] = None,
                 keep: Annotated[int | None, typer.Option(
                     help="Keep the newest N [default: trace_keep_count]")] = None,
                 home: HomeOpt = None) -> None:
    """Apply the retention now (the server also does it as it writes)."""
    with open_home(home) as alc:
        n = alc.traces.prune(days, keep)
    typer.echo(f"{n} traces removed")


@feedback_app.command("give")
def give(trace_id: Annotated[str, typer.Argument(help="Trace id of the answer")],
         up: Annotated[bool, typer.Option("--up", help="Thumbs up.")] = False,
         down: Annotated[bool, typer.Option("--down", help="Thumbs down.")] = False,
         rating: Annotated[int | None, typer.Option(help="1 to 5.")] = None,
         comment: str = "",
         reference: Annotated[str, typer.Option(help="The answer that would be right.")] = "",
         home: HomeOpt = None) -> None:
    """Rate one answer."""
    if up and down:
        raise InputError("--up and --down together", hint="give one of them")
    with open_home(home) as alc:
        alc.traces.feedback(trace_id, 1 if up else -1 if down else 0, comment,
                            rating=rating, reference=reference)
    typer.echo(f"feedback recorded on {trace_id}")


@feedback_app.command("export")
def export(
    to: Annotated[Path, typer.Option("--to", help="JSONL file to write.")],
    app_: Annotated[str | None, typer.Option("--app", help="Only this app.")] = None,
    rating: Annotated[str, typer.Option(help="up | down | any (thumbs)")] = "any",
    min_stars: Annotated[int | None, typer.Option(help="Rating at least.")] = None,
    max_stars: Annotated[int | None, typer.Option(help="Rating at most.")] = None,
    home: HomeOpt = None) -> None:
    """Answers with feedback as evaluation rows (question, answer, sources, reference
    answer), each with the trace and feedback it came from."""
    fb: FeedbackFilter = rating  # type: ignore[assignment]  # checked by export()
    with open_home(home) as alc:
        n = alc.export_feedback(to, app=app_, rating=fb, min_stars=min_stars,
                                max_stars=max_stars)
    typer.echo(f"{n} rows written to {to}")
