"""Evaluation commands: datasets, synthetic questions, runs, comparisons, pairwise
judgements, gates and reports; and `models compare` for choosing a base model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from alicerce import datasets
from alicerce.cli.answers import models_app
from alicerce.cli.common import (
    AppOpt,
    CollOpt,
    ExecutorOpt,
    HomeOpt,
    JsonOpt,
    ModelOpt,
    app,
    emit,
    open_home,
)
from alicerce.cli.progress import Bar
from alicerce.errors import InputError
from alicerce.evaluate.compare import Comparison, compare, gate, parse_limits
from alicerce.evaluate.runs import Run
from alicerce.platform import Alicerce

eval_app = typer.Typer(no_args_is_help=True,
                       help="Evaluate: datasets, synthetic questions, runs, compare, gate.")
app.add_typer(eval_app, name="eval")

DatasetOpt = Annotated[Path, typer.Option(
    "--dataset", "-d", help="JSONL/CSV (question, sources, reference, tags), SQuAD .json, "
                            "Pirá .csv or BEIR folder; or a stored dataset, NAME or NAME@N.")]
LimitOpt = Annotated[int | None, typer.Option(help="Score a random sample of this many rows.")]
JudgeOpt = Annotated[str | None, typer.Option(
    "--judge-model", help="Judge model [default: setting judge_model, else generator]")]
MetricsOpt = Annotated[str, typer.Option(
    help="Comma-separated groups: retrieval, answer, triad, judge.")]


def _progress(label: str) -> Any:
    return Bar(label)


def _load(path: Path, limit: int | None, seed: int = 0,
          filter_fields: list[str] | None = None, alc: Alicerce | None = None
          ) -> datasets.Dataset:
    ds = (alc.dataset(path, limit=limit, seed=seed, filter_fields=filter_fields or ())
          if alc is not None else
          datasets.load(path, limit=limit, sample_seed=seed, filter_fields=filter_fields or ()))
    for p in ds.problems[:10]:
        typer.echo(f"  skipped line {p.line}: {p.reason}", err=True)
    if len(ds.problems) > 10:
        typer.echo(f"  ... and {len(ds.problems) - 10} more skipped lines", err=True)
    return ds


def _summary(run: Run) -> None:
    where = f"{run.app}@{run.app_version}" if run.app_version else run.app
    rate = run.rows / run.seconds * 60 if run.seconds else 0.0
    typer.echo(f"{run.id}  {where} on {run.dataset}@{run.dataset_version}: {run.rows} rows, "
               f"{run.failed} with a metric missing, {run.seconds:.1f}s ({rate:.1f}/min)"
               + (f", judge {run.judge}" if run.judge else ""))
    typer.echo(f"  {'metric':<28}{'mean':>8}  95% CI")
    for m, e in run.summary.items():
        typer.echo(f"  {m:<28}{e.mean:>8.4f}  {e.low:.4f} - {e.high:.4f}  (n={e.n})")
    reasons: dict[str, int] = {}
    for r in run.results:
        for err in r.errors:
            key = err.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda x: -x[1]):
        typer.echo(f"  {n} row(s): {reason}")


@eval_app.command("dataset")
def dataset_(path: Annotated[Path, typer.Argument(help="Dataset file or BEIR folder.")],
             to: Annotated[Path | None, typer.Option(help="Write its rows as our JSONL.")] = None,
             corpus_to: Annotated[Path | None, typer.Option(
                 help="Write the public set's documents as JSONL, to ingest with "
                      "--id-field id --title-field title.")] = None,
             limit: LimitOpt = None, seed: int = 0, as_json: JsonOpt = False) -> None:
    """Read a dataset: its version (content hash), rows, skipped lines; convert it."""
    ds = _load(path, limit, seed)
    if to:
        datasets.write_jsonl(ds.rows, to)
    if corpus_to:
        datasets.write_jsonl(datasets.corpus(path), corpus_to)
    info = {"name": ds.name, "version": ds.version, "rows": len(ds.rows),
            "with_sources": sum(1 for r in ds.rows if r.sources),
            "with_reference": sum(1 for r in ds.rows if r.reference),
            "skipped": [asdict(p) for p in ds.problems]}
    if as_json:
        emit(info)
        return
    typer.echo(f"{ds.ref}: {info['rows']} rows, {info['with_sources']} with source ids, "
               f"{info['with_reference']} with a reference answer, {len(ds.problems)} skipped")


@eval_app.command("synth")
def synth(collection: CollOpt = "default",
          to: Annotated[Path, typer.Option(help="Where to write the JSONL dataset.")] = Path(
              "synth.jsonl"),
          per_doc: Annotated[int, typer.Option(min=1, max=10)] = 3,
          max_docs: Annotated[int | None, typer.Option(help="Use the first N documents.")] = None,
          verify: Annotated[bool, typer.Option(
              help="Also drop questions the judge says the passage does not answer.")] = False,
          model: ModelOpt = None, judge_model: JudgeOpt = None, seed: int = 0,
          home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Questions generated from the collection's documents, with their source ids."""
    from alicerce.evaluate.synth import questions

    with open_home(home) as alc:
        model = model or alc.settings.judge_model
        out = questions(alc, collection, per_doc=per_doc, model=model, max_docs=max_docs,
                        verify=alc.evals.judge(judge_model) if verify else None, seed=seed,
                        progress=None if as_json else _progress("documents"))
    n = datasets.write_jsonl(out.rows, to) if out.rows else 0
    if as_json:
        emit({"to": str(to), "rows": n, "dropped": out.dropped, "failed": out.failed})
        return
    typer.echo(f"{n} questions written to {to}; {len(out.dropped)} dropped, "
               f"{len(out.failed)} documents failed")
    for q, why in out.dropped[:10]:
        typer.echo(f"  dropped: {q[:70]!r}: {why}")
    for key, err in out.failed[:5]:
        typer.echo(f"  failed: {key}: {err}")


