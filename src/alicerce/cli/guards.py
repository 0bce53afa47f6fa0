"""`alicerce guard check` (every rail's verdict on a text) and `alicerce redteam`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alicerce.cli.common import HomeOpt, JsonOpt, ModelOpt, app, emit, open_home
from alicerce.datasets import load as load_dataset
from alicerce.evaluate.agent_redteam import (
    AGENT_SUITES,
    AgentRedTeam,
    agent_suites,
    agent_tools,
)
from alicerce.evaluate.redteam import SUITES, RedTeam
from alicerce.evaluate.redteam import suites as suite_probes
from alicerce.evaluate.redteam_report import check_gate, parse_gate
from alicerce.evaluate.redteam_report import html as rt_html
from alicerce.evaluate.redteam_report import markdown as rt_markdown
from alicerce.guard.base import Stage

guard_app = typer.Typer(no_args_is_help=True, help="Guard rails (docs/guardrails.md).")
app.add_typer(guard_app, name="guard")


@guard_app.command("check")
def check(
    text: Annotated[str, typer.Argument(help="The text to check.")],
    app_ref: Annotated[str | None, typer.Option(
        "--app", "-a", help="Use this app's rails [default: the settings' guards]")] = None,
    stage: Annotated[str, typer.Option(
        help="Which rails: input (a question), context (a passage) or output (an answer)."
    )] = "input",
    rails: Annotated[str | None, typer.Option(
        help="Comma-separated rails with their defaults instead, e.g. pii,injection,toxicity"
    )] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Exit status 1 when a rail blocks, so scripts can use it as a filter."""
    if stage not in ("input", "context", "output"):
        raise typer.BadParameter("use input, context or output", param_hint="--stage")
    chosen: Stage = stage  # type: ignore[assignment]
    chosen_rails = [r.strip() for r in rails.split(",") if r.strip()] if rails else []
    with open_home(home) as alc:
        # Load the rails' models first, so the latencies shown are the checks' own.
        alc.check("warm up", app=app_ref, stage=chosen, rails=chosen_rails)
        out = alc.check(text, app=app_ref, stage=chosen, rails=chosen_rails)
    if as_json:
        emit({"text": out.text, "blocked": out.blocked.rail if out.blocked else None,
              "verdicts": [v.as_dict() for v in out.verdicts]})
    else:
        for v in out.verdicts:
            line = f"{v.rail:<10} {v.action:<7} score {v.score:.2f}  {v.latency_ms:7.1f} ms"
            typer.echo(line + (f"  {v.reason}" if v.reason else "")
                       + (f"  [{v.error}]" if v.error else ""))
        typer.echo(f"\ntext: {out.text}")
        if out.blocked:
            typer.echo(f"blocked by: {out.blocked.rail}")
    raise typer.Exit(1 if out.blocked else 0)


@app.command("redteam")
def redteam(
    app_ref: Annotated[str, typer.Option(
        "--app", "-a", "--collection", "-c", help="App (NAME[@N|@LABEL]) or collection.")],
    suites: Annotated[str | None, typer.Option(
        help="Comma-separated: " + ", ".join(SUITES) + " (RAG apps; all by default); "
             + ", ".join(AGENT_SUITES) + " (apps with an agent step; both by default).")
    ] = None,
    data: Annotated[Path | None, typer.Option(
        help="Folder holding prompt-injection/ (the public sets); without it only the "
             "built-in probes run.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Attacks per suite.")] = 10,
    benign: Annotated[int | None, typer.Option(
        min=0, help="Benign prompts from each source (built-in + XSTest safe, golden "
                    "questions) for the false-refusal rate; default: --limit.")] = None,
    golden: Annotated[Path | None, typer.Option(
        help="An evaluation dataset whose questions join the benign prompts.")] = None,
    model: ModelOpt = None,
    baseline: Annotated[bool, typer.Option(
        help="Also run every probe with the guards off, to measure what they stop.")] = True,
    report: Annotated[Path | None, typer.Option(
        help="Write a report: .html or .md by the file's suffix.")] = None,
    gate: Annotated[str | None, typer.Option(
        help="Exit 1 unless these hold, e.g. attack_success<=0.05,false_refusal<=0.05")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed for the public sets.")] = 0,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Attack an app with the red-team suites, with and without its guards."""
    limits = parse_gate(gate) if gate else []
    with open_home(home) as alc:
        version = alc.resolve_app(app_ref).version
        tools = agent_tools(version) if version and version.spec.get("kind") == "chain" \
            else set()
        chosen = [s.strip() for s in (suites or "").split(",") if s.strip()] or list(
            AGENT_SUITES if tools else SUITES)

        def tick(i: int, n: int) -> None:
            typer.echo(f"  {i}/{n}", err=True)
        if tools:
            probes = agent_suites(chosen, tools, limit, benign)
        else:
            questions = [r.question for r in load_dataset(golden).rows] if golden else []
            probes = suite_probes(chosen, data, limit, seed, questions, benign)
        typer.echo(f"{len(probes)} probes against {app_ref}"
                   + (" (each also without guards)" if baseline else ""), err=True)
        run = (AgentRedTeam(alc, app_ref, baseline, tick) if tools
               else RedTeam(alc, app_ref, model, baseline, tick)).run(probes)
    if report is not None:
        text = rt_html(run) if report.suffix.lower() in (".html", ".htm") else rt_markdown(run)
        report.write_text(text, encoding="utf-8")
    checks = check_gate(run, limits)
    if as_json:
        emit({"run": run.id, "summary": {k: v.as_dict() for k, v in run.summary.items()},
              "gate": [{"ok": ok, "check": why} for ok, why in checks]})
    else:
        typer.echo(rt_markdown(run))
        for ok, why in checks:
            typer.echo(f"{'PASS' if ok else 'FAIL'}  {why}")
    raise typer.Exit(0 if all(ok for ok, _ in checks) else 1)
