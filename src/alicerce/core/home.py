"""The state of one home: settings, stores and registries, opened once and closed together;
MLflow tracking, evaluation runs and drift runs created on first use."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from alicerce.access.keys import KeyStore
from alicerce.apps.registry import AppRegistry, AppVersion
from alicerce.batch.jobs import BatchJobs
from alicerce.chains.chat import Conversations
from alicerce.config import Settings
from alicerce.core.chain_apps import ChainApps
from alicerce.datasets import Dataset, load, sample
from alicerce.evaluate.dataset_registry import DatasetRegistry
from alicerce.evaluate.eval_jobs import EvalJobs
from alicerce.evaluate.runner import Evaluator
from alicerce.generate import Generator
from alicerce.generate.pool import BasePool
from alicerce.guard.canary import new_canary
from alicerce.ingest.jobs import IngestJobs
from alicerce.observe.drift_runs import (
    DriftRuns,
)
from alicerce.observe.experiments import Experiments
from alicerce.observe.otlp import OtlpExport
from alicerce.observe.trace_records import TraceSettings
from alicerce.observe.traces import Traces
from alicerce.prompts.builtin import BUILTINS
from alicerce.prompts.registry import PromptRegistry
from alicerce.retrieve.search import QueryEncoder
from alicerce.store.base import Store
from alicerce.store.db import private_dir
from alicerce.store.migrate import Progress
from alicerce.store.sqlite import SQLiteStore
from alicerce.tune.registry import AdapterRegistry
from alicerce.types import Answer

if TYPE_CHECKING:
    from alicerce.core.migration import Migration
    from alicerce.platform import Alicerce

log = logging.getLogger("alicerce")

# Nothing here may reach the network at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def open_store(settings: Settings) -> Store:
    """PostgreSQL when `store` names one, else SQLite in the home."""
    hnsw = {"connectivity": settings.hnsw_connectivity,
            "expansion_add": settings.hnsw_expansion_add,
            "expansion_search": settings.hnsw_expansion_search}
    if settings.store:
        from alicerce.store.postgres import PostgresStore

        return PostgresStore(settings.store, hnsw, settings.exact_search_limit,
                             settings.store_pool_size)
    return SQLiteStore(settings.home, hnsw, settings.exact_search_limit)


class Home:
    """A home directory of collections, apps, prompts, traces and keys."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        private_dir(settings.home)
        # The registries' database: the same PostgreSQL as the store, else SQLite in the home.
        self.db_path: Path | str = settings.store or settings.home / "alicerce.db"
        self._encoders: dict[str, QueryEncoder] = {}
        self._generators: dict[str, Generator] = {}  # use_generator's
        self._loaded: dict[str, Generator] = {}  # remote models by name
        self._pools: dict[str, BasePool] = {}  # local models, swapped as adapters change
        self._adapter_paths: dict[str, Path] = {}  # NAME@N -> its GGUF (versions are immutable)
        self.prompts = PromptRegistry(self.db_path, BUILTINS)
        self.conversations = Conversations(self.db_path)
        self.keys = KeyStore(self.db_path)
        self.traces = Traces(self.db_path, TraceSettings(
            settings.trace_redact, settings.trace_keep_days, settings.trace_keep_count),
            OtlpExport(settings.otlp_endpoint, settings.otlp_headers)
            if settings.otlp_endpoint else None)
        self.apps = AppRegistry(self.db_path)
        self.adapters = AdapterRegistry(self.db_path, settings.home / "adapters")
        self.jobs = IngestJobs(self.db_path, settings.home / "uploads")
        self.chains = ChainApps(cast("Alicerce", self))
        self.batches = BatchJobs(self.db_path)
        self.datasets = DatasetRegistry(self.db_path)
        self.eval_jobs = EvalJobs(self.db_path)
        self._evals: Evaluator | None = None
        self._drift: DriftRuns | None = None
        self._app_cache: dict[tuple[str, int], AppVersion] = {}
        self._identities: dict[str, str] = {}
        # Appended to system prompts when an app has the canary rail; random per process,
        # so no document or user can know it in advance.
        self.canary = new_canary()
        # Called with (app, app version, answer) for every answer: the server's metrics.
        self.on_answer: Callable[[str, int | None, Answer], None] | None = None
        self.experiments: Experiments | None = None
        if settings.mlflow:
            self.experiments = (Experiments(settings.mlflow_tracking_uri, None)
                                if settings.mlflow_tracking_uri
                                else Experiments.default(settings.home))

    @classmethod
    def open(cls, home: str | Path | None = None, settings: Settings | None = None,
             **overrides: Any) -> Self:
        """Open (creating if needed) the home in `settings`, or `home` with default settings."""
        if settings is None:
            settings = Settings.load(home=home, **overrides)
        elif home is not None or overrides:  # re-validate the combination
            settings = Settings.load(**{**settings.model_dump(), "home": home or settings.home,
                                        **overrides})
        return cls(settings)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.prompts.close()
        self.conversations.close()
        self.keys.close()
        self.traces.close()
        self.apps.close()
        self.adapters.close()
        self.jobs.close()
        self.batches.close()
        self.datasets.close()
        self.eval_jobs.close()
        if self._evals is not None:
            self._evals.runs.close()
        if self._drift is not None:
            self._drift.close()
        self.store.close()

    def track(self, log_run: Callable[[Experiments], str]) -> str | None:
        """Log to MLflow when it is on; the run id. A tracking failure is logged, not raised:
        what it records (a deploy, an evaluation) is already done and kept."""
        if self.experiments is None:
            return None
        try:
            return log_run(self.experiments)
        except Exception as exc:  # MLflow raises many types (SQL, HTTP, filesystem)
            log.warning("not logged to MLflow at %s: %s", self.experiments.uri, exc)
            return None

    @property
    def evals(self) -> Evaluator:
        """Evaluation runs, comparisons, gates, pairwise judgements, synthetic datasets
        (docs/evaluation.md)."""
        if self._evals is None:
            self._evals = Evaluator(cast("Alicerce", self))
        return self._evals

    @property
    def drift_runs(self) -> DriftRuns:
        """Stored drift runs and the embedding memo (docs/monitoring.md)."""
        if self._drift is None:
            self._drift = DriftRuns(self.db_path)
        return self._drift

    def dataset(self, ref: str | Path, *, limit: int | None = None, seed: int | None = None,
                filter_fields: Sequence[str] = ()) -> Dataset:
        """A dataset file, or a stored dataset (`NAME`, `NAME@N`) when no such file exists."""
        name = str(ref).partition("@")[0]
        if not Path(ref).exists() and self.datasets.exists(name):
            return sample(self.datasets.get(str(ref)), limit, seed)
        return load(ref, filter_fields=filter_fields, limit=limit, sample_seed=seed)

    def migrate(self, to: str, source: str | None = None, names: Sequence[str] | None = None,
                progress: Progress | None = None) -> Migration:
        """Copy this home's state from `source` to `to`: each is "sqlite" (this home's file)
        or a PostgreSQL URL; `source` defaults to the store this home uses. With `names`,
        only those collections (and no registry tables)."""
        from alicerce.core.migration import migrate

        return migrate(self, to, source, names, progress)
