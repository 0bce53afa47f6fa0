"""Experiment tracking in MLflow: each app deployment, evaluation and tuning run becomes a run, so
teams that already use the MLflow UI see Alicerce's changes and scores beside their models.

Optional (`pip install 'alicerce[mlflow]'`, setting `mlflow = true`). The default backend is
SQLite in the home (`mlflow.db`, artifacts under `mlflow-artifacts/`), which `mlflow ui
--backend-store-uri sqlite:///HOME/mlflow.db` opens; `mlflow_tracking_uri` names any other
(an MLflow server's http URL, Postgres, ...). Runs are written with `MlflowClient` on an
explicit URI, never MLflow's process-global state, so nothing else in the process changes.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from alicerce.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from alicerce.apps.registry import AppVersion
    from alicerce.tune.runs import TuneRun

PARAM_CHARS = 6000  # MLflow's limit on a param value


class Experiments:
    def __init__(self, tracking_uri: str, artifacts: Path | None) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError("mlflow = true but MLflow is not installed",
                              hint="pip install 'alicerce[mlflow]', or set mlflow = false") \
                from None
        self.uri = tracking_uri
        self._artifacts = artifacts  # None: the tracking server decides
        self._client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)

    @classmethod
    def default(cls, home: Path) -> Experiments:
        return cls(f"sqlite:///{(home / 'mlflow.db').resolve()}", home / "mlflow-artifacts")

    def log_deploy(self, version: AppVersion) -> str:
        """A run for a new app version: the resolved spec as params and artifact."""
        spec = yaml.safe_dump(version.spec, sort_keys=True, allow_unicode=True)
        return self.log_run(
            f"alicerce/apps/{version.name}", version.ref,
            params=_flatten(version.spec),
            tags={"alicerce.kind": "deploy", "alicerce.app": version.name,
                  "alicerce.app_version": str(version.version),
                  "alicerce.app_hash": version.hash, "alicerce.created_by": version.created_by},
            texts={"spec.resolved.yaml": spec, "spec.source.yaml": version.source})

    def log_tune(self, run: TuneRun, result: dict[str, Any]) -> str:
        """A tuning run: its settings and lineage as params, every logged step's metrics as
        curves (MLflow's step axis), the result's figures as final metrics."""
        curves: dict[str, list[tuple[int, float]]] = {}
        for h in run.history:
            for k, v in h.items():
                if k != "step":
                    curves.setdefault(k, []).append((int(h["step"]), float(v)))
        return self.log_run(
            f"alicerce/tune/{run.name}", run.id,
            params={**run.config.model_dump(mode="json"), "base": run.base,
                    "base_identity": run.base_identity, "data": run.data,
                    "data_version": run.data_version, "rows_train": run.rows_train,
                    "rows_eval": run.rows_eval},
            metrics={k: float(v) for k, v in result.items()
                     if isinstance(v, int | float) and not isinstance(v, bool)},
            tags={"alicerce.kind": "tune", "alicerce.adapter": str(result.get("adapter", "")),
                  "alicerce.code_version": run.code_version},
            curves=curves)

    def log_run(self, experiment: str, run_name: str, *, params: dict[str, Any],
                metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
                texts: dict[str, str] | None = None,
                curves: dict[str, list[tuple[int, float]]] | None = None) -> str:
        """One finished run; returns its id. `curves` are metrics logged per step."""
        from mlflow.entities import Metric, Param

        exp = self._client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self._client.create_experiment(
            experiment, artifact_location=(self._artifacts / experiment.replace("/", "_"))
            .resolve().as_uri() if self._artifacts is not None else None)
        run = self._client.create_run(exp_id, run_name=run_name, tags=tags or {})
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        try:
            self._client.log_batch(
                run_id, params=[Param(_key(k), str(v)[:PARAM_CHARS]) for k, v in params.items()],
                metrics=[Metric(_key(k), float(v), now, 0) for k, v in (metrics or {}).items()]
                + [Metric(_key(k), v, now, step) for k, points in (curves or {}).items()
                   for step, v in points])
            for name, text in (texts or {}).items():
                self._client.log_text(run_id, text, name)
        except Exception:
            self._client.set_terminated(run_id, "FAILED")  # never left looking "running"
            raise
        self._client.set_terminated(run_id)
        return run_id

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        """The experiment's runs, newest first: id, name, params, metrics, tags."""
        exp = self._client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return [{"id": r.info.run_id, "name": r.info.run_name, "params": r.data.params,
                 "metrics": r.data.metrics, "tags": r.data.tags}
                for r in self._client.search_runs([exp.experiment_id],
                                                  order_by=["attributes.start_time DESC"])]


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . space : /; 'recall@5' becomes 'recall_at_5'."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested spec → 'retrieval.k': '5' (lists of scalars stay one JSON value)."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return {prefix: text}
