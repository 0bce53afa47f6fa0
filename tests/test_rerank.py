"""Reranking inside a RAG app (`retrieval.reranker`): the candidates are reordered by the
reranker before the prompt is built, the step is traced, and the reranker is pinned in the
app's version and each answer's lineage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings
from alicerce.errors import InputError
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message


def _judge(messages: Sequence[Message]) -> str:
    return "yes" if "férias" in messages[-1].content.lower() else "no"


def test_an_llm_reranker_reorders_a_rag_apps_sources(tmp_path: Path, docs: Path) -> None:
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", generator="fake",
                                abstain_below=0.0)) as alc:
        alc.use_generator("fake", ScriptedGenerator("São 30 dias [1].", name="fake"))
        alc.use_generator("judge", ScriptedGenerator(_judge, name="judge"))
        alc.ingest([docs], "kb")
        v, _ = alc.deploy_app("name: rr\ncollections: [kb]\n"
                              "retrieval: {k: 2, reranker: llm, reranker_model: judge}\n")
        assert v.spec["chain"] == ["condense", "retrieve", "rerank", "generate"]
        r = v.spec["retrieval"]
        assert (r["candidates"], r["reranker_prompt"]) == (6, "rerank-relevance@1")
        answer = alc.ask("Send receipts for the refund", "rr")
        assert "férias" in answer.chunks[0].text.lower()  # the judge's pick, first
        assert answer.chunks[0].score == 1.0 and len(answer.chunks) <= 2
        assert answer.versions["reranker"] == "custom:judge"
        alc.traces.flush()
        span = next(s for s in alc.traces.get(answer.trace_id).spans if s["name"] == "rerank")
        assert span["attrs"]["reranker"] == "llm:judge" and span["attrs"]["scores"][0] == 1.0
        plain, _ = alc.deploy_app("name: plain\ncollections: [kb]\n")
        assert "reranker_identity" not in plain.spec["retrieval"]  # others keep their hash


@pytest.mark.parametrize("spec, message", [
    ("chain: [retrieve, rerank, generate]\n", "rerank has nothing to run"),
    ("retrieval: {reranker: cross-encoder, reranker_path: /nope}\n",
     "not a saved CrossEncoder"),
    ("retrieval: {reranker: llm, reranker_model: gpt-99}\n", "gpt-99"),
])
def test_a_bad_reranker_does_not_deploy(tmp_path: Path, docs: Path, spec: str,
                                        message: str) -> None:
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing")) as alc:
        alc.ingest([docs], "kb")
        with pytest.raises(InputError, match=message):
            alc.deploy_app("name: bad\ncollections: [kb]\n" + spec)
