"""RAG-Sequence and RAG-Token: answers from one passage at a time, fused by p(d|q), on a
scripted model that reports log-probabilities."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings
from alicerce.chains.fusion import prior
from alicerce.errors import InputError
from alicerce.generate.params import DecodingParams
from alicerce.types import Choice, Completion, Delta, Hit, Message, TokenLogprob, Usage

GOOD, BAD = "São 30 dias de férias.", "Não sei dizer."


def _target(messages: Sequence[Message]) -> tuple[str, float]:
    """What the model says from the one passage it is shown, and how sure it is."""
    user = next(m.content for m in messages if m.role == "user")
    return (GOOD, -0.1) if "45 dias" in user else (BAD, -2.0)


class LogprobModel:
    """Answers from the passage in the prompt; one-token calls continue an assistant
    prefix word by word, with the alternatives' log-probabilities."""

    backend, context_size = "fake", 8192

    def __init__(self) -> None:
        self.name = "lp"
        self.calls: list[list[Message]] = []

    def complete(self, messages: Sequence[Message], params: DecodingParams) -> Completion:
        self.calls.append(list(messages))
        text, lp = _target(messages)
        prefix = messages[-1].content if messages[-1].role == "assistant" else ""
        if params.max_tokens == 1:
            rest = text[len(prefix):] if text.startswith(prefix) else ""
            piece = re.match(r"\s*\S+", rest)
            if piece is None:
                return Completion(self.name, (Choice("", "stop"),), Usage(5, 0))
            other = "Talvez" if piece.group(0) != "Talvez" else "Sim"
            top = ((piece.group(0), lp), (other, -4.0))
            return Completion(self.name, (Choice(piece.group(0), "length", (
                TokenLogprob(piece.group(0), lp, top),)),), Usage(5, 1))
        words = re.findall(r"\S+\s*", text)
        return Completion(self.name, (Choice(text, "stop", tuple(
            TokenLogprob(w, lp) for w in words)),), Usage(5, len(words)))

    def stream(self, messages: Sequence[Message], params: DecodingParams) -> Iterator[Delta]:
        done = self.complete(messages, params)
        yield Delta(done.text, "stop", done.usage)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


@pytest.fixture
def alc(tmp_path: Path, docs: Path) -> Iterator[Alicerce]:
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", generator="lp",
                               abstain_below=0.0))
    a.use_generator("lp", LogprobModel())
    a.ingest([docs], "kb")
    yield a
    a.close()


def test_prior_is_a_softmax_over_dense_similarity() -> None:
    def hit(dense: float | None) -> Hit:
        return Hit(1, "d", 0.0, "t", "", "", None, "", {},
                   {} if dense is None else {"dense": dense})
    p = prior([hit(0.9), hit(0.8), hit(0.2)])
    assert abs(sum(p) - 1) < 1e-9 and p[0] > p[1] > p[2]
    assert prior([hit(0.9), hit(None)]) == [0.5, 0.5]  # no dense score: uniform


@pytest.mark.parametrize("mode", ["sequence", "token"])
def test_a_fused_answer_rests_on_the_passage_that_holds_it(alc: Alicerce, mode: str) -> None:
    v, _ = alc.deploy_app("name: rh\ncollections: [kb]\nretrieval: {k: 3}\n"
                          f"fusion: {{mode: {mode}, documents: 3}}\n")
    assert v.spec["fusion"] == {"mode": mode, "documents": 3}
    a = alc.ask("Quantos dias de antecedência para pedir férias?", "rh")
    assert a.text.startswith("São 30 dias de férias")
    assert a.citations and "45 dias" in a.chunks[a.citations[0].n - 1].text
    alc.traces.flush()
    span = next(s for s in alc.traces.get(a.trace_id).spans if s["name"] == "generate")
    assert span["attrs"]["fusion"] == mode and span["attrs"]["calls"] >= 3
    assert abs(sum(span["attrs"]["prior"]) - 1) < 1e-3


def test_fusion_is_an_option_per_request_and_absent_from_plain_apps(alc: Alicerce) -> None:
    plain, _ = alc.deploy_app("name: plain\ncollections: [kb]\n")
    assert "fusion" not in plain.spec  # the hash of apps that do not use it is unchanged
    model = alc.generator("lp")
    assert isinstance(model, LogprobModel)
    before = len(model.calls)
    a = alc.ask("Quantos dias de antecedência para pedir férias?", "plain",
                fusion={"mode": "sequence", "documents": 2})
    assert len(model.calls) - before == 2 and a.text.startswith("São 30")
    with pytest.raises(InputError, match="fusion"):
        alc.ask("Quantos dias?", "plain", fusion="beam")
