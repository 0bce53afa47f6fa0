"""Settings: one validated object, read from `alicerce.toml` and `ALICERCE_*` variables.

Precedence, highest first: explicit keyword arguments, environment, the TOML file, defaults.
The object is passed explicitly to everything that needs it; nothing reads the environment
behind its back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from alicerce.durations import duration_s
from alicerce.errors import ConfigError
from alicerce.guard.config import normalise as normalise_guards

SearchMode = Literal["sparse", "dense", "hybrid", "rrf"]
EmbedderName = Literal["e5-small", "minilm", "remote", "hashing"]

Extractiveness = Literal["quote", "balanced", "paraphrase"]

CONFIG_ENV = "ALICERCE_CONFIG"

# Identifiers nobody needs in an answer are redacted on the way out; on the way in, every
# kind but person names (English NER on Portuguese questions about people in the documents
# would redact the very name asked about).
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ANSWER_PII = ["CPF", "CREDIT_CARD", "IBAN_CODE"]
_QUESTION_PII = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CPF", "CNPJ", "CREDIT_CARD", "IBAN_CODE",
                 "IP_ADDRESS"]
DEFAULT_GUARDS: dict[str, Any] = {
    "input": ["size", {"pii": {"entities": _QUESTION_PII}}, "injection"],
    # Passages are not what the head mostly learned from, and dropping one costs an answer:
    # a higher bar than for questions (docs/guardrails.md).
    "context": [{"injection": {"threshold": 0.8}}],
    "output": [{"pii": {"entities": _ANSWER_PII}}, "toxicity", "canary",
               {"grounding": {"min": 0.5, "on_fail": "flag"}}],
}


class ModelEntry(BaseModel):
    """A model named in `[models.NAME]`: a GGUF `path`, or an OpenAI-compatible `url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field("", description="A .gguf file, a bundled model's name, or (backend "
                                       "transformers) a local Hugging Face model folder.")
    url: str | list[str] = Field(
        "", description="Base URL of an OpenAI-compatible /v1 API, or a list of servers of the "
                        "same model: each request goes to the least busy one that is up, "
                        "and moves to another when one fails (docs/scale.md).")
    model: str = Field("", description="Model name the endpoint serves (default: NAME).")
    backend: Literal["llama.cpp", "transformers"] = Field(
        "llama.cpp", description="What runs a local model: llama.cpp (fast, LoRA adapters) "
                                 "or transformers (beam search, every PEFT adapter; "
                                 "pip install 'alicerce[tune]').")
    adapters: list[str] = Field(
        default_factory=list, max_length=256,
        description="With url: the LoRA adapters the endpoint serves by name (vLLM "
                    "--lora-modules NAME=PATH); asked for as NAME:ADAPTER.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Variable holding the API key.")
    price_input_per_mtok: float | None = Field(
        None, ge=0, description="Price per million prompt tokens (`models compare` cost).")
    price_output_per_mtok: float | None = Field(
        None, ge=0, description="Price per million completion tokens.")

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(self.url) if isinstance(self.url, list) else (self.url,) if self.url else ()

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if bool(self.path) == bool(self.url):
            raise ValueError("give exactly one of path (a .gguf file) or url (an "
                             "OpenAI-compatible endpoint)")
        if self.url and self.backend != "llama.cpp":
            raise ValueError("backend applies to a local model (path), not to a url")
        if self.path and self.adapters:
            raise ValueError("adapters lists a remote endpoint's adapters; a local model "
                             "serves those registered with `alicerce tune register`")
        if isinstance(self.url, list) and (len(self.url) > 32 or not all(
                u.startswith(("http://", "https://")) for u in self.url)):
            raise ValueError("url lists 1 to 32 http(s):// base URLs")
        for name in self.adapters:
            if not _ADAPTER_NAME.match(name):
                raise ValueError(f"adapter name {name!r}: use letters, digits, . _ - (1-64)")
        return self


class Settings(BaseSettings):
    """Everything configurable, with the default that suits a laptop CPU."""

    model_config = SettingsConfigDict(env_prefix="ALICERCE_", extra="forbid", frozen=True)

    home: Path = Field(Path(".alicerce"), description="Directory holding all state.")
    store: str = Field(
        "", description="PostgreSQL URL (postgresql://user:pass@host/db) for collections; "
        "empty = SQLite in the home. Needs the postgres extra.")
    store_pool_size: int = Field(8, ge=1, le=256,
                                 description="Connections each process keeps to PostgreSQL.")
    executor: str = Field(
        "", description="Where bulk work runs (ingestion's embedding, batch rows, evaluation "
        "answers): empty = "
        "this process; a Ray cluster's address (HOST:6379, or ray://HOST:10001) spreads it "
        "over the cluster (pip install 'alicerce[ray]').")
    executor_workers: int = Field(2, ge=1, le=1024,
                                  description="Ray workers, each loading its models once.")
    executor_cpus: int = Field(1, ge=1, le=256,
                               description="CPU cores each Ray worker reserves on the "
                               "cluster; its models run on as many threads.")

    embedder: EmbedderName = Field("e5-small", description="Embedding backend for new collections.")
    embed_batch_size: int = Field(16, ge=1, le=4096)
    embed_threads: int = Field(0, ge=0, le=256, description="0 = all cores.")
    remote_embed_url: str = Field(
        "", description="Base URL of an OpenAI-compatible /v1 API; several servers of one "
                        "model comma-separated (least busy first, failover).")
    remote_embed_model: str = Field("text-embedding-3-small")
    remote_embed_api_key_env: str = Field(
        "OPENAI_API_KEY", description="Name of the variable that holds the remote API key."
    )
    remote_query_prefix: str = ""
    remote_passage_prefix: str = ""

    chunk_tokens: int = Field(200, ge=16, le=8192, description="Token budget of one chunk.")
    chunk_overlap: int = Field(32, ge=0, le=4096)
    max_file_mb: float = Field(50.0, gt=0)

    search_mode: SearchMode = "hybrid"
    search_k: int = Field(5, ge=1, le=1000)
    # 0.4 was chosen on BEIR SciFact's train split; it also leads on the Zoomcamp FAQ.
    alpha: float = Field(0.4, ge=0.0, le=1.0, description="Weight of dense scores in hybrid.")
    rrf_k: int = Field(60, ge=1)
    candidates: int = Field(50, ge=1, le=10000, description="Candidates per retriever.")
    boost_title: float = Field(3.0, ge=0.0, description="BM25 weight of the title field.")
    boost_section: float = Field(0.5, ge=0.0)
    boost_text: float = Field(1.0, ge=0.0)

    hnsw_connectivity: int = Field(16, ge=4, le=128)
    hnsw_expansion_add: int = Field(128, ge=8, le=4096)
    # 256 keeps recall@10 >= 0.95 with margin at 1M chunks (0.978; 192 gave 0.938-0.959
    # depending on the query sample): docs/benchmarks.md.
    hnsw_expansion_search: int = Field(256, ge=8, le=4096)
    exact_search_limit: int = Field(
        20000, ge=0, description="Filtered candidate sets up to this size are searched exactly."
    )

    generator: str = Field("qwen-1.5b", description="Model for answers: bundled name, "
                           "[models.NAME] entry, or .gguf path.")
    model_cache: Path = Field(Path("~/.cache/alicerce/models"),
                              description="Where bundled models split in parts are joined.")
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    judge_model: str | None = Field(
        None, description="Model for evaluation judges and synthetic questions (default: "
        "`generator`): bundled name, [models.NAME] entry (any OpenAI-compatible server), "
        "or .gguf path.")
    llm_threads: int = Field(0, ge=0, le=256, description="0 = all cores.")
    llm_context: int = Field(
        8192, ge=512, le=131072,
        description="KV cache in tokens, shared by the parallel slots: requests wait for room.")
    llm_parallel: int = Field(
        0, ge=0, le=64,
        description="Sequences decoded together (candidates, requests); 0 = as many as the "
                    "cores, at most 4 (on 2 cores, 4 at once made answers pass 120 s).")
    llm_cache_ram_mb: int = Field(
        128, ge=0, le=65536,
        description="Host RAM for llama.cpp's cache of earlier prompts (0 = off).")
    llm_timeout_s: float = Field(600.0, gt=0, description="Remote generation timeout.")
    max_tokens: int = Field(512, ge=1, le=32768, description="Default answer length cap.")
    temperature: float = Field(0.1, ge=0.0, le=2.0, description="Default sampling temperature.")

    answer_k: int = Field(6, ge=1, le=50, description="Chunks retrieved for an answer.")
    answer_context_tokens: int = Field(
        320, ge=64, description="Token budget of the sources the model reads (with "
        "answer_select=passages, the best chunk goes in even when it alone is over it).")
    answer_select: Literal["windows", "passages"] = Field(
        "windows", description="windows: the sentences of the retrieved chunks closest to "
        "the question, with their neighbours; passages: whole chunks (docs/generation.md).")
    answer_context_min: int = Field(
        150, ge=0, description="With windows, the budget adapts: past this many tokens, "
        "windows scoring more than answer_window_drop under the best one are left out; set "
        "it to answer_context_tokens for a fixed budget (docs/generation.md).")
    answer_window_drop: float = Field(
        0.02, ge=0.0, le=1.0, description="How far under the best sentence's similarity a "
        "window may score and still go in past answer_context_min tokens.")
    abstain_below: float = Field(
        0.80, ge=0.0, le=1.0,
        description="Abstain when the best chunk's dense similarity is below this.")
    stream_release: Literal["sentence", "clause"] = Field(
        "clause", description="How much of a streamed answer the output rails check before "
        "it is shown: a sentence, or a clause (a comma, or 80 characters up to a whole "
        "word); docs/guardrails.md.")
    answerable_min: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Abstain when the answering model's P(the sources answer the question) "
                    "is below this; 0 = no check (docs/generation.md).")
    answerable_head_min: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Abstain without asking the model when the answerability head's "
                    "P(the retrieved passages hold the answer) is below this; unset = the "
                    "head's calibrated threshold, 0 = no check (docs/generation.md).")
    extractiveness: Extractiveness = "balanced"
    max_question_chars: int = Field(2000, ge=10, le=100000)
    max_chain_input_chars: int = Field(
        50_000, ge=100, le=2_000_000,
        description="Characters of one chain run's inputs (as JSON), checked before it runs.")
    chat_history_tokens: int = Field(1024, ge=0, description="History kept in a chat prompt.")

    # Serving (docs/serving.md)
    host: str = Field("127.0.0.1", description="Address `alicerce serve` binds.")
    port: int = Field(8000, ge=1, le=65535)
    auth: bool = Field(True, description="Require API keys; may be off only on loopback.")
    queue_size: int = Field(
        32, ge=0, le=100000,
        description="Requests waiting for a model slot (beyond llm_parallel) before 503.")
    queue_max_wait_s: float = Field(
        30.0, gt=0, le=3600,
        description="Longest a request may wait for a model slot; beyond it (or when the "
                    "expected wait is longer) the server answers 503 with Retry-After.")
    max_body_kb: int = Field(1024, ge=1, description="Largest JSON request body.")
    max_upload_mb: float = Field(50.0, gt=0, description="Largest upload to ingest.")
    max_tokens_cap: int = Field(2048, ge=1, le=32768,
                                description="Largest max_tokens a request may ask for.")
    cache_size: int = Field(1024, ge=0, description="Cached answers kept; 0 turns it off.")
    cache_ttl_s: float = Field(3600.0, gt=0)
    semantic_cache: bool = Field(False, description="Also reuse answers to similar questions.")
    semantic_cache_threshold: float = Field(0.95, gt=0.0, le=1.0)
    key_rpm: int = Field(60, ge=1, description="Requests per minute of a new key.")
    key_tpm: int = Field(100_000, ge=1, description="Tokens per minute of a new key.")
    embed_batch_ms: float = Field(5.0, ge=0.0, le=1000.0,
                                  description="How long an embedding request waits for others.")

    # Tracing (docs/apps.md)
    trace_redact: bool = Field(
        False, description="Store traces without the question, answer or prompt texts.")
    trace_keep_days: float = Field(30.0, ge=0.0, description="Drop older traces (0 = keep).")
    trace_keep_count: int = Field(1_000_000, ge=0,
                                  description="Keep at most this many traces (0 = no limit).")
    otlp_endpoint: str = Field(
        "", description="Also send traces over OTLP/HTTP to this URL, e.g. "
                        "http://127.0.0.1:4318/v1/traces (needs alicerce[otel]); empty = off.")
    mlflow: bool = Field(False, description="Log app deployments and evaluations as MLflow "
                                            "runs (needs alicerce[mlflow]).")
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking URI; empty = sqlite in the home (mlflow.db).")
    otlp_headers: dict[str, str] = Field(
        default_factory=dict, description="Headers for the OTLP endpoint (e.g. an API key).")

    adapter_poll_s: float = Field(
        5.0, ge=0.0, description="`alicerce serve` checks this often for adapters registered "
                                 "or removed (by the CLI too) and reloads the models they "
                                 "belong to beside the running ones; 0 = only when a request "
                                 "names a new adapter.")

    # Monitoring (docs/monitoring.md)
    monitor_interval_s: float = Field(
        0.0, ge=0.0, description="`alicerce serve` runs drift and continuous evaluation on "
                                 "every app with traffic this often (e.g. 3600); 0 = only "
                                 "when `alicerce drift` / `alicerce monitor run` run.")
    monitor_sample: float = Field(0.05, ge=0.0, le=1.0, description="Share of live traces "
                                  "the server's continuous evaluation scores (0 = none).")
    monitor_judge: bool = Field(False, description="The server's continuous evaluation also "
                                "asks the judge model (judge_model): the RAG triad.")
    drift_baseline: str = Field("window:7d", description="Baseline of the server's drift "
                                "runs: window:7d (past traces) or dataset:PATH.")
    drift_window: str = Field("24h", description="Current window of the server's drift runs.")

    # Guardrails (docs/guardrails.md)
    guards: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_GUARDS),
        description="Rails for answers from a bare collection (an app spec sets its own); "
                    "same form as an app spec's guards section; {} turns them off.")
    raw_model_guards: dict[str, Any] | None = Field(
        None, description="Rails around raw-model requests (same form); default: `guards` "
                          "without injection, grounding and canary (docs/guardrails.md).")

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if v and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("store takes a PostgreSQL URL (postgresql://user:pass@host/db), "
                             "or nothing for SQLite in the home")
        return v

    @field_validator("llm_parallel")
    @classmethod
    def _parallel(cls, v: int) -> int:
        """0 = auto: a CPU decodes a batch at about the cost of its sequences one by one,
        so more slots than cores only make each answer slower (docs/benchmarks.md)."""
        return v or min(4, max(1, os.cpu_count() or 1))

    @field_validator("drift_window")
    @classmethod
    def _window(cls, v: str) -> str:
        duration_s(v, "drift_window")
        return v

    @field_validator("guards")
    @classmethod
    def _guards(cls, v: dict[str, Any]) -> dict[str, Any]:
        return normalise_guards(v) if v else {}

    @field_validator("raw_model_guards")
    @classmethod
    def _raw_guards(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else normalise_guards(v) if v else {}

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_budget(cls, v: int, info: Any) -> int:
        budget = info.data.get("chunk_tokens", 200)
        if v >= budget:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_tokens ({budget})")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get(CONFIG_ENV, "alicerce.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_path))

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Build settings, turning validation failures into one readable ConfigError."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**clean)
        except ValidationError as exc:
            raise ConfigError(_describe(exc), hint=_HINT) from None
        except (OSError, ValueError) as exc:  # unreadable or malformed TOML
            raise ConfigError(f"cannot read settings: {exc}", hint=_HINT) from None


_HINT = "fix the value in alicerce.toml or the ALICERCE_* variable, see docs/configuration.md"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
    return "invalid settings: " + "; ".join(parts)