@eval_app.command("paraphrase")
def paraphrase(dataset: DatasetOpt,
               to: Annotated[Path, typer.Option(help="Where to write originals + paraphrases.")
                             ] = Path("augmented.jsonl"),
               n: Annotated[int, typer.Option(min=1, max=5, help="Paraphrases per row.")] = 2,
               model: ModelOpt = None, seed: int = 0, home: HomeOpt = None) -> None:
    """Augment a dataset with rewordings of each question (same sources and reference)."""
    from alicerce.evaluate.synth import paraphrases

    with open_home(home) as alc:
        ds = _load(dataset, None, alc=alc)
        out = paraphrases(alc, ds.rows, n=n, model=model or alc.settings.judge_model,
                          seed=seed, progress=_progress("questions"))
    datasets.write_jsonl([*ds.rows, *out.rows], to)
    typer.echo(f"{len(ds.rows)} + {len(out.rows)} paraphrases written to {to}; "
               f"{len(out.dropped)} dropped")


@eval_app.command("run")
def run_(target: AppOpt, dataset: DatasetOpt, metrics: MetricsOpt = "retrieval,answer",
         judge_model: JudgeOpt = None,
         k: Annotated[int, typer.Option("-k", "--k", help="Cut-off for retrieval metrics.")
                      ] = 5,
         model: ModelOpt = None, limit: LimitOpt = None, seed: int = 0,
         filter_field: Annotated[list[str] | None, typer.Option(
             help="Dataset column applied as a metadata filter (repeat).")] = None,
         cache: Annotated[bool, typer.Option(help="Reuse answers and verdicts already "
                                                  "computed for the same inputs.")] = True,
         adapter: Annotated[str | None, typer.Option(
             help="Answer with this LoRA adapter (NAME@N or NAME@LABEL) on the app's "
                  "model")] = None,
         executor: ExecutorOpt = None, home: HomeOpt = None,
         as_json: JsonOpt = False) -> None:
    """Score an app version (or a collection) on a dataset; stored with its traces. With
    an executor, the answers are asked on the Ray cluster's workers."""
    with open_home(home, executor=executor) as alc:
        ds = _load(dataset, limit, seed, filter_field, alc)
        run = alc.evals.run(target, ds, metrics.split(","), judge_model=judge_model, k=k,
                            cache=cache, model=model, adapter=adapter,
                            progress=None if as_json else _progress("questions"))
    if as_json:
        emit(run.as_dict())
    else:
        _summary(run)


