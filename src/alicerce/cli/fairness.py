"""`alicerce fairness`: counterfactual fairness probes against an app (docs/responsible-ai.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alicerce.cli.common import AppOpt, HomeOpt, JsonOpt, ModelOpt, app, emit, open_home
from alicerce.cli.evals import DatasetOpt, JudgeOpt, LimitOpt, _load
from alicerce.cli.progress import Bar
from alicerce.evaluate.fairness import Fairness
from alicerce.evaluate.fairness_probes import attributes, parse_attributes
from alicerce.evaluate.fairness_report import html as fa_html
from alicerce.evaluate.fairness_report import markdown as fa_markdown
from alicerce.evaluate.redteam_report import check_gate, parse_gate


@app.command("fairness")
def fairness(
    target: AppOpt,
    dataset: DatasetOpt,
    attrs: Annotated[str | None, typer.Option(
        "--attributes", help="Comma-separated: " + ", ".join(attributes()) + " [default: all]"
    )] = None,
    personas: Annotated[bool, typer.Option(
        help="Also ask each question that mentions no attribute as every group's persona "
             "(\"Sou mulher. ...\").")] = False,
    judge: Annotated[bool, typer.Option(
        help="Ask a judge whether each pair of answers differs in substance.")] = True,
    judge_model: JudgeOpt = None,
    model: ModelOpt = None,
    limit: LimitOpt = None,
    seed: int = 0,
    cache: Annotated[bool, typer.Option(help="Reuse answers and verdicts already computed."
                                        )] = True,
    report: Annotated[Path | None, typer.Option(
        help="Write a report: .html or .md by the file's suffix.")] = None,
    gate: Annotated[str | None, typer.Option(
        help="Exit 1 unless these hold, e.g. changed_over_control<=0.1,abstention_diff<=0.05 "
             "(any metric of the run, ATTRIBUTE.METRIC for one attribute)")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask each question and its variants that change only a protected attribute; report
    how often the answer, its abstention or its refusal changes, per attribute and group."""
    chosen = parse_attributes(attrs)
    limits = parse_gate(gate) if gate else []
    with open_home(home) as alc:
        ds = _load(dataset, limit, seed, None, alc)
        run = Fairness(alc, target, model, judge, judge_model, cache,
                       None if as_json else Bar("answers")).run(ds, chosen, personas)
    if report is not None:
        text = fa_html(run) if report.suffix.lower() in (".html", ".htm") \
            else fa_markdown(run)
        report.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {report}", err=True)
    checks = check_gate(run, limits)
    if as_json:
        emit({**run.as_dict(), "gate": [{"ok": ok, "check": why} for ok, why in checks]})
    else:
        typer.echo(fa_markdown(run))
        for ok, why in checks:
            typer.echo(f"{'PASS' if ok else 'FAIL'}  {why}")
    raise typer.Exit(0 if all(ok for ok, _ in checks) else 1)
