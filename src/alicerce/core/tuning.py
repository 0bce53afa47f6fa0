"""Tuning: train an adapter (or a whole small model) on a home's data, with a run record
that survives a crash and resumes from the last checkpoint. Needs `alicerce[tune]`."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from alicerce.core.governance import Governance
from alicerce.errors import AlicerceError, InputError
from alicerce.generate.models import model_identity, model_path, resolve
from alicerce.tune.config import TuneConfig
from alicerce.tune.data import TuneData, load
from alicerce.tune.registry import AdapterRegistry, Lineage
from alicerce.tune.runs import Progress, TuneRun, TuneRuns
from alicerce.version import __version__

_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class Tuning(Governance):
    """Training runs on this home's models and data."""

    _tune_runs: TuneRuns | None = None
    _adapters: AdapterRegistry | None = None

    @property
    def tune_runs(self) -> TuneRuns:
        if self._tune_runs is None:
            self._tune_runs = TuneRuns(self.store.path)
        return self._tune_runs

    @property
    def adapters(self) -> AdapterRegistry:
        if self._adapters is None:
            self._adapters = AdapterRegistry(self.store.path, self.settings.home / "adapters")
        return self._adapters

    def close(self) -> None:
        for part in (self._tune_runs, self._adapters):
            if part is not None:
                part.close()
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

    def _train(self, run: TuneRun, path: Path, rows: TuneData, *, resume: bool,
               progress: Progress | None) -> TuneRun:
        from alicerce.tune.train import load_base, train, wrap

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
