"""Wire models of the management routes (datasets, reviews, prompts, keys): what they accept.

Like every request model they forbid unknown fields and bound every size before any work.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from alicerce.server.wire import Strict

NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class ReviewItem(Strict):
    trace_id: str = Field(min_length=1, max_length=64)
    action: Literal["accept", "correct", "discard"]
    reference: str = Field("", max_length=20_000,
                           description="The right answer (required to `correct`).")


class ReviewRequest(Strict):
    """Decisions on queued answers: accepted and corrected ones become rows of a new
    version of `dataset`; every decided trace leaves the queue."""

    dataset: str = Field("golden", pattern=NAME)
    decisions: list[ReviewItem] = Field(min_length=1, max_length=1000)


class PromptRequest(Strict):
    template: str = Field(min_length=1, max_length=100_000,
                          description="The user message, a Jinja2 template.")
    system: str = Field("", max_length=100_000)
    description: str = Field("", max_length=2000)


class PromptLabelRequest(Strict):
    version: int = Field(ge=1, le=2**31)
    label: str = Field("production", pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")


class KeyRequest(Strict):
    name: str = Field(min_length=1, max_length=64)
    scopes: list[Literal["ask", "ingest", "admin", "read", "models", "unguarded"]] = Field(
        min_length=1, max_length=6)
    collections: list[str] | None = Field(None, max_length=100,
                                          description="Only these collections and apps.")
    rpm: int = Field(60, ge=1, le=1_000_000)
    tpm: int = Field(100_000, ge=1, le=1_000_000_000)


class EvalRequest(Strict):
    """Score an app version on a stored dataset in the background, or probe it for
    counterfactual fairness (`kind: fairness`, docs/responsible-ai.md)."""

    app: str = Field(min_length=1, max_length=200, description="NAME, NAME@N or NAME@LABEL")
    dataset: str = Field(min_length=1, max_length=80, description="A stored dataset, NAME@N")
    kind: Literal["run", "fairness"] = "run"
    metrics: list[str] = Field(["retrieval", "answer"], min_length=1, max_length=5,
                               description="run: the metric groups")
    attributes: list[Annotated[str, Field(max_length=40)]] | None = Field(
        None, max_length=10, description="fairness: the attributes to vary (default all)")
    personas: bool = Field(False, description="fairness: also ask questions that mention "
                                              "no attribute as each group's persona")
    judge: bool = Field(True, description="fairness: ask a judge whether paired answers "
                                          "differ in substance")
    judge_model: str | None = Field(None, max_length=200)
    limit: int | None = Field(None, ge=1, le=100_000, description="Score a sample of rows.")
    seed: int = Field(0, ge=0, le=2**31)
