"""Ingestion's embedding spread over a Ray cluster (setting `executor`, the ray extra).

Embedding is what makes a large ingest slow; reading, chunking and writing are not. So the
ingest itself runs where it was started (one writer, each batch one transaction, the same
resume rules as a local run), and only the passages go to the cluster: `workers` Ray actors,
each loading the embedder once, embed shards of each batch in parallel and the results come
back in order. A worker that dies is restarted by Ray and its shard is run again
(`max_restarts`, `max_task_retries`), so every chunk is embedded and written exactly once.
Queries stay local: one short text is not worth a round trip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import numpy as np

from alicerce.config import Settings
from alicerce.embed.base import Embedder, Vectors
from alicerce.errors import ConfigError

SHARD = 32  # texts per task: small enough to keep every worker busy on one batch
_POOLS: dict[tuple[Any, ...], Any] = {}  # workers by what they were made for, per process
_LOCK = threading.Lock()
T = TypeVar("T")


class _Worker:
    """One Ray actor: the embedder, loaded once."""

    def __init__(self, family: str, settings: dict[str, Any]) -> None:
        from alicerce.embed import get_embedder

        self._embedder = get_embedder(family, Settings(**settings))

    def embed(self, texts: list[str]) -> Vectors:
        return self._embedder.embed_passages(texts)

    def pid(self) -> int:
        import os

        return os.getpid()


def connect(address: str) -> Any:
    """The `ray` module, connected to the cluster at `address` (once per process)."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the Ray executor needs the ray extra",
                          hint="pip install 'alicerce[ray]', or leave `executor` empty") from exc
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}",
                              hint="start it with `ray start --head`, and give its address "
                                   "(HOST:6379, or ray://HOST:10001 for Ray Client)") from exc
    return ray


class RayEmbedder:
    """Passages embedded by the cluster's workers; everything else from `local`."""

    def __init__(self, local: Embedder, family: str, settings: Settings) -> None:
        ray = connect(settings.executor)
        self.local, self.name, self.dim = local, local.name, local.dim
        cpus = settings.executor_cpus
        worker = ray.remote(num_cpus=cpus, max_restarts=-1, max_task_retries=-1)(_Worker)
        # Each worker embeds on the cores it reserved: the cluster's parallelism is the
        # workers, and threads beyond a worker's share would fight over the same cores.
        dump = {**settings.model_dump(mode="json"), "embed_threads": cpus, "executor": ""}
        self.workers = [worker.remote(family, dump) for _ in range(settings.executor_workers)]
        self._ray = ray

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        from ray.util import ActorPool

        shards = [list(texts[i : i + SHARD]) for i in range(0, len(texts), SHARD)]
        parts = ActorPool(self.workers).map(lambda w, s: w.embed.remote(s), shards)
        return np.vstack(list(parts)).astype(np.float32)

    def close(self) -> None:
        release(self, self._ray, self.workers)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.local.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return self.local.count_tokens(text)


def pooled(key: tuple[Any, ...], make: Callable[[], T]) -> T:
    """One set of workers per key and process: each worker loads its models once."""
    with _LOCK:
        if key not in _POOLS:
            _POOLS[key] = make()
        return cast(T, _POOLS[key])


def release(pool: object, ray: Any, workers: Sequence[Any]) -> None:
    """Stop a pool's workers (their reserved cores go back to the cluster)."""
    for w in workers:
        ray.kill(w)
    with _LOCK:
        for key in [k for k, v in _POOLS.items() if v is pool]:
            del _POOLS[key]


def on_cluster(local: Embedder, family: str, settings: Settings) -> RayEmbedder:
    """`local`'s work spread over the cluster in `settings.executor` (once per process)."""
    return pooled(("embed", settings.executor, local.name, settings.executor_workers,
                   settings.executor_cpus), lambda: RayEmbedder(local, family, settings))
