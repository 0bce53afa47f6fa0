"""Alicerce: the one core API that the CLI (and later HTTP) layers call."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from alicerce import __version__
from alicerce.access.keys import KeyStore
from alicerce.apps.registry import AppRegistry, AppVersion, split_ref
from alicerce.apps.resolve import resolve as resolve_spec
from alicerce.apps.spec import parse as parse_spec
from alicerce.apps.spec import read as read_spec
from alicerce.chains.chat import Conversations, condense, recent
from alicerce.chains.language import detect
from alicerce.chains.rag import RagChain, RagRequest, Stream, interleave
from alicerce.chains.techniques import Example, Generation, run
from alicerce.config import EmbedderName, Extractiveness, SearchMode, Settings
from alicerce.embed import NEEDS, family, get_embedder
from alicerce.embed import available as available_embedders
from alicerce.embed.base import Embedder
from alicerce.errors import AlicerceError, ConfigError, InputError, NotFoundError
from alicerce.evaluate.online import OnlineEvaluation
from alicerce.evaluate.retrieval import EvalQuery, RetrievalReport, evaluate, score
from alicerce.evaluate.runner import Evaluator
from alicerce.evaluate.runs import Run
from alicerce.generate import Generator, get_generator
from alicerce.generate.models import ModelInfo, list_models
from alicerce.generate.models import model_identity as _identity
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import Context, Stage
from alicerce.guard.canary import new_canary
from alicerce.guard.config import Guards
from alicerce.guard.config import build as build_guards
from alicerce.guard.config import normalise as normalise_guards
from alicerce.guard.rails import Outcome, Rails
from alicerce.ingest.chunking import ChunkingConfig
from alicerce.ingest.jobs import IngestJobs
from alicerce.ingest.pipeline import Ingestor, Progress, max_bytes, parse_mapping
from alicerce.observe.drift_runs import (
    DriftRun,
    DriftRuns,
    baseline_sample,
    compare_samples,
    new_id,
)
from alicerce.observe.experiments import Experiments
from alicerce.observe.otlp import OtlpExport
from alicerce.observe.spans import Recorder
from alicerce.observe.traces import FeedbackFilter, Trace, Traces, TraceSettings
from alicerce.observe.windows import duration_s
from alicerce.prompts.builtin import BUILTINS
from alicerce.prompts.registry import PromptRegistry
from alicerce.prompts.template import PromptTemplate
from alicerce.retrieve.rerank import Reranker
from alicerce.retrieve.search import QueryEncoder, Searcher, SearchParams
from alicerce.store.base import BoostWeights, Filters, StoredCollection
from alicerce.store.sqlite import SQLiteStore
from alicerce.types import Answer, CollectionInfo, Hit, IngestReport, Message, Usage

log = logging.getLogger("alicerce")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Nothing here may reach the network at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


class Alicerce:
    """A home directory of collections: ingest documents, search them, evaluate retrieval."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SQLiteStore(
            settings.home,
            hnsw={"connectivity": settings.hnsw_connectivity,
                  "expansion_add": settings.hnsw_expansion_add,
                  "expansion_search": settings.hnsw_expansion_search},
            exact_search_limit=settings.exact_search_limit)
        self._encoders: dict[str, QueryEncoder] = {}
        self._generators: dict[str, Generator] = {}  # use_generator's
        self._loaded: dict[str, Generator] = {}  # resolved names, so lookups cost nothing
        self.prompts = PromptRegistry(self.store.path, BUILTINS)
        self.conversations = Conversations(self.store.path)
        self.keys = KeyStore(self.store.path)
        self.traces = Traces(self.store.path, TraceSettings(
            settings.trace_redact, settings.trace_keep_days, settings.trace_keep_count),
            OtlpExport(settings.otlp_endpoint, settings.otlp_headers)
            if settings.otlp_endpoint else None)
        self.apps = AppRegistry(self.store.path)
        self.jobs = IngestJobs(self.store.path, settings.home / "uploads")
        self._evals: Evaluator | None = None
        self._drift: DriftRuns | None = None
        self._app_cache: dict[tuple[str, int], AppVersion] = {}
        self._identities: dict[str, str] = {}
        self._guards: dict[str, Guards] = {}
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
             **overrides: Any) -> Alicerce:
        """Open (creating if needed) the home in `settings`, or `home` with default settings."""
        if settings is None:
            settings = Settings.load(home=home, **overrides)
        elif home is not None or overrides:  # re-validate the combination
            settings = Settings.load(**{**settings.model_dump(), "home": home or settings.home,
                                        **overrides})
        return cls(settings)

    def __enter__(self) -> Alicerce:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.prompts.close()
        self.conversations.close()
        self.keys.close()
        self.traces.close()
        self.apps.close()
        self.jobs.close()
        if self._evals is not None:
            self._evals.runs.close()
        if self._drift is not None:
            self._drift.close()
        self.store.close()

    # -- collections ---------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        return self.store.collections()

    def _collection(self, name: str) -> StoredCollection:
        coll = self.store.collection(name)
        if coll is None:
            known = ", ".join(c.name for c in self.store.collections()) or "none yet"
            raise NotFoundError(f"no collection named {name!r} in {self.settings.home}",
                                hint=f"ingest into it first; existing: {known}")
        return coll

    def embedder_for(self, coll: StoredCollection) -> Embedder:
        """The embedder a collection was built with (not the one configured for new ones)."""
        embedder = get_embedder(family(coll.embedder), self.settings)
        if embedder.name != coll.embedder:
            raise ConfigError(
                f"collection {coll.name!r} was embedded with {coll.embedder}, but the "
                f"installed backend is {embedder.name}",
                hint="install the matching version or re-ingest into a new collection")
        return embedder

    def versions(self, collection: str) -> list[dict[str, Any]]:
        return self.store.versions(self._collection(collection))

    # -- ingestion -----------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path], collection: str, *, sync: bool = False,
               text_field: str | None = None, id_field: str | None = None,
               title_field: str | None = None,
               metadata_fields: str | Sequence[str] | None = None,
               chunk_tokens: int | None = None, chunk_overlap: int | None = None,
               embedder: EmbedderName | None = None, redact_pii: bool | None = None,
               progress: Progress | None = None) -> IngestReport:
        """Add or update files in `collection`; see docs/ingestion.md for the rules.

        `embedder`, `chunk_tokens`, `chunk_overlap` and `redact_pii` (store chunk texts
        with personal data replaced, docs/guardrails.md) apply when the collection is
        created (default: the settings, no redaction); an existing collection keeps its own.
        """
        check_collection_name(collection)
        if not paths:
            raise InputError("nothing to ingest", hint="give one or more files or folders")
        mapping = parse_mapping(text_field, id_field, title_field, metadata_fields)
        coll = self.store.collection(collection)
        if coll is None:
            model = get_embedder(embedder or self.settings.embedder, self.settings)
            cfg = replace(_chunking(chunk_tokens or self.settings.chunk_tokens,
                                    self.settings.chunk_overlap if chunk_overlap is None
                                    else chunk_overlap), redact_pii=bool(redact_pii))
            coll = self.store.create_collection(collection, model.name, model.dim,
                                                cfg.as_dict())
        else:
            model = self.embedder_for(coll)
            if embedder is not None and family(coll.embedder) != embedder:
                raise InputError(
                    f"collection {collection!r} is embedded with {coll.embedder}",
                    hint="leave out --embedder, or ingest into a new collection")
            cfg = ChunkingConfig(int(coll.chunking["tokens"]), int(coll.chunking["overlap"]),
                                 bool(coll.chunking.get("redact_pii", False)))
            if redact_pii is not None and redact_pii != cfg.redact_pii:
                raise InputError(
                    f"collection {collection!r} was created "
                    f"{'with' if cfg.redact_pii else 'without'} PII redaction; it is fixed "
                    "when a collection is created",
                    hint="leave out --redact-pii, or ingest into a new collection")
            asked = (chunk_tokens or cfg.tokens, cfg.overlap if chunk_overlap is None
                     else chunk_overlap)
            if asked != (cfg.tokens, cfg.overlap):
                raise InputError(
                    f"collection {collection!r} is chunked with {cfg.tokens} tokens and "
                    f"{cfg.overlap} overlap; chunking is fixed when a collection is created",
                    hint="leave out --chunk-tokens/--chunk-overlap, or ingest into a new "
                         "collection")
        ingestor = Ingestor(self.store, model, coll, cfg,
                            max_bytes(self.settings.max_file_mb), progress)
        report = ingestor.run([Path(p) for p in paths], mapping, sync)
        self.store.flush()
        return report

    # -- search --------------------------------------------------------------------------
    def search(self, query: str, collection: str, *, mode: SearchMode | None = None,
               k: int | None = None, alpha: float | None = None,
               filters: Filters | None = None, reranker: Reranker | None = None) -> list[Hit]:
        """Best chunks for `query`; settings give the defaults for anything not passed."""
        coll = self._collection(collection)
        return self._searcher(coll).search(coll, query, self._params(mode, k, alpha), filters,
                                           reranker)

    def _params(self, mode: SearchMode | None, k: int | None,
                alpha: float | None) -> SearchParams:
        s = self.settings
        return SearchParams(mode=mode or s.search_mode, k=s.search_k if k is None else k,
                            alpha=s.alpha if alpha is None else alpha, rrf_k=s.rrf_k,
                            candidates=s.candidates,
                            boosts=BoostWeights(s.boost_title, s.boost_section, s.boost_text))

    def _searcher(self, coll: StoredCollection) -> Searcher:
        if coll.embedder not in self._encoders:
            self._encoders[coll.embedder] = QueryEncoder(self.embedder_for(coll))
        return Searcher(self.store, self._encoders[coll.embedder])

    # -- evaluation ----------------------------------------------------------------------
    def evaluate_retrieval(self, collection: str, queries: Sequence[EvalQuery], *, k: int = 5,
                           mode: SearchMode | None = None,
                           alpha: float | None = None) -> RetrievalReport:
        """Hit rate, MRR, recall@k and nDCG@10 over `queries` (relevant = same document id)."""
        coll = self._collection(collection)
        searcher = self._searcher(coll)
        depth = max(k, 10)
        params = self._params(mode, depth * 3, alpha)

        def rank(q: EvalQuery) -> list[str]:
            hits = searcher.search(coll, q.question, params, q.filters or None)
            return list(dict.fromkeys(h.doc_key for h in hits))[:depth]

        started = time.perf_counter()
        results = evaluate(queries, rank, k)
        report = RetrievalReport(k, score(results, k), results, time.perf_counter() - started)
        history = self.store.versions(coll)
        self.track(lambda ex: ex.log_run(
            f"alicerce/eval/{coll.name}", f"retrieval {coll.name}@{history[-1]['id']}",
            params={"collection": coll.name, "collection_version": history[-1]["id"],
                    "embedder": coll.embedder, "mode": params.mode, "alpha": params.alpha,
                    "k": k, "queries": report.queries},
            metrics=report.metrics,
            tags={"alicerce.kind": "eval.retrieval", "alicerce.collection": coll.name}))
        return report

    @property
    def evals(self) -> Evaluator:
        """Evaluation runs, comparisons, gates, pairwise judgements, synthetic datasets
        (docs/evaluation.md)."""
        if self._evals is None:
            self._evals = Evaluator(self)
        return self._evals

    # -- monitoring ----------------------------------------------------------------------
    @property
    def drift_runs(self) -> DriftRuns:
        """Stored drift runs and the embedding memo (docs/monitoring.md)."""
        if self._drift is None:
            self._drift = DriftRuns(self.store.path)
        return self._drift

    def drift(self, app: str, baseline: str, window: str = "24h", *,
              sides: Sequence[str] = ("input", "output"), sample: int = 500,
              alpha: float = 0.01, seed: int = 0, limit: int = 100_000) -> DriftRun:
        """Skew (`baseline` dataset:PATH, the eval set) or drift (window:7d, the traces of
        the week before) of an app's production traffic in the last `window`, on the
        questions and the answers; the run is stored with the app's drift history."""
        name = split_ref(app)[0]
        window_s = duration_s(window, "--window")
        if not 10 <= sample <= 5000:
            raise InputError(f"sample must be 10..5000 texts per side, got {sample}",
                             hint="e.g. --sample 500")
        if not 0 < alpha < 1:
            raise InputError(f"alpha must be between 0 and 1, got {alpha}", hint="e.g. 0.01")
        unknown = [s for s in sides if s not in ("input", "output")]
        if unknown or not sides:
            raise InputError(f"unknown side(s) {', '.join(unknown) or '(none)'}",
                             hint="use input, output or both")
        coll = self._collection(self.app_collections(app)[0])
        self.traces.flush()
        started, now = time.perf_counter(), time.time()
        runs = self.drift_runs
        current = runs.traces(name, now - window_s, now, limit)
        base = baseline_sample(runs, name, baseline, window_s, now, limit)
        reports = compare_samples(runs, self.embedder_for(coll), base, current,
                                  sample=sample, alpha=alpha, seed=seed, sides=sides)
        if not reports:
            raise InputError(
                f"too few texts to compare: {len(base.inputs)} in the baseline "
                f"({base.source}), {len(current.inputs)} in the last {window} for {name!r}",
                hint="each side needs at least 5; widen --window or the baseline, or check "
                     "--app names the app that served the traffic")
        run = DriftRun(new_id(), now, name, baseline, window, any(r.drifted for r in reports),
                       time.perf_counter() - started, reports,
                       {"baseline": base.source, "current": current.source})
        runs.save(run)
        return run

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


    # -- generation ----------------------------------------------------------------------
    def generator(self, model: str | None = None) -> Generator:
        """A loaded model (once per process): bundled name, [models.NAME], or .gguf path."""
        name = model or self.settings.generator
        if name not in self._generators and name not in self._loaded:
            self._loaded[name] = get_generator(name, self.settings)
        return self._generators.get(name) or self._loaded[name]

    def use_generator(self, name: str, generator: Generator) -> None:
        """Serve `name` with an object of your own (a plugin backend, or a test double)."""
        self._generators[name] = generator

    def models(self) -> list[ModelInfo]:
        """Bundled and configured models, then those registered with `use_generator`."""
        return list_models(self.settings) + [
            ModelInfo(name, "custom", gen.name, True, None, gen.context_size, "", None,
                      "registered in this process") for name, gen in self._generators.items()]

    def decoding(self, params: DecodingParams | dict[str, Any] | None = None,
                 app: str | None = None) -> DecodingParams:
        """Decoding parameters: the given ones over a deployed app's decoding, or over the
        settings' max_tokens and temperature."""
        if isinstance(params, DecodingParams):
            return params
        return self._decoding(params, self.app(app) if app else None)

    def _decoding(self, params: DecodingParams | dict[str, Any] | None,
                  version: AppVersion | None) -> DecodingParams:
        if isinstance(params, DecodingParams):
            return params
        base = version.spec["decoding"] if version else {
            "max_tokens": self.settings.max_tokens, "temperature": self.settings.temperature}
        return DecodingParams.build(**{**base, **(params or {})})

    def generate(self, text: str, *, technique: str = "zero-shot", model: str | None = None,
                 params: DecodingParams | dict[str, Any] | None = None,
                 instructions: str = "", examples: Sequence[Example] = (),
                 k: int = 0) -> Generation:
        """Apply a prompting technique to `text` (docs/generation.md lists them)."""
        self._check_text(text)
        embedder = get_embedder(self.settings.embedder, self.settings) if k else None
        gen, decoding = self.generator(model), self.decoding(params)
        started = time.perf_counter()
        out = run(technique, text, gen, self.prompts.get, decoding,
                  instructions=instructions, examples=examples, k=k, embedder=embedder)
        tid = self.trace_call(model or self.settings.generator, "local",
                              [Message("user", p) for p in out.prompts], decoding,
                              output=out.text, usage=out.usage,
                              latency_ms=(time.perf_counter() - started) * 1000,
                              question=text, technique=technique, steps=len(out.prompts))
        return replace(out, trace_id=tid)

    def trace_call(self, model: str, caller: str, messages: Sequence[Message],
                   params: DecodingParams, *, output: str = "", usage: Usage | None = None,
                   latency_ms: float = 0.0, ttft_ms: float | None = None, error: str = "",
                   question: str | None = None, **attrs: Any) -> str:
        """Trace a call to a model without retrieval (raw completions over HTTP, `generate`):
        one `generate` span with the prompt as sent, so every request is traceable."""
        gen = self.generator(model)
        span = {"name": "generate", "start_ms": 0.0, "ms": round(latency_ms, 3), "attrs": {
            "model": gen.name, "backend": gen.backend, "params": params.as_dict(),
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "output": output, "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "time_to_first_token_ms": ttft_ms, **attrs}}
        if question is None:
            question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        lineage = {"model": gen.name, "backend": gen.backend,
                   "model_identity": self.model_identity(gen), "adapter": None,
                   "software": f"alicerce {__version__}"}
        return self.traces.record(
            gen.name, caller, question, error=error, spans=[span], lineage=lineage,
            answer=None if error else {"answer": output, "abstained": False, "citations": []},
            latency_ms=latency_ms)

    def ask(self, question: str, app: str, **options: Any) -> Answer:
        """A grounded answer with citations; options as for `ask_stream`."""
        answer: Answer | None = None
        for item in self._rag(question, app, stream=False, **options):
            if isinstance(item, Answer):
                answer = item
        assert answer is not None
        return answer

    def ask_stream(self, question: str, app: str, **options: Any) -> Stream:
        """Yields answer text as generated, then the finished Answer.

        `app` is a deployed app (its labelled version: `name`, `name@N`, `name@label`) or a
        collection answered with the settings' defaults. Options override the app's: model,
        params (DecodingParams or dict), k, mode, filters (added to the app's), step_back,
        extractiveness, prompt (name[@version|label]), language, history, standalone,
        guards (False: the app's rails off, for red-team baselines), extra_collections
        (searched too: the red-team's planted documents).
        """
        return self._rag(question, app, stream=True, **options)

    def chat(self, message: str, app: str, conversation_id: str | None = None, *,
             stream: bool = False, **options: Any) -> tuple[str, Stream]:
        """One chat turn: (conversation id, stream of text then Answer); the turn is saved."""
        self._check_text(message)
        self.decoding(options.get("params"))  # bad input fails before any model call
        self.app_collections(app)
        caller = options.get("caller", "local")
        cid = self.conversations.resolve(app, conversation_id, caller)
        inner = self._follow_up(self.conversations.history(cid), message, app, stream,
                                options)

        def turn() -> Stream:
            for item in inner:
                if isinstance(item, Answer):
                    self.conversations.append(cid, app, item, caller)
                yield item
        return cid, turn()

    def ask_messages(self, messages: Sequence[Message], app: str, *,
                     stream: bool = False, **options: Any) -> Stream:
        """An answer to the last user message, earlier turns as history (OpenAI-style chat).

        System messages are not passed on: the app's prompt sets the rules.
        """
        if not messages or messages[-1].role != "user":
            raise InputError("the last message must be the user's question",
                             hint="end `messages` with {\"role\": \"user\", ...}")
        history = [m for m in messages[:-1] if m.role in ("user", "assistant")]
        self._check_text(messages[-1].content)
        self.decoding(options.get("params"))
        self.app_collections(app)
        return self._follow_up(history, messages[-1].content, app, stream, options)

    def _follow_up(self, history: Sequence[Message], message: str, app: str,
                   stream: bool, options: dict[str, Any]) -> Stream:
        spec = self.app(app)
        if spec is not None and "condense" not in spec.spec["chain"]:
            return self._rag(message, app, stream=stream, **options)
        rec = Recorder()
        gen = self.generator(options.get("model") or (spec.spec["model"]["name"] if spec
                                                      else None))
        lang = options.pop("language", None) or detect(message)
        kept = recent(history, self.settings.chat_history_tokens, gen.count_tokens)
        guards = self.guards(spec) if options.get("guards", True) else Guards()
        if kept and guards.input:
            # The condenser is a model call and a span: it must see the redacted message
            # and history (a client's history may carry personal data too). A blocked text
            # is left as it is; the chain refuses a blocked question before retrieval.
            message = _screened(guards, Message("user", message), lang).content
            kept = [_screened(guards, m, lang) for m in kept]
        standalone = message
        if kept:
            with rec.span("condense", question=message,
                          history=[m.content for m in kept]) as out:
                standalone, usage = condense(gen, self.prompts.get("condense-question"),
                                             kept, message, lang)
                out.update(output=standalone, prompt_tokens=usage.prompt_tokens,
                           completion_tokens=usage.completion_tokens)
        return self._rag(message, app, stream=stream, standalone=standalone,
                         language=lang, spans=rec, **options)

    # -- apps ----------------------------------------------------------------------------
    def deploy_app(self, source: str | Path, actor: str = "local") -> tuple[AppVersion, bool]:
        """Validate and resolve an app spec (YAML text or file), store it as a version:
        (the version, whether it is new). The first version of a name becomes production."""
        text = read_spec(source) if isinstance(source, Path) else source
        spec = parse_spec(text, str(source) if isinstance(source, Path) else "app spec")
        resolved = resolve_spec(spec, self.store, self.prompts, self.settings,
                                set(self._generators))
        version, created = self.apps.deploy(resolved, text, actor)
        if created:
            detail = {"hash": version.hash, "mlflow_run": self.track(
                lambda ex: ex.log_deploy(version))}
            self.keys.audit(actor, "app.deploy", version.ref, detail)
        return version, created

    def label_prompt(self, ref: str, label: str, actor: str = "local") -> PromptTemplate:
        """Point a prompt label at a version (audited: it changes what apps answer with)."""
        prompt = self.prompts.label(ref, label, actor)
        self.keys.audit(actor, "prompt.label", prompt.ref, {"label": label})
        return prompt

    def label_app(self, ref: str, label: str,
                  actor: str = "local") -> tuple[AppVersion, int | None]:
        """Point `label` at a version: (the version, the one the label left, if any)."""
        version, old = self.apps.label(ref, label, actor)
        self.keys.audit(actor, "app.label", version.ref, {"label": label, "from": old})
        return version, old

    def rollback_app(self, name: str, label: str = "production",
                     actor: str = "local") -> tuple[AppVersion, int]:
        version, left = self.apps.rollback(name, label, actor)
        self.keys.audit(actor, "app.rollback", version.ref, {"label": label, "from": left})
        return version, left

    def export_feedback(self, to: str | Path, *, app: str | None = None,
                        rating: FeedbackFilter = "any", min_stars: int | None = None,
                        max_stars: int | None = None, actor: str = "local") -> int:
        """Write rated answers as JSONL evaluation rows; the file is replaced only once
        every row is written, so a failed export leaves the old file whole."""
        rows = list(self.traces.export(app=app, rating=rating, min_stars=min_stars,
                                       max_stars=max_stars))
        _write_rows(Path(to), rows)
        self.keys.audit(actor, "feedback.export", str(to),
                        {"rows": len(rows), "app": app, "rating": rating})
        return len(rows)

    # -- continuous evaluation -----------------------------------------------------------
    def monitor(self, app: str, *, sample: float = 0.05, window: str = "24h",
                judge: bool = False, judge_model: str | None = None,
                limit: int = 1000) -> list[Run]:
        """Score a sample of the app's live traces (groundedness; with a judge the RAG
        triad) joined with their feedback, off the request path; one stored run of kind
        "online" per app version (docs/monitoring.md)."""
        j = self.evals.judge(judge_model) if judge or judge_model else None
        return OnlineEvaluation(self, j).run(app, sample=sample, window=window, limit=limit)

    def review_queue(self, app: str | None = None, limit: int = 100) -> list[tuple[Trace, str]]:
        """Traces waiting for a person: rated down, or scored low by `monitor`."""
        return [(self.traces.get(tid), why)
                for tid, why in self.evals.runs.review_queue(app, limit)]

    def export_review(self, to: str | Path, app: str | None = None,
                      actor: str = "local") -> int:
        """Write the review queue as JSONL evaluation rows (question, the answer given,
        the user's reference answer if any) and take them off the queue."""
        queue = self.review_queue(app, limit=10_000)
        rows: list[dict[str, Any]] = []
        for t, why in queue:
            refs = [f.reference for f in self.traces.feedback_for(t.id) if f.reference]
            rows.append({"question": t.question, "answer": t.answer,
                         "reference_answer": refs[-1] if refs else None, "sources": [],
                         "origin": {"trace_id": t.id, "app": t.app,
                                    "app_version": t.app_version, "review": why}})
        _write_rows(Path(to), rows)
        self.evals.runs.mark_reviewed([t.id for t, _ in queue])
        self.keys.audit(actor, "review.export", str(to), {"rows": len(rows), "app": app})
        return len(rows)

    def app_collections(self, app: str) -> list[str]:
        """The collections `app` answers from (a bare collection answers from itself)."""
        spec = self.app(app)
        if spec is not None:
            return [c["name"] for c in spec.spec["collections"]]
        return [self._collection(split_ref(app)[0]).name]

    def app_names(self) -> list[str]:
        """Deployed apps, then collections no app of the same name shadows."""
        apps = sorted(self.apps.names())
        return apps + [c for c in self.store.collection_names() if c not in apps]

    def app(self, ref: str) -> AppVersion | None:
        """The app version `ref` serves now (labels read on every call, so a label move
        takes effect at once); None when no app of that name is deployed."""
        name, _ = split_ref(ref)
        if not self.apps.exists(name):
            if name != ref.strip():
                raise NotFoundError(f"no app named {name!r}",
                                    hint="deploy it with `alicerce apps deploy app.yaml`")
            return None
        key = self.apps.resolve(ref)
        if key not in self._app_cache:
            self._app_cache[key] = self.apps.get(f"{key[0]}@{key[1]}")
        return self._app_cache[key]

    def _rag(self, question: str, app: str, *, stream: bool, model: str | None = None,
             params: DecodingParams | dict[str, Any] | None = None, k: int | None = None,
             mode: SearchMode | None = None, filters: Filters | None = None,
             step_back: bool | None = None, extractiveness: Extractiveness | None = None,
             prompt: str | None = None, language: str | None = None,
             standalone: str = "", caller: str = "local",
             spans: Recorder | None = None, guards: bool = True,
             extra_collections: Sequence[str] = ()) -> Stream:
        rec = spans or Recorder()
        version = self.app(app)
        name = version.name if version else app
        try:
            self._check_text(question)
            spec = version.spec if version else None
            retrieval: dict[str, Any] = spec["retrieval"] if spec else {}
            colls = ([self._collection(c["name"]) for c in spec["collections"]] if spec
                     else [self._collection(app)])
            colls += [self._collection(c) for c in extra_collections]
            template = self.prompts.get(prompt or (spec["prompt"] if spec else "rag-answer"))
            decoding = self._decoding(params, version)
            if decoding.n > 1:
                raise InputError("an answer is one candidate (n=1)",
                                 hint="use `alicerce generate --n N` for several candidates")
            gen = self.generator(model or (spec["model"]["name"] if spec else None))
            retrieve = self._retriever(colls, retrieval, mode, k, filters)
            chain = RagChain(retrieve, gen, template,
                             retrieval.get("context_tokens", self.settings.answer_context_tokens),
                             retrieval.get("abstain_below", self.settings.abstain_below),
                             self.prompts.get("step-back"),
                             self.guards(version) if guards else Guards(), self.canary)
            if step_back is None:
                step_back = bool(spec and "step_back" in spec["chain"])
            versions = self._versions(colls, template.ref, gen, version)
            req = RagRequest(question, decoding, language or "",
                             extractiveness or (spec["extractiveness"] if spec else None)
                             or self.settings.extractiveness, step_back,
                             standalone=standalone, versions=versions, spans=rec)
        except AlicerceError as exc:
            self.traces.record(name, caller, question, error=str(exc), spans=rec.spans,
                               app_version=version.version if version else None,
                               latency_ms=rec.elapsed_ms())
            raise
        return self._traced(chain.stream(req, stream=stream), name, caller, rec, version)

    def guards(self, version: AppVersion | None = None) -> Guards:
        """The rails of an app version, or the settings' for a bare collection (built once;
        their models load on first use)."""
        key = version.ref if version else ""
        if key not in self._guards:
            self._guards[key] = build_guards(
                version.spec.get("guards", {}) if version else self.settings.guards,
                self.settings)
        return self._guards[key]

    def warm_guards(self, app: str | None = None) -> None:
        """Load the models behind an app's rails (spaCy, the embedder, the heads) now, so
        the first request does not pay for it."""
        guards = self.guards(self.app(app) if app else None)
        ctx = Context(question="warm up", sources=("warm up",))
        for rails in (guards.input, guards.context, guards.output):
            rails.run("warm up", ctx, stop=False)

    def check(self, text: str, *, app: str | None = None, stage: Stage = "input",
              rails: Sequence[str] = ()) -> Outcome:
        """Every rail's verdict on `text` (not stopping at a block): the app's rails for
        `stage`, the settings' for a bare collection or none, or the named `rails` with
        their default options. Output rails that need sources (grounding) see none."""
        if not text.strip():
            raise InputError("nothing to check", hint="give a non-empty text")
        if rails:
            try:
                guards = build_guards(normalise_guards({stage: list(rails)}), self.settings)
            except ValueError as exc:
                raise InputError(f"bad rails: {exc}", hint="see docs/guardrails.md") from None
        else:
            guards = self.guards(self.app(app) if app else None)
        ctx = Context(question=text, language=detect(text), canary=self.canary)
        rails_of: Rails = getattr(guards, stage)
        return rails_of.run(text, ctx, stop=False)

    def _retriever(self, colls: Sequence[StoredCollection], retrieval: dict[str, Any],
                   mode: SearchMode | None, k: int | None,
                   filters: Filters | None) -> Callable[[str, Recorder], list[Hit]]:
        """Search over an app's collections with its retrieval settings, options first."""
        search = self._params(mode or retrieval.get("mode"),
                              k or retrieval.get("k") or self.settings.answer_k,
                              retrieval.get("alpha"))
        where = {**(filters or {}), **retrieval.get("filters", {})} or None
        searchers = [(c, self._searcher(c)) for c in colls]

        def retrieve(q: str, r: Recorder) -> list[Hit]:
            return interleave([s.search(c, q, search, where, spans=r)
                               for c, s in searchers])[:search.k]
        return retrieve

    def retrieve(self, question: str, app: str, *, k: int | None = None,
                 filters: Filters | None = None) -> list[Hit]:
        """What `app` retrieves for `question` (its collections, mode, alpha and filters),
        without generating: retrieval evaluation scores this."""
        version = self.app(app)
        spec = version.spec if version else None
        colls = ([self._collection(c["name"]) for c in spec["collections"]] if spec
                 else [self._collection(app)])
        return self._retriever(colls, spec["retrieval"] if spec else {}, None, k,
                               filters)(question, Recorder())

    def answer_versions(self, app: str, model: str | None = None,
                        prompt: str | None = None) -> dict[str, str]:
        """What an answer from `app` would depend on now (the cache's key)."""
        version = self.app(app)
        spec = version.spec if version else None
        colls = ([self._collection(c["name"]) for c in spec["collections"]] if spec
                 else [self._collection(app)])
        pname, pversion = self.prompts.resolve(prompt or (spec["prompt"] if spec
                                                          else "rag-answer"))
        gen = self.generator(model or (spec["model"]["name"] if spec else None))
        return self._versions(colls, f"{pname}@{pversion}", gen, version)

    def _versions(self, colls: Sequence[StoredCollection], prompt_ref: str, gen: Generator,
                  app: AppVersion | None) -> dict[str, Any]:
        """The lineage of an answer: app version, each collection's newest version with its
        embedder and chunking, prompt version, model and its weights, software version."""
        current = []
        for coll in colls:
            # The newest version only: collections() would count every chunk.
            history = self.store.versions(coll)
            current.append(f"{coll.name}@{history[-1]['id'] if history else ''}")
        identity = self.model_identity(gen)
        return {"app": app.ref if app else None, "collection": ",".join(current),
                "embedder": ",".join(sorted({c.embedder for c in colls})),
                "chunking": {c.name: dict(c.chunking) for c in colls},
                "prompt": prompt_ref, "model": gen.name, "backend": gen.backend,
                "model_identity": identity, "adapter": None,
                "software": f"alicerce {__version__}"}

    def model_identity(self, gen: Generator) -> str:
        """What pins a model's weights (memoised: hashing a GGUF file reads all of it)."""
        if any(g is gen for g in self._generators.values()):
            return f"custom:{gen.name}"  # registered in-process: no file to hash
        if gen.name not in self._identities:
            self._identities[gen.name] = _identity(gen.name, self.settings)
        return self._identities[gen.name]

    def _traced(self, stream: Stream, app: str, caller: str, rec: Recorder,
                version: AppVersion | None) -> Stream:
        """Store each request as a trace (errors too); the Answer carries its id."""
        question = ""
        try:
            for item in stream:
                if isinstance(item, Answer):
                    question = item.question
                    if self.on_answer is not None:
                        self.on_answer(app, version.version if version else None, item)
                    item = replace(item, trace_id=self.traces.record(
                        app, caller, item.question, answer=item, spans=rec.spans,
                        lineage=item.versions, app_version=version.version if version else None,
                        latency_ms=rec.elapsed_ms()))
                yield item
        except AlicerceError as exc:
            self.traces.record(app, caller, question, error=str(exc), spans=rec.spans,
                               app_version=version.version if version else None,
                               latency_ms=rec.elapsed_ms())
            raise

    def embed(self, texts: Sequence[str], model: str | None = None,
              kind: str = "passage") -> list[list[float]]:
        """Vectors from an embedding backend (e5-small, minilm, remote); `kind` picks the
        query or passage form where the model has one (e5's prefixes)."""
        name = model or self.settings.embedder
        self.check_embed(texts, name, kind)
        embedder = get_embedder(name, self.settings)
        vectors = (embedder.embed_queries(texts) if kind == "query"
                   else embedder.embed_passages(texts))
        return [[float(x) for x in row] for row in vectors]

    def check_embed(self, texts: Sequence[str], model: str, kind: str) -> None:
        """The errors `embed` would raise, without embedding anything."""
        ready = available_embedders(self.settings)
        if model not in ready:
            shown = model.encode("unicode_escape").decode()[:80]
            why = f": it needs {NEEDS[model]}" if model in NEEDS else ""
            raise NotFoundError(f"embedding model {shown!r} is not available here{why}",
                                hint="use one of " + ", ".join(ready))
        if kind not in ("query", "passage"):
            raise InputError(f"unknown input type {kind!r}", hint="use query or passage")
        if not texts or any(not t.strip() for t in texts):
            raise InputError("nothing to embed, or an empty text",
                             hint="give one or more non-empty strings")

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InputError("the question is empty", hint="type a question")
        if len(text) > self.settings.max_question_chars:
            raise InputError(f"the question has {len(text)} characters, over the limit of "
                             f"{self.settings.max_question_chars}",
                             hint="shorten it, or raise max_question_chars")


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """JSONL, replacing the file only once every row is written."""
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror}",
                         hint="pick a writable path") from None


def _chunking(tokens: int, overlap: int) -> ChunkingConfig:
    if not 16 <= tokens <= 8192:
        raise InputError(f"chunk size {tokens} is out of range", hint="use 16 to 8192 tokens")
    if not 0 <= overlap < tokens:
        raise InputError(f"chunk overlap {overlap} must be at least 0 and below {tokens}",
                         hint="e.g. --chunk-tokens 200 --chunk-overlap 32")
    return ChunkingConfig(tokens, overlap)


def _screened(guards: Guards, message: Message, lang: str) -> Message:
    """`message` as the input rails redact it (unchanged when they would block it)."""
    out = guards.input.run(message.content, Context(message.content, lang))
    return message if out.blocked else replace(message, content=out.text)


def check_collection_name(name: str) -> None:
    """InputError unless `name` can name a collection (checked before any upload is kept)."""
    if not _NAME.match(name):
        shown = name.encode("unicode_escape").decode()[:80]
        raise InputError(f"invalid collection name {shown!r}",
                         hint="start with a letter or digit; then letters, digits, '.', '_' "
                              "or '-' (up to 64)")
