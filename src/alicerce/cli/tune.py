"""`alicerce tune`: train an adapter on a bundled model, resume a stopped run, list runs;
`alicerce adapters`: the registered results, their labels and lineage."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from alicerce import Alicerce
from alicerce.cli.common import HomeOpt, JsonOpt, app, emit, open_home
from alicerce.cli.progress import Bar
from alicerce.errors import InputError
from alicerce.tune.config import METHODS, TuneConfig
from alicerce.tune.runs import TuneRun

tune_app = typer.Typer(no_args_is_help=True,
                       help="Fine-tune a bundled model on your data (needs alicerce[tune]).")
app.add_typer(tune_app, name="tune")


@tune_app.command("run")
def tune_run(
    data: Annotated[Path, typer.Option("--data", help="JSONL: messages, prompt/completion, "
                                                      "or text (--method pretrain).")],
    name: Annotated[str, typer.Option("--name", help="What the result is called.")],
    base: Annotated[str | None, typer.Option("--base", help="Bundled model or .gguf "
                                                            "[default: generator]")] = None,
    method: Annotated[str, typer.Option(help=" | ".join(METHODS))] = "lora",
    epochs: Annotated[float, typer.Option(help="Total training epochs.")] = 3.0,
    batch_size: Annotated[int, typer.Option(help="Rows per step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 2e-4,
    early_stopping_patience: Annotated[int, typer.Option(
        help="Evaluations without improvement before stopping (0: off).")] = 15,
    early_stopping_threshold: Annotated[float, typer.Option(
        help="Least fall of the validation loss that counts.")] = 1e-4,
    log_every: Annotated[int, typer.Option(help="Log, evaluate and checkpoint every N "
                                                "steps.")] = 10,
    eval_split: Annotated[float, typer.Option(help="Share of rows held out.")] = 0.1,
    seed: int = 42,
    max_seq_len: Annotated[int, typer.Option(help="Tokens per row, at most.")] = 512,
    grad_accum: Annotated[int, typer.Option(help="Steps accumulated per update.")] = 1,
    warmup_steps: int = 0,
    lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05,
    target_modules: Annotated[str, typer.Option(help="LoRA: comma-separated layer names.")]
    = "q_proj,k_proj,v_proj,o_proj",
    prompt_tokens: Annotated[int, typer.Option(help="Prompt tuning: soft tokens.")] = 20,
    heldout: Annotated[bool, typer.Option(
        "--eval", help="Then score the adapter and the base (or production) on the held-out "
                       "rows; both stored as evaluation runs.")] = False,
    home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Train: progress bar, the loss at every logged step, a checkpoint at each; Ctrl-C or a
    crash keeps the run, and `alicerce tune resume RUN` continues it."""
    try:
        cfg = TuneConfig(method=method, epochs=epochs, batch_size=batch_size,  # type: ignore[arg-type]
                         learning_rate=lr, early_stopping_patience=early_stopping_patience,
                         early_stopping_threshold=early_stopping_threshold,
                         log_every=log_every, eval_split=eval_split, seed=seed,
                         max_seq_len=max_seq_len, grad_accum=grad_accum,
                         warmup_steps=warmup_steps, lora_r=lora_r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, prompt_tokens=prompt_tokens,
                         target_modules=tuple(t.strip() for t in target_modules.split(",")))
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                           for e in exc.errors())
        raise InputError(f"bad tuning settings: {errors}",
                         hint="alicerce tune run --help lists them") from exc
    with open_home(home) as alc:
        run = alc.tune(data, name=name, base=base, config=cfg,
                       progress=_Progress(name, quiet=as_json))
        _report(run, as_json)
        if heldout:
            compared(alc, str(run.result["adapter"]), None, as_json)


def compared(alc: Alicerce, ref: str, against: str | None, as_json: bool) -> None:
    """Score `ref` against `against` (default production, else the base) on its held-out
    rows and print both, metric by metric."""
    if against is None:
        now = alc.adapters.labelled(alc.adapters.get(ref).name, "production")
        against = now.ref if now is not None and now.ref != ref else None
    mine, theirs = alc.tune_eval(ref, against=against, progress=Bar("held-out rows"))
    if as_json:
        emit({"candidate": mine.id, "incumbent": theirs.id,
              "metrics": {m: [theirs.summary[m].mean, e.mean] for m, e in mine.summary.items()
                          if m in theirs.summary}})
        return
    typer.echo(f"held-out rows ({mine.rows}): {theirs.app} ({theirs.id}) -> {mine.app} "
               f"({mine.id})")
    for m, e in mine.summary.items():
        if m in theirs.summary:
            typer.echo(f"  {m:<20} {theirs.summary[m].mean:.4f} -> {e.mean:.4f} "
                       f"(95% CI {e.low:.4f}-{e.high:.4f})")


