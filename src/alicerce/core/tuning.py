"""Tuning: train an adapter (or a whole small model) on a home's data, with a run record
that survives a crash and resumes from the last checkpoint. Needs `alicerce[tune]`."""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alicerce.core.governance import Governance
from alicerce.errors import AlicerceError, InputError, NotFoundError
from alicerce.evaluate.compare import GateResult
from alicerce.evaluate.runs import Run
from alicerce.generate.models import model_identity, model_path, resolve
from alicerce.tune.build import from_feedback
from alicerce.tune.config import TuneConfig
from alicerce.tune.data import TuneData, load
from alicerce.tune.heldout import Progress as EvalProgress
from alicerce.tune.heldout import Side, decide, score
from alicerce.tune.registry import GGUF_FILE, AdapterVersion, Lineage, check_adapter
from alicerce.tune.runs import Progress, TuneRun, TuneRuns
from alicerce.version import __version__

_PEFT_TYPES = {"LORA": "lora", "IA3": "ia3", "PROMPT_TUNING": "prompt"}
_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class Tuning(Governance):
    """Training runs on this home's models and data."""

    _tune_runs: TuneRuns | None = None

    @property
    def tune_runs(self) -> TuneRuns:
        if self._tune_runs is None:
            self._tune_runs = TuneRuns(self.db_path)
        return self._tune_runs

    def close(self) -> None:
        if self._tune_runs is not None:
            self._tune_runs.close()
        super().close()

    def tune(self, data: str | Path, *, name: str, base: str | None = None,
             config: TuneConfig | None = None, caller: str = "local",
             progress: Progress | None = None) -> TuneRun:
        """Train on `data` (JSONL rows) from `base` (a local GGUF model); everything that can
        be wrong is checked before the model loads."""
        cfg = config or TuneConfig()
        _check_name(name)
        self.adapters.check_name(name, caller)
        _need_extra()
        rows = load(data, "text" if cfg.method == "pretrain" else "chat")
        train_rows, eval_rows = rows.split(cfg.eval_split, cfg.seed)
        base = base or self.settings.generator
        ref = resolve(base, self.settings)
        if ref.kind != "gguf":
            raise InputError(f"{base} is a remote model; tuning needs its weights here",
                             hint="tune a bundled model (qwen-0.5b, smollm2-135m) or a .gguf")
        path = model_path(ref, self.settings)
        run = self.tune_runs.start(caller=caller, name=name, base=base,
                                   base_identity=model_identity(base, self.settings),
                                   config=cfg, data=rows.source, data_version=rows.version,
                                   rows=(len(train_rows), len(eval_rows)),
                                   code_version=__version__)
        return self._train(run, path, rows, resume=False, progress=progress)

    def tune_resume(self, run_id: str, *, caller: str = "local",
                    progress: Progress | None = None) -> TuneRun:
        """Continue an interrupted or stopped run from its last checkpoint, on the same
        data version and settings."""
        _need_extra()
        run = self.tune_runs.get(run_id, caller)
        if run.state == "running":
            raise InputError(f"run {run_id} is still running (pid {run.pid})",
                             hint="wait for it, or stop that process first")
        rows = load(run.data, "text" if run.config.method == "pretrain" else "chat")
        if rows.version != run.data_version:
            raise InputError(f"{run.data} changed since run {run_id} started (data version "
                             f"{rows.version}, the run trained on {run.data_version})",
                             hint="start a new run on the changed data")
        identity = model_identity(run.base, self.settings)
        if identity != run.base_identity:
            raise InputError(f"model {run.base} is not the one run {run_id} started from",
                             hint="start a new run")
        run = self.tune_runs.resume(run_id, caller)
        path = model_path(resolve(run.base, self.settings), self.settings)
        return self._train(run, path, rows, resume=True, progress=progress)

    def add_adapter(self, name: str, folder: Path, base: str, *,
                    caller: str = "local") -> AdapterVersion:
        """Register a PEFT adapter trained elsewhere on `base`'s weights (a LoRA is converted
        for llama.cpp on the way in); running servers pick it up at their next check."""
        import json
        import tempfile

        config = folder / "adapter_config.json"
        try:
            peft = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{folder} has no readable adapter_config.json: {exc}",
                             hint="give a folder saved by PEFT's save_pretrained") from None
        method = _PEFT_TYPES.get(str(peft.get("peft_type", "")).upper())
        if method is None:
            raise InputError(f"PEFT type {peft.get('peft_type')!r} is not served here",
                             hint="LoRA, (IA)3 or prompt tuning: "
                                  + ", ".join(sorted(_PEFT_TYPES)))
        ref = resolve(base, self.settings)
        if ref.kind == "openai":
            raise InputError(f"{base} is a remote endpoint: its server holds its adapters",
                             hint="list them in [models.NAME] adapters (docs/tuning.md)")
        self.adapters.check_name(name, caller)
        with tempfile.TemporaryDirectory(dir=self.settings.home) as tmp:
            staged = Path(tmp) / "adapter"
            shutil.copytree(folder, staged)
            (staged / GGUF_FILE).unlink(missing_ok=True)  # ours is made from the weights
            if method == "lora" and ref.kind == "gguf":  # a folder base: transformers only
                from alicerce.tune.gguf_lora import convert

                convert(staged, model_path(ref, self.settings), staged / GGUF_FILE, name=name)
            return self.adapters.register(name, staged, Lineage(
                base, model_identity(base, self.settings), method, "imported", "",
                peft, {}), caller)

    def tune_eval(self, ref: str, *, against: str | None = None, caller: str = "local",
                  progress: EvalProgress | None = None) -> tuple[Run, Run]:
        """(candidate, incumbent): adapter `ref` and `against` (an adapter on the same base;
        default the frozen base) answering the rows `ref`'s training held out, scored
        with the answer metrics and stored as evaluation runs."""
        cand = self.adapters.get(ref, caller)
        try:
            run = self.tune_runs.get(cand.run_id, caller)
        except NotFoundError:
            raise InputError(f"{cand.ref} has no training run in this home to take its "
                             "held-out rows from",
                             hint="compare on a golden set (alicerce eval run --adapter), "
                                  "or label it with --no-gate") from None
        rows = load(run.data, "text" if run.config.method == "pretrain" else "chat")
        if rows.version != cand.data_version:
            raise InputError(f"{run.data} changed since {cand.ref} was trained on it, so its "
                             "held-out rows are gone",
                             hint="compare on a golden set: alicerce eval run --adapter")
        held = rows.split(run.config.eval_split, run.config.seed)[1]
        if not held or rows.kind == "text":
            raise InputError(f"{cand.ref} was trained without held-out answers",
                             hint="train with --eval-split 0.1 on chat rows")
        incumbent = self.adapters.get(against, caller) if against else None
        sides = [self._side(cand.base, incumbent), self._side(cand.base, cand)]
        out = []
        for side in sides:
            scored = score(side, held, f"{cand.name}-heldout", cand.data_version,
                           self.evals.runs.new_id(), self.settings.max_tokens, progress)
            self.evals.runs.save(scored)
            out.append(scored)
        return out[1], out[0]

    def promote_adapter(self, ref: str, label: str = "production", *, gated: bool = True,
                        max_drop: dict[str, float] | None = None, caller: str = "local",
                        progress: EvalProgress | None = None
                        ) -> tuple[AdapterVersion, GateResult | None]:
        """Point `label` at adapter `ref`; `gated`, only when it scores no worse on its
        held-out rows than what `label` points at now (or the frozen base)."""
        cand = self.adapters.get(ref, caller)
        now = self.adapters.labelled(cand.name, label, caller)
        result = None
        if gated and (now is None or now.version != cand.version):
            mine, theirs = self.tune_eval(cand.ref, against=now.ref if now else None,
                                          caller=caller, progress=progress)
            result = decide(mine, theirs, max_drop)
            if not result.passed:
                raise InputError(
                    f"{cand.ref} does not beat {now.ref if now else cand.base}: "
                    + "; ".join(c.reason for c in result.checks if not c.ok),
                    hint=f"runs {mine.id} vs {theirs.id} (alicerce eval compare); "
                         "--no-gate moves the label anyway")
        moved = self.adapters.label(cand.ref, label, caller)
        self.keys.audit(caller, "adapter.label", moved.ref, {
            "label": label, "from": now.version if now else None,
            "gate": [asdict(c) for c in result.checks] if result else None})
        return moved, result

    def tune_schedule(self, name: str, *, app: str | None = None, base: str | None = None,
                      config: TuneConfig | None = None, min_new: int = 20,
                      caller: str = "local", progress: Progress | None = None) -> Scheduled:
        """Continuous tuning, one round: when at least `min_new` rows of feedback arrived
        since `name`'s newest adapter, train on all the feedback so far, measure the new
        adapter against production (or the base) on its held-out rows, and label it
        staging if it passes the gate. Never production: a person promotes."""
        versions = [a for a in self.adapters.list(caller) if a.name == name]
        latest = versions[-1] if versions else None
        since = _epoch(latest.created_at) if latest else None
        fresh = len(from_feedback(self.traces, app, since).rows)
        if fresh < min_new:
            return Scheduled("skipped", f"{fresh} new row(s) of feedback since "
                             f"{latest.ref if latest else 'the start'}; {min_new} needed")
        data = self.settings.home / "tune" / "data" / f"{name}-{int(time.time())}.jsonl"
        from_feedback(self.traces, app).write(data)
        base = base or (latest.base if latest else None) or self._app_model(app)
        run = self.tune(data, name=name, base=base, config=config, caller=caller,
                        progress=progress)
        ref = str(run.result["adapter"])
        now = self.adapters.labelled(name, "production", caller)
        mine, theirs = self.tune_eval(ref, against=now.ref if now else None, caller=caller)
        result = decide(mine, theirs)
        if not result.passed:
            return Scheduled("rejected", "; ".join(c.reason for c in result.checks if not c.ok),
                             run.id, ref, (mine.id, theirs.id))
        self.promote_adapter(ref, "staging", gated=False, caller=caller)
        return Scheduled("staged", f"{ref} labelled staging: " + "; ".join(
            c.reason for c in result.checks), run.id, ref, (mine.id, theirs.id))

    def _app_model(self, app: str | None) -> str | None:
        version = self.app(app) if app else None
        if version is None or version.spec.get("kind") == "chain":
            return None
        return str(version.spec["model"]["name"])

    def _side(self, base: str, adapter: AdapterVersion | None) -> Side:
        gen = self.generator(base)
        identity = self.model_identity(gen)
        if adapter is None:
            return Side(base, identity, gen, {"model": base, "model_identity": identity,
                                              "adapter": None})
        check_adapter(adapter, base, identity)
        return Side(f"{base}:{adapter.ref}", f"{identity}+sha256:{adapter.hash}",
                    self.generator(base, adapter.ref),
                    {"model": base, "model_identity": identity, "adapter": adapter.ref,
                     "adapter_identity": f"sha256:{adapter.hash}"})

    def _train(self, run: TuneRun, path: Path, rows: TuneData, *, resume: bool,
               progress: Progress | None) -> TuneRun:
        from alicerce.generate.hf import load_base
        from alicerce.tune.train import train, wrap

        out = self.settings.home / "tune" / run.id
        try:
            tok, model = load_base(path)
            model = wrap(model, run.config)
            done = train(tok, model, run.config, rows.split(run.config.eval_split,
                                                            run.config.seed), out,
                         resume=resume, progress=progress, history=run.history,
                         on_log=lambda h: self.tune_runs.log(run.id, h))
        except KeyboardInterrupt:
            self.tune_runs.finish(run.id, "stopped", {}, "stopped by the user (Ctrl-C)")
            raise
        except AlicerceError as exc:
            self.tune_runs.finish(run.id, "failed", {}, exc.message)
            raise
        except (RuntimeError, ValueError, OSError, MemoryError) as exc:
            self.tune_runs.finish(run.id, "failed", {}, f"{type(exc).__name__}: {exc}")
            raise InputError(f"tuning run {run.id} failed: {exc}",
                             hint="`alicerce tune show` has its log; `alicerce tune resume "
                                  f"{run.id}` continues from the last checkpoint") from exc
        result: dict[str, Any] = {
            "steps": done.steps, "total_steps": done.total_steps,
            "stopped_early": done.stopped_early, "best_eval_loss": done.best_eval_loss,
            "trainable_params": done.trainable_params, "total_params": done.total_params,
            "seconds": round(done.seconds, 1), "peak_rss_mb": round(done.peak_rss_mb),
            "truncated_rows": done.truncated_rows}
        history = self.tune_runs.get(run.id, run.caller).history
        last = {k: v for h in history for k, v in h.items() if k != "step"}
        metrics: dict[str, Any] = {k: last[k] for k in ("eval_loss", "eval_token_accuracy",
                                                        "train_loss") if k in last}
        metrics.update({k: result[k] for k in ("best_eval_loss", "steps", "trainable_params",
                                               "seconds")})
        result["gguf"] = _to_gguf(run, done.out, path)
        adapter = self.adapters.register(run.name, done.out, Lineage(
            run.base, run.base_identity, run.config.method, run.id, run.data_version,
            run.config.model_dump(mode="json"), metrics), run.caller)
        shutil.rmtree(out, ignore_errors=True)  # registered: checkpoints are not needed
        result.update(adapter=adapter.ref, path=str(adapter.path))
        logged = self.tune_runs.get(run.id, run.caller)
        mlflow = self.track(lambda e: e.log_tune(logged, result))
        if mlflow:
            result["mlflow_run"] = mlflow
        self.tune_runs.finish(run.id, "done", result)
        return self.tune_runs.get(run.id, run.caller)


