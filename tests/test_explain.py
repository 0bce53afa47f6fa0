"""Answer explanations with a scripted model whose log-likelihood is known: the ablation
finds a planted decisive sentence (leave-one-out and the Lasso surrogate), a cited source
the answer does not rest on is said, explanations are kept, shown in the CLI and over HTTP
to whoever may read the trace only; and traces that cannot be explained say why. The real
model is in test_explain_real.py."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli_app
from alicerce.errors import InputError
from alicerce.explain.ablation import Unit, ablate, attribute
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message

DECISIVE = "O prazo para enviar os comprovantes é de 30 dias corridos."
DOCS = {
    "reembolso.md": "# Reembolso\n\nTáxi e hotel são reembolsados pela empresa. "
                    f"{DECISIVE} Bebidas alcoólicas não são reembolsadas.\n",
    "viagem.md": "# Prazos de viagem\n\nO adiantamento de viagem é pedido com cinco dias "
                 "úteis de antecedência. A prestação de contas segue o prazo dos comprovantes.\n",
}
ANSWER = "O prazo é de 30 dias corridos [1]. Vale também para viagens [2]."


def loglik(messages: Sequence[Message], text: str) -> float:
    """-20 nats, plus 12 when the decisive sentence is in the prompt, plus 0.5 for the
    refund of taxis: the answer rests on one sentence."""
    prompt = "\n".join(m.content for m in messages)
    return -20.0 + 12.0 * (DECISIVE in prompt) + 0.5 * ("Táxi e hotel" in prompt)


def test_leave_one_out_and_lasso_rank_the_decisive_sentence_first() -> None:
    text = "Fontes: A um dois três. B quatro cinco seis. C sete oito nove. D dez onze doze."
    spans = [(m.start(), m.end()) for m in re.finditer(r"[A-D][^.]*\.", text)]
    units = [Unit(1 if i < 2 else 2, 0, a, b, text[a:b]) for i, (a, b) in enumerate(spans)]
    messages = [Message("user", text)]
    assert ablate(messages, units, [True, False, True, False])[0].content == \
        "Fontes: A um dois três.  C sete oito nove. "

    def score(ms: Sequence[Message]) -> float:
        return -10.0 + 6.0 * ("C sete" in ms[0].content) + 1.0 * ("A um" in ms[0].content)
    ticks: list[tuple[int, int]] = []
    exact = attribute(score, messages, units, 24, progress=lambda i, n: ticks.append((i, n)))
    assert exact.method == "leave-one-out" and exact.calls == 2 + 2 + 4
    assert exact.units == (1.0, 0.0, 6.0, 0.0) and exact.sources == {1: 1.0, 2: 6.0}
    assert (exact.full, exact.empty) == (-3.0, -10.0) and ticks[-1] == (8, 8)
    sparse = attribute(score, messages, units, 7, seed=1)  # fewer calls than sentences
    assert sparse.method == "lasso" and sparse.calls == 7
    assert max(range(4), key=lambda i: sparse.units[i]) == 2 and sparse.fit_r2 > 0.9
    with pytest.raises(InputError, match="budget of 3 model calls is too small for 2 sources"):
        attribute(score, messages, units, 3)
    with pytest.raises(InputError, match="no source text"):
        attribute(score, messages, [], 10)


@pytest.fixture
def alc(tmp_path: Path) -> Iterator[Alicerce]:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                               generator="fake", guards={}))
    a.use_generator("fake", ScriptedGenerator(ANSWER, name="fake", scorer=loglik))
    a.ingest([docs], "kb")
    yield a
    a.close()


def test_an_answer_is_explained_by_the_sentence_it_rests_on(alc: Alicerce) -> None:
    answer = alc.ask("Qual o prazo para enviar os comprovantes de reembolso?", "kb")
    assert {c.n for c in answer.citations} == {1, 2}
    e = alc.explain(answer.trace_id)
    assert e.sentences[0].text == DECISIVE and e.sentences[0].score == 12.0
    assert e.full_logprob == -7.5 and e.empty_logprob == -20.0
    by_doc = {s.doc_key.split("/")[-1]: s for s in e.sources}
    assert by_doc["reembolso.md"].relied and by_doc["reembolso.md"].drop == 12.5
    assert by_doc["viagem.md"].cited and not by_doc["viagem.md"].relied
    assert [s.doc_key.split("/")[-1] for s in e.unrelied] == ["viagem.md"]
    assert e.model == "fake" and e.method == "leave-one-out" and not e.notes
    # kept: asking again costs no model call
    gen = alc.generator("fake")
    assert isinstance(gen, ScriptedGenerator)
    calls = len(gen.scored)
    assert alc.explain(answer.trace_id) == e and len(gen.scored) == calls
    assert alc.explain(answer.trace_id, refresh=True).sentences[0].text == DECISIVE
    assert len(gen.scored) == 2 * calls


def test_what_cannot_be_explained_says_why(alc: Alicerce) -> None:
    old = alc.traces.record("kb", "local", "Pergunta antiga?", spans=[
        {"name": "prompt", "start_ms": 0, "ms": 1, "attrs": {"messages": [
            {"role": "user", "content": "Fontes: ..."}]}},
        {"name": "generate", "start_ms": 1, "ms": 1, "attrs": {"output": "30 dias."}}],
        lineage={"model": "fake"})
    withheld = alc.traces.record("kb", "local", "Qual o CPF?", spans=[
        {"name": "prompt", "start_ms": 0, "ms": 1, "attrs": {"messages": [], "sources": []}},
        {"name": "generate", "start_ms": 1, "ms": 1,
         "attrs": {"output": "[withheld by output:pii]"}}], lineage={"model": "fake"})
    nothing = alc.traces.record("kb", "local", "Oi?", answer={
        "answer": "Não encontrei.", "abstained": True, "citations": [], "versions": {},
        "usage": {}, "timings": {}})
    answer = alc.ask("Qual o prazo para enviar os comprovantes de reembolso?", "kb")
    alc.traces.flush()
    with pytest.raises(InputError, match="recorded before explanations existed"):
        alc.explain(old)
    with pytest.raises(InputError, match="blocked or redacted by a rail"):
        alc.explain(withheld)
    with pytest.raises(InputError, match="no model answer from documents"):
        alc.explain(nothing)
    with pytest.raises(InputError, match="no trace with id"):
        alc.explain("f" * 24)
    with pytest.raises(InputError, match="too small"):
        alc.explain(answer.trace_id, budget=2)
    # the weights changed since the answer: refused, not explained with other weights
    t = alc.traces.get(answer.trace_id)
    other = alc.traces.record("kb", "local", t.question, spans=t.spans, answer={
        "answer": t.answer, "abstained": False, "citations": t.citations, "versions": {},
        "usage": {}, "timings": {}}, lineage={**t.lineage, "model_identity": "sha256:" + "0" * 64})
    alc.traces.flush()
    with pytest.raises(InputError, match="fake is not the model that answered"):
        alc.explain(other)


def test_cli_and_http_explain_for_whoever_may_read_the_trace(
        alc: Alicerce, monkeypatch: pytest.MonkeyPatch) -> None:
    _, ana = alc.keys.create("ana", ["ask"])
    _, bia = alc.keys.create("bia", ["ask"])
    _, reader = alc.keys.create("auditor", ["read"])
    with TestClient(_app(alc)) as client:
        asked = client.post("/v1/apps/kb/ask", headers=_bearer(ana), json={
            "question": "Qual o prazo para enviar os comprovantes de reembolso?"}).json()
        tid = asked["trace_id"]
        alc.traces.flush()
        r = client.post(f"/v1/traces/{tid}/explain", headers=_bearer(ana), json={})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["sentences"][0]["text"] == DECISIVE
        assert [s["relied"] for s in body["sources"]] == [True, False]
        assert client.post(f"/v1/traces/{tid}/explain", headers=_bearer(bia),
                           json={}).status_code == 403  # as GET /v1/traces/{id} answers
        assert client.post(f"/v1/traces/{tid}/explain", headers=_bearer(reader),
                           json={}).status_code == 403  # read keys spend no model call
        assert client.get(f"/v1/traces/{tid}/explain", headers=_bearer(reader)).json()[
            "trace_id"] == tid  # ... and read the kept one
        assert client.post(f"/v1/traces/{tid}/explain", headers=_bearer(ana),
                           json={"budget": 100000}).status_code == 400  # before any work
        assert client.get(f"/v1/traces/{tid}/explain", headers=_bearer(ana)).json()[
            "sentences"][0]["text"] == DECISIVE  # the kept one
    home = alc.settings.home
    monkeypatch.setattr("alicerce.cli.explain.open_home", lambda _: _Keep(alc))
    out = CliRunner().invoke(cli_app, ["explain", tid, "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert "not relied on" in out.output and DECISIVE in out.output
    assert "Cited but not relied on: [2]" in out.output


class _Keep:
    """The test's home, left open when the CLI's `with` block ends."""

    def __init__(self, alc: Alicerce) -> None:
        self.alc = alc

    def __enter__(self) -> Alicerce:
        return self.alc

    def __exit__(self, *exc: object) -> None:
        return None


def _app(alc: Alicerce) -> object:
    from alicerce.server import create_app

    return create_app(alc.settings, alc)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def by_role(messages: Sequence[Message]) -> str:
    """Answers an intern otherwise, and without the travel source says so."""
    prompt = messages[-1].content
    if "adiantamento de viagem" not in prompt:
        return "Não sei sobre viagens; o prazo é de 30 dias [1]."
    question = prompt.rsplit("Pergunta:", 1)[-1].rsplit("Question:", 1)[-1]
    return "São 10 dias [1]." if "estagiária" in question else "São 30 dias corridos [1]."


def test_counterfactual_reruns_are_linked_and_their_differences_marked(
        alc: Alicerce, monkeypatch: pytest.MonkeyPatch) -> None:
    alc.use_generator("fake", ScriptedGenerator(by_role, name="fake", scorer=loglik))
    first = alc.ask("Qual o prazo da gerente para enviar os comprovantes?", "kb")
    assert first.text.startswith("São 30 dias")
    cf = alc.counterfactual(first.trace_id, "troque 'gerente' por 'estagiária'")
    assert cf.new_question == "Qual o prazo da estagiária para enviar os comprovantes?"
    assert cf.new_answer.startswith("São 10 dias")
    assert [(s.op, s.text.strip()) for s in cf.diff if s.op != "equal"] == [
        ("delete", "30"), ("insert", "10"), ("delete", "corridos")]
    assert alc.traces.get(cf.new_trace_id).question == cf.new_question
    linked = alc.counterfactuals.of(first.trace_id)
    assert [c["new_trace_id"] for c in linked] == [cf.new_trace_id]
    assert alc.counterfactuals.of(cf.new_trace_id)[0]["trace_id"] == first.trace_id
    # a source removed from the recorded prompt: the same model answers without it
    gone = alc.counterfactual(first.trace_id, "without source [2]")
    assert gone.new_answer.startswith("Não sei sobre viagens")
    t = alc.traces.get(gone.new_trace_id)
    assert t.origin == "counterfactual" and t.lineage["counterfactual_of"] == first.trace_id
    assert "adiantamento de viagem" not in t.spans[0]["attrs"]["messages"][-1]["content"]
    for change, why in (("troque 'diretor' por 'estagiária'", "is not in the question"),
                        ("sem a fonte 9", "no source \\[9\\]"),
                        ("faça outra coisa", "cannot read the change")):
        with pytest.raises(InputError, match=why):
            alc.counterfactual(first.trace_id, change)
    # the new answer goes through the app's output rails, as the first one did
    alc.deploy_app("name: rh\ncollections: [kb]\nmodel: fake\nguards: {output: [pii]}\n")
    leaky = alc.ask("Qual o prazo da gerente para enviar os comprovantes?", "rh")
    alc.use_generator("fake", ScriptedGenerator("O CPF dela é 111.444.777-35.", name="fake",
                                                scorer=loglik))
    redacted = alc.counterfactual(leaky.trace_id, "sem a fonte 1")
    assert "111.444.777-35" not in redacted.new_answer and "<CPF>" in redacted.new_answer
    from alicerce.cli.explain import render_counterfactual

    shown = render_counterfactual(cf)
    assert "[-30-] {+10+}" in shown and "New question:" in shown


def test_counterfactuals_over_http_check_the_trace_and_the_change(alc: Alicerce) -> None:
    _, ana = alc.keys.create("ana", ["ask"])
    _, bia = alc.keys.create("bia", ["ask"])
    _, reader = alc.keys.create("auditor", ["read"])
    with TestClient(_app(alc)) as client:
        tid = client.post("/v1/apps/kb/ask", headers=_bearer(ana), json={
            "question": "Qual o prazo da gerente para enviar os comprovantes?"}).json()[
            "trace_id"]
        alc.traces.flush()
        url = f"/v1/traces/{tid}/counterfactual"
        ok = client.post(url, headers=_bearer(ana), json={"change": "sem a fonte 2"})
        assert ok.status_code == 200, ok.text
        assert alc.traces.get(ok.json()["new_trace_id"]).caller != "local"
        assert client.post(url, headers=_bearer(bia), json={"change": "sem a fonte 2"}
                           ).status_code == 403
        assert client.post(url, headers=_bearer(reader), json={"change": "sem a fonte 2"}
                           ).status_code == 403
        bad = client.post(url, headers=_bearer(ana), json={"change": "hmm"})
        assert bad.status_code == 400 and "troque" in bad.json()["error"]["message"]
        path = client.post(url, headers=_bearer(ana), json={"change": "modelo /etc/passwd"})
        assert path.status_code in (403, 404)  # never a file path
        listed = client.get(f"/v1/traces/{tid}/counterfactuals", headers=_bearer(reader))
        assert [c["id"] for c in listed.json()["data"]] == [ok.json()["id"]]
