"""Wire models: what the HTTP API accepts and returns (OpenAI's shapes, plus native routes).

Requests forbid unknown fields, so a typo ("temprature") is a 400 naming it, not a silent
default. Alicerce's own knobs (`top_k`, `min_p`, `repetition_penalty`, `format`, and for apps
`filters`, `k`, `step_back`, `extractiveness`) ride along as extra body fields, which the
openai SDK sends with `extra_body`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alicerce.config import Extractiveness, SearchMode


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionCall(Strict):
    name: str = Field(max_length=64)
    arguments: str = Field(max_length=100_000)


class WireToolCall(Strict):
    id: str = Field(max_length=100)
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(Strict):
    type: Literal["text"]
    text: str = Field(max_length=200_000)


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | None = Field(None, max_length=200_000)
    name: str | None = None
    tool_calls: list[WireToolCall] | None = Field(None, max_length=32)
    tool_call_id: str | None = Field(None, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _parts(cls, data: Any) -> Any:
        """Content as a list of text parts (what agent frameworks send) is joined; other
        parts (images, audio) are refused: no bundled model reads them."""
        if isinstance(data, dict) and isinstance(data.get("content"), list):
            parts = data["content"]
            kinds = sorted({str(p.get("type")) for p in parts if isinstance(p, dict)} - {"text"})
            if kinds or not all(isinstance(p, dict) for p in parts):
                raise ValueError(f"only text content parts are read, not {', '.join(kinds)}")
            data = {**data, "content": "\n".join(TextPart.model_validate(p).text
                                                 for p in parts)}
        return data

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.role == "tool" and (self.tool_call_id is None or self.content is None):
            raise ValueError("a tool message needs tool_call_id and content (the result)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self


class FunctionDef(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field("", max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    strict: bool | None = None


class ToolDef(Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(Strict):
    name: str = Field(max_length=64)


class NamedToolChoice(Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(Strict):
    name: str = "answer"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """The decoding knobs every generating route shares (validated again by DecodingParams)."""

    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    num_beams: int | None = None  # beam search: the transformers backend
    length_penalty: float | None = None
    early_stopping: bool | None = None
    user: str | None = Field(None, max_length=256)


class AppOptions(Strict):
    """How an app answers; ignored (and refused) for raw models."""

    filters: dict[str, str] | None = None
    k: int | None = Field(None, ge=1, le=50)
    mode: SearchMode | None = None
    step_back: bool = False
    extractiveness: Extractiveness | None = None


class ChatRequest(Sampling, AppOptions):
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    format: Literal["text", "bullets", "json"] | None = None
    tools: list[ToolDef] | None = Field(None, max_length=64)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(Sampling, AppOptions):
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(max_length=200_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: Literal[False] = False
    suffix: None = None


class EmbeddingRequest(Strict):
    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "passage"] = "passage"
    user: str | None = Field(None, max_length=256)
    dimensions: None = None


class AskRequest(Sampling, AppOptions):
    question: str = Field(max_length=200_000)
    model: str | None = Field(None, max_length=200)
    conversation_id: str | None = Field(None, max_length=64)


class RunRequest(Strict):
    """A chain app's declared inputs (checked against its spec before it runs)."""

    inputs: dict[str, Any] = Field(default_factory=dict)


class RunUsage(Strict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RunResponse(Strict):
    app: str
    app_version: int
    outputs: dict[str, Any]
    blocked: str | None = Field(None, description="step:rail when a guard step stopped it")
    trace_id: str
    latency_ms: float
    usage: RunUsage


class BatchRequest(Strict):
    """Rows as `alicerce batch run` reads them: objects of inputs, `{custom_id, inputs}`, or
    OpenAI Batch API lines (`{custom_id, method, url, body}`)."""

    app: str = Field(min_length=1, max_length=200)
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)
    concurrency: int = Field(1, ge=1, le=16)


class FeedbackRequest(Strict):
    """At least one of: a thumbs (score 1 / -1), a 1-5 rating, a comment, the right answer."""

    trace_id: str = Field(min_length=1, max_length=64)
    score: Literal[1, 0, -1] = 0
    rating: int | None = Field(None, ge=1, le=5)
    comment: str = Field("", max_length=4000)
    reference: str = Field("", max_length=20000,
                           description="The answer that would have been right.")


class DeployRequest(Strict):
    spec: str = Field(min_length=1, max_length=200_000, description="The app spec, as YAML.")


class LabelRequest(Strict):
    version: int = Field(ge=1, le=2**31)
    label: str = Field("production", min_length=1, max_length=32)


class RollbackRequest(Strict):
    label: str = Field("production", min_length=1, max_length=32)


class CitationOut(BaseModel):
    n: int
    title: str
    section: str
    page: int | None
    source: str
    doc_key: str
    chunk_id: int
    score: float


class AskResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    abstained: bool
    language: str
    trace_id: str
    conversation_id: str | None = None
    standalone_question: str = ""
    timings: dict[str, float]
    usage: dict[str, int]
    versions: dict[str, Any]
    cached: bool = False
    blocked: str = Field("", description="The rail that replaced the answer, e.g. "
                                         "'input:injection' (docs/guardrails.md).")
    guards: list[dict[str, Any]] = Field(default_factory=list,
                                         description="Every rail's verdict.")
    redactions: dict[str, str] = Field(
        default_factory=dict, description="Reversible placeholders and what they replaced, "
                                          "for the asker's own display; never stored.")


class SearchRequest(Strict):
    """A search in one collection; settings give the defaults for what is left out."""

    query: str = Field(min_length=1, max_length=2000)
    k: int | None = Field(None, ge=1, le=100)
    mode: SearchMode | None = None
    alpha: float | None = Field(None, ge=0.0, le=1.0,
                                description="hybrid: weight of the dense side")
    filters: dict[str, str | list[str]] | None = Field(
        None, max_length=16, description="metadata field -> value or list of values")


class SearchHit(Strict):
    chunk_id: int
    doc_key: str
    score: float
    scores: dict[str, float] = Field(
        description="each retriever's score behind `score` (sparse, dense, fused, rerank)")
    text: str
    title: str
    section: str
    page: int | None
    source: str
    metadata: dict[str, Any]


class SearchResponse(Strict):
    object: Literal["list"] = "list"
    collection: str
    mode: SearchMode
    data: list[SearchHit]