@dataclass(frozen=True)
class Scheduled:
    """What a round of continuous tuning did: skipped, rejected (trained, failed the
    gate, left unlabelled) or staged."""

    state: str
    reason: str
    run_id: str = ""
    adapter: str = ""
    eval_runs: tuple[str, str] = ("", "")  # (candidate, incumbent)


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _to_gguf(run: TuneRun, adapter: Path, base: Path) -> str:
    """Convert a LoRA adapter for llama.cpp inside its folder (so the registry's content
    hash covers it); what happened, for the run record."""
    if run.config.method not in ("lora", "pretrain"):
        return f"none: {run.config.method} adapters run on the transformers backend"
    from alicerce.tune.gguf_lora import convert

    try:
        convert(adapter, base, adapter / GGUF_FILE, name=run.name)
    except InputError as exc:
        return f"not converted: {exc.message}"
    return GGUF_FILE


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not set(name) <= _NAME_OK or not name[0].isalnum():
        raise InputError(f"invalid tuning name {name!r}",
                         hint="lower-case letters, digits, '-', '_' or '.', up to 64")


def _need_extra() -> None:
    missing = [m for m in ("torch", "transformers", "peft", "gguf")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"tuning needs {', '.join(missing)}",
                         hint="pip install torch==2.13.0 && pip install 'alicerce[tune]'")
