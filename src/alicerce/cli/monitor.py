"""`alicerce drift` (skew and drift of an app's traffic, reports, history) and `alicerce
monitor` (continuous evaluation of live traces, the review queue)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alicerce.cli.common import HomeOpt, JsonOpt, app, emit, open_home
from alicerce.core.governance import ReviewDecision
from alicerce.observe.drift_report import html as drift_html
from alicerce.observe.drift_report import text as drift_text


@app.command()
def drift(
    app_ref: Annotated[str, typer.Option(
        "--app", "-a", "--collection", "-c", help="The app (or bare collection) whose "
                                                  "traffic to check.")],
    baseline: Annotated[str, typer.Option(
        help="dataset:PATH (skew: an eval dataset against production) or window:7d (drift: "
             "the traces of the 7 days before the current window).")] = "window:7d",
    window: Annotated[str, typer.Option(help="The current window: the last 24h, 30m, 7d.")
                      ] = "24h",
    side: Annotated[str, typer.Option(help="input, output, or input,output.")
                    ] = "input,output",
    sample: Annotated[int, typer.Option(help="Texts per side embedded for the meaning and "
                                             "topic tests (a seeded sample).")] = 500,
    alpha: Annotated[float, typer.Option(help="False-alarm rate of a side, split over its "
                                              "tests.")] = 0.01,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")
                         ] = None,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit 1 when a side drifted.")] = False,
    history: Annotated[bool, typer.Option(help="List the app's past runs instead.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare an app's recent questions and answers with a baseline: meaning (MMD),
    length (KS, PSI), vocabulary and topics. The run is stored and exported as metrics."""
    with open_home(home) as alc:
        if history:
            runs = alc.drift_runs.history(app_ref.split("@")[0])
            if as_json:
                emit([r.as_dict() for r in runs])
                return
            for r in runs:
                typer.echo(f"{r.id}  {r.baseline:>24} vs {r.window:>4}  "
                           f"{'DRIFT' if r.drifted else 'stable'}")
            return
        run = alc.drift(app_ref, baseline, window,
                        sides=[s.strip() for s in side.split(",") if s.strip()],
                        sample=sample, alpha=alpha)
        if html_path is not None:
            html_path.write_text(drift_html(run, alc.drift_runs.history(run.app, 30)),
                                 encoding="utf-8")
    if as_json:
        emit(run.as_dict())
    else:
        typer.echo(drift_text(run))
    raise typer.Exit(1 if fail_on_drift and run.drifted else 0)


monitor_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="Continuous evaluation of live traffic, and the review queue.")
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("run")
def monitor_run(
    app_ref: Annotated[str, typer.Option("--app", "-a", "--collection", "-c",
                                         help="The app whose traces to score.")],
    sample: Annotated[float, typer.Option(help="Share of traces scored (by trace id, so "
                                               "reruns never score one twice).")] = 0.05,
    window: Annotated[str, typer.Option(help="How far back to look: 1h, 24h, 7d.")] = "24h",
    judge: Annotated[bool, typer.Option(
        help="Also ask the judge model (groundedness, answer and context relevance); "
             "slower, about 15 s per trace with qwen-1.5b on 2 cores.")] = False,
    judge_model: Annotated[str | None, typer.Option(help="Judge model [default: setting "
                                                         "judge_model]; implies --judge.")
                           ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most traces scored in this run.")] = 1000,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a sample of live traces off the request path; stored as runs of kind online
    and exported as alicerce_eval_score{kind="online"}."""
    with open_home(home) as alc:
        runs = alc.monitor(app_ref, sample=sample, window=window, judge=judge,
                           judge_model=judge_model, limit=limit)
        queued = len(alc.review_queue(app_ref.split("@")[0]))
    if as_json:
        emit({"runs": [{"id": r.id, "app": r.app, "version": r.app_version, "rows": r.rows,
                        "summary": {k: v.as_dict() for k, v in r.summary.items()}}
                       for r in runs], "review_queue": queued})
        return
    if not runs:
        typer.echo("no new traces in the sample (widen --window or raise --sample)")
    for r in runs:
        typer.echo(f"{r.id}  {r.target}  {r.rows} traces")
        for k, v in r.summary.items():
            typer.echo(f"  {k:28} {v.mean:.3f}  (95% CI {v.low:.3f}-{v.high:.3f}, n={v.n})")
    typer.echo(f"review queue: {queued} trace(s); `alicerce monitor review` lists them")


@monitor_app.command("review")
def monitor_review(
    app_ref: Annotated[str | None, typer.Option("--app", "-a", help="Only this app.")] = None,
    export: Annotated[Path | None, typer.Option(
        help="Write the queue as evaluation rows (JSONL) and take it off the queue.")] = None,
    accept_into: Annotated[str | None, typer.Option(
        help="Accept the whole queue into this stored dataset (a new version; the user's "
             "corrected answer, else the answer given, is the reference).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Traces waiting for review: rated down by a user, or scored low by `monitor run`.
    One by one, with corrections: the console's review page or `POST /v1/review`."""
    with open_home(home) as alc:
        if accept_into is not None:
            decided = [ReviewDecision(t.id, "accept")
                       for t, _ in alc.review_queue(app_ref, limit=10_000)]
            v = alc.review(decided, accept_into)
            typer.echo(f"{len(decided)} accepted into {v.ref}" if v else "nothing to review")
            return
        if export is not None:
            n = alc.export_review(export, app_ref)
            typer.echo(f"{n} row(s) written to {export}")
            return
        queue = alc.review_queue(app_ref)
    if as_json:
        emit([{"trace_id": t.id, "app": t.app, "version": t.app_version, "why": why,
               "question": t.question, "answer": t.answer} for t, why in queue])
        return
    for t, why in queue:
        typer.echo(f"{t.id}  {t.app}@{t.app_version or '-'}  {why:18} {t.question[:70]}")
    if not queue:
        typer.echo("the review queue is empty")