@eval_app.command("list")
def list_(target: Annotated[str | None, typer.Option("--app", "-a", help="Only this app.")
                            ] = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Evaluation runs, newest first."""
    with open_home(home) as alc:
        runs = alc.evals.runs.list(target)
    if as_json:
        emit([r.as_dict() for r in runs])
        return
    if not runs:
        typer.echo("no runs yet: alicerce eval run --app NAME --dataset FILE")
    for r in runs:
        where = f"{r.app}@{r.app_version}" if r.app_version else r.app
        typer.echo(f"{r.id}  {r.kind:<9}{where:<20}{r.dataset}@{r.dataset_version}  "
                   f"{r.rows} rows  {','.join(r.metrics)}")


@eval_app.command("show")
def show(run_id: Annotated[str, typer.Argument(help="Run id (ev-...).")], home: HomeOpt = None,
         as_json: JsonOpt = False) -> None:
    """A run's metrics, and with --json every question's scores."""
    with open_home(home) as alc:
        run = alc.evals.runs.get(run_id)
    if as_json:
        emit(run.as_dict(with_rows=True))
    else:
        _summary(run)


def _print_comparison(c: Comparison) -> None:
    typer.echo(f"A {c.a.label}\nB {c.b.label}")
    typer.echo(f"  {'metric':<28}{'A':>8}{'B':>8}{'B - A':>9}  95% CI of B - A")
    for d in c.metrics:
        typer.echo(f"  {d.metric:<28}{d.a.mean:>8.4f}{d.b.mean:>8.4f}{d.delta.mean:>+9.4f}  "
                   f"{d.delta.low:+.4f} .. {d.delta.high:+.4f}"
                   + ("  *" if d.significant else ""))
    typer.echo("  * the interval leaves out 0")
    if c.questions:
        typer.echo("questions that changed most (mean change over their metrics):")
        for q in c.questions:
            typer.echo(f"  {q.change:+.3f}  {q.row_id}  {q.question[:70]}")


@eval_app.command("compare")
def compare_(run_a: Annotated[str, typer.Argument(help="Baseline run id.")],
             run_b: Annotated[str, typer.Argument(help="Candidate run id.")],
             top: int = 10, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Two runs side by side: each metric with the interval of the paired difference, and
    the questions that changed most."""
    with open_home(home) as alc:
        c = compare(alc.evals.runs.get(run_a), alc.evals.runs.get(run_b), top)
    if as_json:
        emit({"a": c.a.id, "b": c.b.id, "metrics": [
            {"metric": d.metric, "a": d.a.as_dict(), "b": d.b.as_dict(),
             "delta": d.delta.as_dict(), "significant": d.significant} for d in c.metrics],
              "questions": [asdict(q) for q in c.questions], "only_a": c.only_a,
              "only_b": c.only_b})
    else:
        _print_comparison(c)


@eval_app.command("pairwise")
def pairwise(target: AppOpt,
             vs: Annotated[str, typer.Option("--vs", help="The other app version (B).")],
             dataset: DatasetOpt, judge_model: JudgeOpt = None, limit: LimitOpt = None,
             seed: int = 0, executor: ExecutorOpt = None, home: HomeOpt = None,
             as_json: JsonOpt = False) -> None:
    """Which app version answers better: the judge sees every pair in both orders."""
    with open_home(home, executor=executor) as alc:
        ds = _load(dataset, limit, seed, alc=alc)
        run = alc.evals.pairwise(target, vs, ds, judge_model=judge_model,
                                 progress=None if as_json else _progress("questions"))
    if as_json:
        emit(run.as_dict(with_rows=True))
        return
    wins = {w: sum(1 for r in run.results if r.details.get("winner") == w)
            for w in ("A", "B", "TIE")}
    typer.echo(f"{run.id}  A = {target}, B = {vs} on {ds.ref}: A {wins['A']}, B {wins['B']}, "
               f"tie {wins['TIE']}; {run.failed} failed")
    for m, e in run.summary.items():
        typer.echo(f"  {m:<24}{e.mean:.3f}  ({e.low:.3f} - {e.high:.3f})")
    for r in run.results[:5]:
        if r.details:
            typer.echo(f"  {r.details['winner']:<4}{r.question[:60]!r}: "
                       f"{r.details['explanation'][:100]}")


@eval_app.command("gate")
def gate_(run_id: Annotated[str, typer.Argument(help="The candidate run.")],
          baseline: Annotated[str | None, typer.Option(
              help="Run id, or a label (production) / @N of the same app: its newest run on "
                   "the same dataset version.")] = None,
          max_drop: Annotated[str, typer.Option(
              help="METRIC=ALLOWED,... e.g. retrieval.mrr=0.02,answer.rougeL=0.03")] = "",
          minimum: Annotated[str, typer.Option(
              "--min", help="METRIC=FLOOR,... absolute floors, e.g. answer.f1=0.3")] = "",
          home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Exit 1 when a metric dropped more than allowed (or is under its floor): for CI."""
    drops, floors = parse_limits(max_drop), parse_limits(minimum)
    if drops and baseline is None:
        raise InputError("--max-drop needs a --baseline",
                         hint="e.g. --baseline production, or a run id")
    with open_home(home) as alc:
        run = alc.evals.runs.get(run_id)
        base = alc.evals.baseline(run, baseline) if baseline else None
        result = gate(run, base, drops, floors)
    if as_json:
        emit({"passed": result.passed, "run": run.id, "baseline": base.id if base else None,
              "checks": [asdict(c) for c in result.checks]})
    else:
        typer.echo(f"gate {run.label}" + (f" against {base.label}" if base else ""))
        for c in result.checks:
            typer.echo(f"  {'ok  ' if c.ok else 'FAIL'} {c.reason}")
        typer.echo("passed" if result.passed else "FAILED")
    if not result.passed:
        raise typer.Exit(1)


@eval_app.command("report")
def report(run_id: Annotated[str, typer.Argument(help="Run id.")],
           html: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
           md: Annotated[Path | None, typer.Option(help="Write a Markdown report here.")
                         ] = None,
           vs: Annotated[str | None, typer.Option(help="Compare against this run (A).")
                         ] = None, home: HomeOpt = None) -> None:
    """Tables and charts of a run (and its comparison with another); Markdown to stdout
    when no file is given. Red-team and fairness runs get their own reports."""
    from alicerce.evaluate import fairness_report, redteam_report
    from alicerce.evaluate.report import html_report, markdown

    with open_home(home) as alc:
        run = alc.evals.runs.get(run_id)
        c = compare(alc.evals.runs.get(vs), run) if vs else None
    own = {"fairness": fairness_report, "redteam": redteam_report}.get(run.kind)
    if own is not None and vs:
        raise InputError(f"{run.id} is a {run.kind} run: --vs compares evaluation runs",
                         hint="drop --vs")
    as_html = (lambda: own.html(run)) if own else (lambda: html_report(run, c))
    as_md = (lambda: own.markdown(run)) if own else (lambda: markdown(run, c))
    if html:
        html.write_text(as_html(), encoding="utf-8")
        typer.echo(f"wrote {html}", err=True)
    if md:
        md.write_text(as_md(), encoding="utf-8")
        typer.echo(f"wrote {md}", err=True)
    if not html and not md:
        typer.echo(as_md())
@models_app.command("compare")
def models_compare(
        dataset: DatasetOpt,
        models: Annotated[str, typer.Option(help="Comma-separated candidates.")
                          ] = "qwen-1.5b,qwen-0.5b",
        target: AppOpt = "default", metrics: MetricsOpt = "answer",
        judge_model: JudgeOpt = None, limit: LimitOpt = None, seed: int = 0,
        home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The same dataset answered by each model: quality, latency, tokens/s, memory, cost per
    1,000 answers."""
    from alicerce.evaluate.discovery import compare_models

    names = [m.strip() for m in models.split(",") if m.strip()]
    with open_home(home) as alc:
        ds = _load(dataset, limit, seed, alc=alc)
        rows = compare_models(alc, target, ds, names, metrics.split(","),
                              judge_model=judge_model,
                              progress=None if as_json else _progress("questions"))
    if as_json:
        emit([asdict(r) for r in rows])
        return
    keys = sorted({k for r in rows for k in r.quality if k != "answer.abstained"})[:6]
    typer.echo(f"{'model':<14}" + "".join(f"{k.split('.')[-1][:10]:>11}" for k in keys)
               + f"{'p50 ms':>9}{'p95 ms':>9}{'tok/s':>7}{'+RSS MB':>9}{'CPU-s/1k':>10}"
               + f"{'$/1k':>8}{'failed':>7}")
    for r in rows:
        typer.echo(f"{r.model:<14}" + "".join(f"{r.quality.get(k, float('nan')):>11.3f}"
                                               for k in keys)
                   + f"{r.latency_p50_ms:>9.0f}{r.latency_p95_ms:>9.0f}{r.tokens_per_s:>7.1f}"
                   f"{r.rss_growth_mb:>9.0f}{r.cpu_s_per_1k:>10.0f}"
                   + (f"{r.price_per_1k:>8.3f}" if r.price_per_1k is not None else f"{'-':>8}")
                   + f"{r.failed:>7}  ({r.run_id})")
    typer.echo(f"{len(ds.rows)} questions from {ds.ref}; tok/s = completion tokens per second "
               "of answer time; +RSS = memory the model added to this process")


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[Path, typer.Option(help="CSV or JSONL with questions and doc ids.")],
    collection: CollOpt = "default",
    k: Annotated[int, typer.Option("-k", "--k", help="Cut-off for hit rate, MRR, recall.")] = 5,
    mode: Annotated[str | None, typer.Option(help="sparse | dense | hybrid | rrf")] = None,
    alpha: Annotated[float | None, typer.Option(help="Dense weight in hybrid (0-1).")] = None,
    question_field: str = "question",
    id_field: Annotated[str, typer.Option(help="Column with the relevant document id(s).")
                        ] = "document",
    filter_field: Annotated[list[str] | None, typer.Option(
        help="Dataset column applied as a metadata filter (repeat).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hit rate, MRR, recall@k and nDCG@10 of a collection on a labelled question set."""
    from alicerce.evaluate.retrieval import load_dataset

    queries = load_dataset(dataset, question_field, id_field, filter_field or [])
    with open_home(home) as alc:
        rep = alc.evaluate_retrieval(collection, queries, k=k, mode=mode,  # type: ignore[arg-type]
                                     alpha=alpha)
    if as_json:
        emit({"k": rep.k, "queries": rep.queries, "metrics": rep.metrics,
               "seconds": rep.seconds})
        return
    typer.echo(f"{rep.queries} questions, k={rep.k}, {rep.seconds:.1f}s")
    for name, value in rep.metrics.items():
        typer.echo(f"{name:<12}{value:.4f}")


