"""Chain commands: `apps run` (one run, every step shown), `apps plan`, and `batch`
(run an app over a file: run, list, show, cancel, resume)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from alicerce.batch.jobs import BatchJob
from alicerce.batch.runner import check_paths, count_rows, runner
from alicerce.cli.apps import RefArg, apps_app
from alicerce.cli.common import ExecutorOpt, HomeOpt, JsonOpt, app, emit, open_home, read_text
from alicerce.cli.progress import Bar, status
from alicerce.errors import InputError

batch_app = typer.Typer(no_args_is_help=True,
                        help="Run a chain app over a JSONL/CSV file: run, list, show, cancel, "
                             "resume.")
app.add_typer(batch_app, name="batch")


def _inputs(text: str | None, file: Path | None) -> dict[str, Any]:
    if (text is None) == (file is None):
        raise InputError("give the inputs once: --input JSON or --input-file FILE",
                         hint="e.g. --input '{\"text\": \"...\"}'")
    raw = read_text(file) if file is not None else str(text)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"the inputs are not JSON: {exc.msg} at character {exc.pos}",
                         hint="e.g. --input '{\"text\": \"...\"}'") from None
    if not isinstance(data, dict):
        raise InputError("the inputs must be a JSON object of names to values",
                         hint="e.g. --input '{\"text\": \"...\"}'")
    return data


@apps_app.command("run")
def run(ref: RefArg,
        input_: Annotated[str | None, typer.Option("--input", help="Inputs as JSON.")] = None,
        input_file: Annotated[Path | None, typer.Option(help="Inputs from a JSON file.")] = None,
        home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Run a chain app once: its outputs, and every step with its time and output."""
    inputs = _inputs(input_, input_file)
    with open_home(home) as alc:
        with status(f"running {ref}", enabled=not as_json):
            result = alc.run_app(ref, inputs)
        alc.traces.flush()
        trace = alc.traces.get(result.trace_id)
    if as_json:
        emit({"outputs": result.outputs, "blocked": result.blocked or None,
              "trace_id": result.trace_id, "latency_ms": round(result.latency_ms, 1),
              "usage": {"prompt_tokens": result.usage.prompt_tokens,
                        "completion_tokens": result.usage.completion_tokens},
              "steps": [{"id": s["name"], "ms": s["ms"], **{
                  k: s["attrs"][k] for k in ("kind", "model", "outputs") if k in s["attrs"]}}
                  for s in trace.spans]})
        return
    for s in trace.spans:
        a = s["attrs"]
        model = f" {a['model']}" if a.get("model") else ""
        shown = json.dumps(a.get("outputs"), ensure_ascii=False)
        typer.echo(f"  {s['name']:<24} {a.get('kind', ''):<10}{model:<12} {s['ms']:>9.1f} ms  "
                   f"{shown[:160]}")
    if result.blocked:
        typer.echo(f"stopped by a guard: {result.blocked}")
    typer.echo(json.dumps(result.outputs, ensure_ascii=False, indent=2))
    typer.echo(f"trace {result.trace_id}  {result.latency_ms:.0f} ms  "
               f"{result.usage.prompt_tokens}+{result.usage.completion_tokens} tokens")


# -- batch ---------------------------------------------------------------------------------
def _report(job: BatchJob, as_json: bool) -> None:
    d = job.as_dict()
    if as_json:
        emit(d)
        return
    c = d["request_counts"]
    rate = f"  {d['rows_per_min']} rows/min" if d["rows_per_min"] else ""
    typer.echo(f"{job.id}  {job.ref}  {d['status']}  {c['completed']} ok, {c['failed']} "
               f"failed of {c['total']}{rate}  -> {job.output}")
    if job.error:
        typer.echo(f"  error: {job.error}")


@batch_app.command("run")
def batch_run(
    app_: Annotated[str, typer.Option("--app", help="Chain app (NAME, NAME@VERSION).")],
    input_: Annotated[Path, typer.Option("--input", help="JSONL or CSV rows of inputs.")],
    output: Annotated[Path, typer.Option(help="JSONL results, one line per row.")],
    concurrency: Annotated[int, typer.Option(help="Rows at once.", min=1, max=16)] = 1,
    executor: ExecutorOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Run an app over every row of a file; results stream to --output. A job stopped
    any way (Ctrl-C, kill -9) continues with `alicerce batch resume JOB`."""
    check_paths(input_, output)
    with open_home(home, executor=executor) as alc:
        version = alc.chains.version(app_)
        count_rows(input_)
        output = output.resolve()
        if output.exists():
            raise InputError(f"{output} exists", hint="pick a new --output, or continue the "
                                                      "job that wrote it: alicerce batch resume "
                                                      "JOB")
        job = alc.batches.create("local", version.name, version.version, input_.resolve(),
                                 output, concurrency)
        typer.echo(f"{job.id}: {version.ref} over {input_} -> {output}", err=True)
        job = runner(alc).run(job, Bar(f"{job.id}", enabled=not as_json))
    _report(job, as_json)
    if job.state == "failed":
        sys.exit(1)


@batch_app.command("resume")
def batch_resume(job_id: Annotated[str, typer.Argument(help="Job id")],
                 executor: ExecutorOpt = None, home: HomeOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Continue a job that was stopped: rows already in its output are not run again."""
    with open_home(home, executor=executor) as alc:
        job = alc.batches.get(job_id)
        if job.alive():
            raise InputError(f"{job.id} is running (process {job.pid})",
                             hint="wait for it, or cancel it first")
        if job.state == "done":
            raise InputError(f"{job.id} is done", hint=f"its results are in {job.output}")
        job = runner(alc).run(job, Bar(f"{job.id}", enabled=not as_json))
    _report(job, as_json)


@batch_app.command("list")
def batch_list(limit: int = 50, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Batch jobs, newest first."""
    with open_home(home) as alc:
        jobs = alc.batches.list(limit=limit)
    if as_json:
        emit([j.as_dict() for j in jobs])
        return
    if not jobs:
        typer.echo("no batch jobs yet: alicerce batch run --app APP --input FILE --output OUT")
    for j in jobs:
        _report(j, False)


@batch_app.command("show")
def batch_show(job_id: Annotated[str, typer.Argument(help="Job id")],
               home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """One job: state, counts, rows per minute, files."""
    with open_home(home) as alc:
        job = alc.batches.get(job_id)
    _report(job, as_json)


@batch_app.command("cancel")
def batch_cancel(job_id: Annotated[str, typer.Argument(help="Job id")],
                 home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a job after the rows it is running (its output keeps what is done)."""
    with open_home(home) as alc:
        job = alc.batches.cancel(job_id)
    _report(job, as_json)