@tune_app.command("resume")
def tune_resume(run_id: Annotated[str, typer.Argument(help="Run id")],
                home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Continue a stopped or interrupted run from its last checkpoint."""
    with open_home(home) as alc:
        run = alc.tune_resume(run_id, progress=_Progress(run_id, quiet=as_json))
    _report(run, as_json)


@tune_app.command("list")
def tune_list(limit: int = 50, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Tuning runs, newest first."""
    with open_home(home) as alc:
        runs = alc.tune_runs.list("local", limit)
    if as_json:
        emit([_as_dict(r) for r in runs])
        return
    if not runs:
        typer.echo("no tuning runs yet: alicerce tune run --data FILE --name NAME")
    for r in runs:
        best = r.result.get("best_eval_loss")
        typer.echo(f"{r.id}  {r.name:<16} {r.state:<11} {r.config.method:<8} {r.base:<12} "
                   f"{r.rows_train}+{r.rows_eval} rows"
                   + (f"  best eval loss {best:.4f}" if best is not None else ""))


@tune_app.command("show")
def tune_show(run_id: Annotated[str, typer.Argument(help="Run id")],
              home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """One run: settings, data version, the logged loss curve, the result."""
    with open_home(home) as alc:
        run = alc.tune_runs.get(run_id, "local")
    if as_json:
        emit(_as_dict(run))
        return
    _report(run, False)
    typer.echo(f"  base {run.base} ({run.base_identity[:19]}), data {run.data} "
               f"(version {run.data_version}), code {run.code_version}")
    typer.echo("  settings " + ", ".join(f"{k}={v}" for k, v in
                                          run.config.model_dump().items()))
    for h in run.history:
        typer.echo("  " + _line(h))


class _Progress:
    """The core's progress callback: a bar with an ETA, the estimate after the first step,
    and each logged step's metrics on its own line (stderr)."""

    def __init__(self, label: str, quiet: bool) -> None:
        self._bar, self._quiet = Bar(label, enabled=not quiet), quiet
        self._t0 = time.perf_counter()
        self._printed = -1.0

    def __call__(self, step: int, total: int, logs: dict[str, float]) -> None:
        if self._quiet:
            return
        if step == 1:
            per = time.perf_counter() - self._t0
            typer.echo(f"{total} steps; the first took {per:.1f} s: about "
                       f"{per * total / 60:.0f} min in all", err=True)
        if logs and logs.get("step", -1) != self._printed:
            self._printed = logs.get("step", -1)
            typer.echo(_line(logs), err=True)
        self._bar(step, total)


def _line(h: dict[str, Any]) -> str:
    return f"step {int(h.get('step', 0))}: " + ", ".join(
        f"{k} {v:.4g}" for k, v in h.items() if k != "step")


def _as_dict(r: TuneRun) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "state": r.state, "base": r.base,
            "base_identity": r.base_identity, "config": r.config.model_dump(), "data": r.data,
            "data_version": r.data_version, "rows_train": r.rows_train,
            "rows_eval": r.rows_eval, "history": r.history, "result": r.result,
            "error": r.error, "code_version": r.code_version, "created_at": r.created_at,
            "finished_at": r.finished_at}


def _report(r: TuneRun, as_json: bool) -> None:
    if as_json:
        emit(_as_dict(r))
        return
    res = r.result
    typer.echo(f"{r.id}: {r.name} {r.state}, {r.config.method} on {r.base}, "
               f"{r.rows_train} train + {r.rows_eval} validation rows"
               + (f"; {res['steps']}/{res['total_steps']} steps in {res['seconds']} s"
                  + (" (stopped early)" if res.get("stopped_early") else "")
                  + (f", best eval loss {res['best_eval_loss']:.4f}"
                     if res.get("best_eval_loss") is not None else "")
                  + f", {res['trainable_params']:,} trainable parameters -> {res['adapter']}"
                  if res else ""))
    if res.get("mlflow_run"):
        typer.echo(f"  MLflow run {res['mlflow_run']}")
    if r.error:
        typer.echo(f"  error: {r.error}")
    if r.state == "failed":
        sys.exit(1)


adapters_app = typer.Typer(no_args_is_help=True,
                           help="Trained adapters: versions, labels, rollback, diff, add, remove.")
app.add_typer(adapters_app, name="adapters")


@adapters_app.command("list")
def adapters_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every adapter version: base, method, labels, best validation loss."""
    with open_home(home) as alc:
        found = alc.adapters.list()
    if as_json:
        emit([a.as_dict() for a in found])
        return
    if not found:
        typer.echo("no adapters yet: alicerce tune run --data FILE --name NAME")
    for a in found:
        loss = a.metrics.get("best_eval_loss")
        typer.echo(f"{a.ref:<20} {a.method:<8} {a.base:<14} "
                   f"{','.join(a.labels) or '-':<20} "
                   + (f"best eval loss {loss:.4f}" if loss is not None else ""))


@adapters_app.command("show")
def adapters_show(ref: Annotated[str, typer.Argument(help="NAME, NAME@N or NAME@LABEL")],
                  home: HomeOpt = None) -> None:
    """One version with its lineage: base identity, run, data version, settings, metrics."""
    with open_home(home) as alc:
        emit(alc.adapters.get(ref).as_dict())


@adapters_app.command("label")
def adapters_label(ref: Annotated[str, typer.Argument(help="NAME@N")],
                   label: Annotated[str, typer.Argument(help="production, staging, ...")],
                   gate: Annotated[bool | None, typer.Option(
                       "--gate/--no-gate", help="Move it only if it scores no worse on its "
                       "held-out rows than the label's version (or the base) [on for "
                       "production]")] = None,
                   max_drop: Annotated[str, typer.Option(
                       help="The gate: METRIC=ALLOWED,... [answer.f1=0]")] = "",
                   home: HomeOpt = None) -> None:
    """Point a label at a version (every move is audited); to production only through
    the gate unless --no-gate."""
    from alicerce.evaluate.compare import parse_limits

    gated = label == "production" if gate is None else gate
    with open_home(home) as alc:
        a, result = alc.promote_adapter(ref, label, gated=gated,
                                        max_drop=parse_limits(max_drop) or None,
                                        progress=Bar("held-out rows"))
    for c in result.checks if result else []:
        typer.echo(f"  ok   {c.reason}")
    typer.echo(f"{a.name}@{label} -> version {a.version}")


@adapters_app.command("rollback")
def adapters_rollback(name: Annotated[str, typer.Argument(help="Adapter name")],
                      label: str = "production", home: HomeOpt = None) -> None:
    """Move a label back to the version it pointed at before."""
    with open_home(home) as alc:
        a, left = alc.adapters.rollback(name, label)
    typer.echo(f"{name}@{label}: version {left} -> {a.version}")


@adapters_app.command("add")
def adapters_add(name: Annotated[str, typer.Argument(help="Adapter name")],
                 folder: Annotated[Path, typer.Argument(help="A PEFT adapter folder")],
                 base: Annotated[str, typer.Option(help="The model it was trained on")],
                 home: HomeOpt = None) -> None:
    """Register an adapter trained elsewhere (LoRA, (IA)3, prompt tuning) as NAME@N; a
    LoRA is converted for llama.cpp. Running servers pick it up without a restart."""
    with open_home(home) as alc:
        a = alc.add_adapter(name, folder, base)
    typer.echo(f"registered {a.ref} ({a.method} on {a.base})"
               + (", converted for llama.cpp" if a.gguf else ", transformers backend only"))


@adapters_app.command("remove")
def adapters_remove(ref: Annotated[str, typer.Argument(help="NAME@N")],
                    home: HomeOpt = None) -> None:
    """Delete a version's files (a labelled one is refused); running servers stop serving
    it at their next adapter check, and its number is never reused."""
    with open_home(home) as alc:
        a = alc.adapters.remove(ref)
    typer.echo(f"removed {a.ref}")


@adapters_app.command("diff")
def adapters_diff(a: str, b: str, home: HomeOpt = None) -> None:
    """Settings, metrics and lineage that differ between two versions."""
    with open_home(home) as alc:
        changed = alc.adapters.diff(a, b)
    for key, (left, right) in changed.items():
        typer.echo(f"{key}: {left} -> {right}")
    if not changed:
        typer.echo("no differences")


