"""Serving logic between the routes and the core: who may do what, which app or model a
request names, decoding parameters from the wire, the cache, the queue, and metrics.

Routes stay thin: they parse, call one method here, and shape the response.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any, Literal

import anyio
import anyio.to_thread
import numpy as np
from prometheus_client.core import Metric

from alicerce.access.keys import SCOPES, ApiKey, Scope
from alicerce.access.sessions import Sessions
from alicerce.core.apps import AppRef
from alicerce.durations import duration_s
from alicerce.embed import EMBEDDING_MODELS, get_embedder
from alicerce.errors import AccessError, AlicerceError, InputError, NotFoundError
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import Context
from alicerce.guard.config import Guards
from alicerce.guard.config import build as build_guards
from alicerce.guard.raw import raw_guards
from alicerce.platform import Alicerce
from alicerce.refs import split_ref
from alicerce.server.background import Background
from alicerce.server.batches import Batches
from alicerce.server.cache import AnswerCache, Vector
from alicerce.server.embed_batch import EmbedBatcher
from alicerce.server.eval_jobs import EvalRunner
from alicerce.server.limits import Limiter, RateLimiter, SharedRateLimiter
from alicerce.server.metrics import Metrics, StoredResults, gauge
from alicerce.server.uploads import Uploads
from alicerce.server.wire import AppOptions, ChatRequest, Sampling
from alicerce.server.work import WorkQueue
from alicerce.store.leases import Leases
from alicerce.types import Answer, Message

log = logging.getLogger("alicerce.server")

# The caller when auth is off (loopback only): every scope, every collection, no limits.
LOCAL = ApiKey("local", "local (auth off)", tuple(s for s in SCOPES if s != "unguarded"),
               None, 10**9, 10**12, 0.0)


class Service:
    def __init__(self, alc: Alicerce) -> None:
        s = self.settings = alc.settings
        self.alc = alc
        self.metrics = Metrics(StoredResults(self.stored_metrics))
        alc.traces.on_failure = self.metrics.trace_failures.inc
        alc.on_answer = self.metrics.answered
        self.work = WorkQueue(s.llm_parallel, s.queue_size, s.queue_max_wait_s,
                              self.metrics.depth)
        self.metrics.queue_capacity.set(s.llm_parallel + s.queue_size)
        # Replicas sharing a PostgreSQL store share the counts too.
        self.limiter: Limiter = SharedRateLimiter(s.store) if s.store else RateLimiter()
        self.cache = AnswerCache(s.cache_size, s.cache_ttl_s,
                                 self._question_vector if s.semantic_cache else None,
                                 s.semantic_cache_threshold)
        self.embeddings = EmbedBatcher(alc, s.embed_batch_ms / 1000)
        self.ready = threading.Event()
        self.load_error = ""
        self.background = Background()
        self.uploads = Uploads(alc, self.cache.drop, self.background)
        self.batches = Batches(alc, self.work, self.limiter, self.spend, self.background)
        self.model_names = {m.name for m in alc.models() if m.installed}
        self.leases = Leases(alc.db_path)
        self.sessions = Sessions(alc.db_path)  # the console's sign-ins
        self.evaluations = EvalRunner(alc, self.background)
        self._raw_guards: Guards | None = None

    # -- start-up ----------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the default model and embedder before the first request needs them."""
        try:
            gen = self.alc.generator()
            gen.count_tokens("warm up")
            if self.settings.embedder in EMBEDDING_MODELS:
                self.alc.embed(["warm up"], kind="query")
            self.alc.warm_guards()
            self.ready.set()
        except AlicerceError as exc:
            self.load_error = str(exc)

    def adapter_loop(self, stop: threading.Event) -> None:
        """Every `adapter_poll_s`: reload the loaded models whose registered adapters
        changed, beside the running instance (Models.refresh_adapters)."""
        while not stop.wait(self.settings.adapter_poll_s):
            try:
                for swap in self.alc.refresh_adapters():
                    log.info("%s: %d adapters, %.1f s%s", swap.base, swap.adapters,
                             swap.seconds, f", failed: {swap.error}" if swap.error else "")
            except AlicerceError as exc:  # the registry unreadable for a moment: next time
                log.warning("adapter check failed: %s", exc)

    def monitor_loop(self, stop: threading.Event) -> None:
        """Every `monitor_interval_s`, for each app with traffic in the drift window: a
        drift run (settings drift_baseline / drift_window) and a continuous evaluation of
        `monitor_sample` of its new traces. One that cannot be made (too few traces yet)
        is logged, not fatal."""
        s = self.settings
        while not stop.wait(s.monitor_interval_s):
            # Replicas sharing a database take turns: the lease's holder runs, the rest skip.
            if not self.leases.take("monitor", s.monitor_interval_s * 1.5):
                continue
            since = time.time() - duration_s(s.drift_window, "drift_window")
            for app in self.alc.drift_runs.active_apps(since):
                try:
                    run = self.alc.drift(app, s.drift_baseline, s.drift_window)
                    log.info("drift %s: %s", app, "DRIFT" if run.drifted else "no drift")
                except AlicerceError as exc:
                    log.info("drift %s skipped: %s", app, exc)
                if s.monitor_sample:
                    try:
                        self.alc.monitor(app, sample=s.monitor_sample, window=s.drift_window,
                                         judge=s.monitor_judge)
                    except AlicerceError as exc:
                        log.warning("continuous evaluation of %s failed: %s", app, exc)

    def stored_metrics(self) -> list[Metric]:
        """Gauges of the newest drift run per app and evaluation run per app version."""
        detected = gauge("alicerce_drift_detected", "1 when the newest drift run flagged the "
                         "side", ["app", "side"])
        stat = gauge("alicerce_drift_statistic", "Each drift test's statistic (MMD², KS D, "
                     "PSI, OOV rate, topic shift)", ["app", "side", "test"])
        pval = gauge("alicerce_drift_p_value", "Each drift test's p-value",
                     ["app", "side", "test"])
        last = gauge("alicerce_drift_last_run_timestamp_seconds", "When drift last ran",
                     ["app"])
        for run in self.alc.drift_runs.latest():
            last.add_metric([run.app], run.at)
            for side in run.sides:
                detected.add_metric([run.app, side.side], float(side.drifted))
                for t in side.tests:
                    stat.add_metric([run.app, side.side, t.name], t.value)
                    if t.p_value is not None:
                        pval.add_metric([run.app, side.side, t.name], t.p_value)
        score = gauge("alicerce_eval_score", "Mean score of the newest evaluation run per app "
                      "version, kind (run, pairwise, redteam, online, fairness) and dataset",
                      ["app", "version", "kind", "dataset", "metric"])
        for r in self.alc.evals.runs.latest():
            version = "" if r.app_version is None else str(r.app_version)
            for metric, est in r.summary.items():
                if est.n:
                    score.add_metric([r.app, version, r.kind, r.dataset, metric], est.mean)
        return [detected, stat, pval, last, score]

    def readiness(self) -> tuple[bool, dict[str, str]]:
        checks = {"models": "loaded" if self.ready.is_set() else (self.load_error or "loading")}
        try:
            self.alc.store.collection("")  # one query: is the database there?
            checks["store"] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks["store"] = f"unreachable: {exc}"
        for swap in self.alc.swaps():  # a failed adapter reload: the old model still serves
            if swap.error:
                checks[f"adapters:{swap.base}"] = f"reload failed, serving the previous " \
                                                  f"adapters: {swap.error}"
        return self.ready.is_set() and checks["store"] == "ok", checks

    # -- access --------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> ApiKey:
        if not self.settings.auth:
            return LOCAL
        if not authorization:
            raise AccessError("no API key was sent",
                              hint="send 'Authorization: Bearer alc-...'; an admin creates "
                                   "keys with `alicerce keys create`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessError("the Authorization header must be 'Bearer <key>'",
                              hint="send 'Authorization: Bearer alc-...'")
        return self.alc.keys.verify(token.strip())

    def admit(self, key: ApiKey, scope: Scope, app: str | AppRef | None = None) -> None:
        """Scope, app/collection and rate limit checks, in that order. Ingest names a
        collection (which may not exist yet); every other scope names an app."""
        key.require(scope)
        if app is not None:
            if scope == "ingest":
                assert isinstance(app, str)
                key.require_collection(app)
            else:
                self.require_app(key, app)
        if key is not LOCAL:
            try:
                self.limiter.admit(key)
            except AlicerceError:
                self.metrics.rate_limited.labels("key").inc()
                raise

    def raw_guards(self, key: ApiKey) -> Guards:
        """The rails around a raw-model request: `raw_model_guards`, or the settings'
        defaults that fit a raw model; none for a key with the `unguarded` scope."""
        if not key.guarded:
            return Guards()
        if self._raw_guards is None:
            chosen = self.settings.raw_model_guards
            self._raw_guards = (raw_guards(self.alc.guards(None)) if chosen is None
                                else build_guards(chosen, self.settings))
        return self._raw_guards

    def spend(self, key: ApiKey, app: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.metrics.tokens.labels(app, "in").inc(prompt_tokens)
        self.metrics.tokens.labels(app, "out").inc(completion_tokens)
        if key is not LOCAL:
            self.limiter.spend(key, prompt_tokens + completion_tokens)

    def require_app(self, key: ApiKey, app: str | AppRef) -> None:
        """A key restricted by name may use a deployed app it names (the app is the unit
        of access: it answers from its own collections), or any app whose collections it
        may all read."""
        if key.collections is None:
            return
        name = split_ref(app.ref if isinstance(app, AppRef) else app)[0]
        if name in key.collections and self.alc.apps.exists(name):
            return
        colls = self.alc.app_collections(app)
        if not colls:  # a chain app that reads no collection: only keys that name it
            key.require_collection(name)
        for coll in colls:
            key.require_collection(coll)

    def may_see_trace(self, key: ApiKey, app: str, caller: str) -> None:
        """Own traces with the ask scope; anyone's with admin or read; never an app's the
        key may not use (an app deleted since falls back to its name as a collection)."""
        if app in self.model_names or app in self.settings.models:
            key.require_models()  # a raw-model trace
        else:
            try:
                self.require_app(key, app)
            except NotFoundError:
                key.require_collection(app)
        if key.id != caller:
            key.require("read")

    def kind(self, name: str) -> Literal["app", "model"]:
        """Whether `model` in a request names an app (deployed, or a collection answered with
        the defaults) or a raw model; NotFoundError otherwise."""
        base = split_ref(name)[0]
        if self.alc.apps.exists(base) or self.alc.store.collection(name) is not None:
            return "app"
        if self._model(name) or self._model(name.partition(":")[0]):
            return "model"  # a model, or `MODEL:ADAPTER` (checked with the key: `adapted`)
        raise NotFoundError(f"no app or model named {name!r}",
                            hint="GET /v1/models lists the apps and models this key can use")

    def _model(self, name: str) -> bool:
        return name in self.model_names or name in self.settings.models

    def adapted(self, key: ApiKey, name: str) -> tuple[str, str | None]:
        """(model, adapter NAME@N or None) a raw request's `model` names: vLLM's convention,
        an adapter is asked for as `BASE:ADAPTER` (`qwen-0.5b:rh-style@2`)."""
        if self._model(name):
            return name, None
        base, _, ref = name.partition(":")
        caller = "admin" if "admin" in key.scopes else key.id
        return base, self.alc.serve_adapter(ref, base, caller)

    def adapters(self, key: ApiKey) -> list[tuple[str, str]]:
        """(`BASE:NAME@N` and `BASE:NAME` for each version this key may be served, base)."""
        caller = "admin" if "admin" in key.scopes else key.id
        models = [m for m in [*self.model_names, *self.settings.models] if self._model(m)]
        return self.alc.served_adapters(caller, list(dict.fromkeys(models)))

    def apps(self, key: ApiKey) -> list[str]:
        out = []
        for name in self.alc.app_names():
            try:
                self.require_app(key, name)
                out.append(name)
            except AlicerceError:
                continue
        return out

    # -- decoding ------------------------------------------------------------------------
    def decoding(self, req: Sampling, app: str | AppRef | None = None, *,
                 logprobs: bool = False,
                 top_logprobs: int = 0, fmt: str | None = None,
                 schema: dict[str, Any] | None = None) -> DecodingParams:
        """The request's parameters over `app`'s decoding (a deployed app) or the defaults."""
        values: dict[str, Any] = {k: v for k, v in {
            "max_tokens": req.max_completion_tokens or req.max_tokens,
            "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
            "min_p": req.min_p, "repetition_penalty": req.repetition_penalty,
            "presence_penalty": req.presence_penalty,
            "frequency_penalty": req.frequency_penalty, "seed": req.seed,
            "num_beams": req.num_beams, "length_penalty": req.length_penalty,
            "early_stopping": req.early_stopping,
            "stop": [req.stop] if isinstance(req.stop, str) else req.stop,
            "format": fmt, "json_schema": schema}.items() if v is not None}
        values["n"] = req.n
        if logprobs:
            values["logprobs"], values["top_logprobs"] = True, top_logprobs
        cap = self.settings.max_tokens_cap
        if values.get("max_tokens", 0) > cap:
            raise InputError(f"max_tokens {values['max_tokens']} is over this server's cap "
                             f"of {cap}", hint=f"ask for at most {cap} (setting max_tokens_cap)")
        return self.alc.decoding(values, app)

    def chat_decoding(self, req: ChatRequest, app: str | AppRef | None = None
                      ) -> DecodingParams:
        fmt, schema = req.format, None
        if req.response_format is not None and req.response_format.type != "text":
            fmt = "json"
            if req.response_format.type == "json_schema":
                if req.response_format.json_schema is None:
                    raise InputError("response_format json_schema needs its 'json_schema' "
                                     "object", hint='{"type": "json_schema", "json_schema": '
                                                    '{"name": "...", "schema": {...}}}')
                schema = req.response_format.json_schema.schema_
        return self.decoding(req, app, logprobs=req.logprobs,
                             top_logprobs=req.top_logprobs or 0,
                             fmt=fmt, schema=schema)

    # -- answers -------------------------------------------------------------------------
    def app_options(self, opts: AppOptions) -> dict[str, Any]:
        return {k: v for k, v in {"filters": opts.filters, "k": opts.k, "mode": opts.mode,
                                  "step_back": opts.step_back or None,
                                  "extractiveness": opts.extractiveness}.items()
                if v is not None}

    def _lookup(self, key: ApiKey, app: AppRef, model: str | None, params: DecodingParams,
                options: dict[str, Any], history: Sequence[Message],
                question: str) -> tuple[str, tuple[dict[str, Any] | None, str]]:
        """(the cache context of this request, the cache's answer): one trip to a thread."""
        context = AnswerCache.context(app=app.ref,
                                      versions=self.alc.answer_versions(app, model),
                                      params=params.as_dict(), options=options,
                                      scope=key.scope_id,
                                      history=[(m.role, m.content) for m in history])
        hit, kind = self.cache.get(context, question)
        if hit is not None and kind == "semantic":
            # Only questions the input rails left as they were are cached, so an exact hit
            # is one too; a similar question is not: it may carry a CPF or an injection.
            guards = self.alc.guards(app.version)
            if guards.input:
                out = guards.input.run(question, Context(question=question))
                if out.blocked is not None or out.text != question:
                    return context, (None, "semantic")
        return context, (hit, kind)

    async def answer(self, key: ApiKey, ref: str | AppRef, messages: Sequence[Message],
                     params: DecodingParams, options: dict[str, Any], *,
                     model: str | None = None, use_cache: bool = True
                     ) -> AsyncIterator[str | dict[str, Any]]:
        """Text pieces, then the answer as a dict (AskResponse's fields).

        Errors in the request surface before the first item, so routes can still answer 4xx.
        """
        started = time.perf_counter()
        question, history = messages[-1].content, list(messages[:-1])
        context = ""
        target = await anyio.to_thread.run_sync(self.alc.resolve_app, ref)
        app, spec = target.ref, target.version
        if use_cache and self.cache.enabled and (spec is None or spec.spec["cache"]["enabled"]):
            context, (hit, kind) = await anyio.to_thread.run_sync(
                self._lookup, key, target, model, params, options, history, question)
            self.metrics.cache.labels(kind or "exact", "hit" if hit else "miss").inc()
            if hit is not None:
                tid = self.alc.traces.record(
                    spec.name if spec else app, key.id, question, answer=hit, spans=[{
                        "name": "cache", "start_ms": 0.0,
                        "ms": round((time.perf_counter() - started) * 1000, 3),
                        "attrs": {"kind": kind, "first_trace": hit["trace_id"],
                                  "answer": hit["answer"]}}],
                    lineage=hit["versions"], latency_ms=(time.perf_counter() - started) * 1000,
                    app_version=spec.version if spec else None)
                self.metrics.answers.labels(spec.name if spec else app,
                                            str(spec.version) if spec else "",
                                            "answered").inc()
                yield hit["answer"]
                yield {**hit, "cached": True, "trace_id": tid}
                return
        opts = {**options, "model": model, "params": params, "caller": key.id}

        def make() -> Any:
            return self.alc.ask_messages(messages, target, stream=True, **opts)

        first = True
        async for item in self.work.iterate(make):
            if isinstance(item, Answer):
                out = answer_dict(item)
                self.spend(key, app, item.usage.prompt_tokens, item.usage.completion_tokens)
                if (context and not item.abstained and not item.blocked
                        and not item.redactions and item.question == question):
                    ttl = spec.spec["cache"]["ttl_s"] if spec is not None else None
                    await anyio.to_thread.run_sync(self.cache.put, context, app, question, out,
                                                   ttl)
                yield out
            else:
                if first:
                    self.metrics.ttft.labels(app).observe(time.perf_counter() - started)
                    first = False
                yield item

    async def chat_turn(self, key: ApiKey, ref: AppRef, question: str, params: DecodingParams,
                        options: dict[str, Any], model: str | None,
                        conversation_id: str) -> AsyncIterator[str | dict[str, Any]]:
        """A turn of a stored conversation (native ask with conversation_id)."""
        opts = {**options, "model": model, "params": params, "caller": key.id}
        cid = [conversation_id]

        def make() -> Any:
            cid[0], stream = self.alc.chat(question, ref, conversation_id, stream=True, **opts)
            return stream

        async for item in self.work.iterate(make):
            if isinstance(item, Answer):
                self.spend(key, ref.ref, item.usage.prompt_tokens, item.usage.completion_tokens)
                yield {**answer_dict(item), "conversation_id": cid[0]}
            else:
                yield item

    # -- embeddings ----------------------------------------------------------------------
    def _question_vector(self, question: str) -> Vector:
        """The semantic cache's view of a question: the configured embedder, query form."""
        embedder = get_embedder(self.settings.embedder, self.settings)
        return np.asarray(embedder.embed_queries([question])[0], dtype=np.float32)

def answer_dict(a: Answer) -> dict[str, Any]:
    return {"answer": a.text, "abstained": a.abstained, "language": a.language,
            "trace_id": a.trace_id, "standalone_question": a.standalone_question,
            "citations": [{"n": c.n, "title": c.title, "section": c.section, "page": c.page,
                           "source": c.source, "doc_key": c.doc_key, "chunk_id": c.chunk_id,
                           "score": c.score} for c in a.citations],
            "timings": a.timings, "usage": asdict(a.usage),
            "versions": dict(a.versions), "cached": False, "blocked": a.blocked,
            "guards": list(a.guards), "redactions": dict(a.redactions)}
