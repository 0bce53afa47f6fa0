from collections.abc import Sequence
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings
from alicerce.chains.citations import citations, interleave
from alicerce.errors import InputError, NotFoundError
from alicerce.language import detect
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Answer, Hit, Message


@pytest.fixture
def kb(tmp_path: Path, docs: Path) -> Alicerce:
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                               generator="fake"))
    a.ingest([docs], "kb")
    yield a
    a.close()


def hit(i: int, text: str = "t") -> Hit:
    return Hit(i, f"d{i}", 1.0 / i, text, f"T{i}", "", None, "src", {})


def test_citations_keep_given_sources_and_drop_invented_ones() -> None:
    text, cites = citations("O prazo é 30 dias [1]. Táxi e hotel [2, 7]. Nada [9] .",
                            [hit(1), hit(2)])
    assert text == "O prazo é 30 dias [1]. Táxi e hotel [2]. Nada."
    assert [(c.n, c.doc_key) for c in cites] == [(1, "d1"), (2, "d2")]
    assert citations("Trinta dias [1]. [1]", [hit(1)])[0] == "Trinta dias [1]."
    assert citations("A [1][1] e B [1].", [hit(1)])[0] == "A [1] e B [1]."


def test_merge_interleaves_and_dedupes() -> None:
    merged = interleave([[hit(1), hit(2), hit(3)], [hit(2), hit(4)]])
    assert [h.chunk_id for h in merged] == [1, 2, 4, 3]


def test_language_detection() -> None:
    assert detect("Qual o prazo para enviar os comprovantes?") == "pt"
    assert detect("How do I reset my password?") == "en"
    assert detect("VPN") == "pt" and detect("VPN", default="en") == "en"


def test_ask_builds_a_numbered_prompt_and_parses_citations(kb: Alicerce) -> None:
    gen = ScriptedGenerator("Envie os comprovantes em até 30 dias [1]. Veja também [5].")
    kb.use_generator("fake", gen)
    a = kb.ask("Em quantos dias envio os receipts do refund?", "kb")
    system, user = gen.calls[0]
    assert system.role == "system" and "Não encontrei isso nos documentos." in system.content
    assert "[1] " in user.content
    # The question is the last thing the model reads (a reminder after it made small models
    # answer with bare "[1] [2]").
    assert user.content.rstrip().endswith("Pergunta: Em quantos dias envio os receipts do refund?")
    assert a.language == "pt" and not a.abstained
    assert a.text == "Envie os comprovantes em até 30 dias [1]. Veja também."
    assert [c.n for c in a.citations] == [1] and a.citations[0].chunk_id == a.chunks[0].chunk_id
    assert a.versions["prompt"] == "rag-answer@1" and a.versions["model"] == "scripted"
    assert a.versions["collection"].startswith("kb@") and "decoding" in a.versions
    assert {"retrieve_ms", "generate_ms", "total_ms", "first_token_ms"} <= set(a.timings)
    assert a.usage.prompt_tokens > 0


def test_model_abstention_has_no_citations(kb: Alicerce) -> None:
    kb.use_generator("fake", ScriptedGenerator("I could not find this in the documents. [1]"))
    a = kb.ask("What is the wifi password policy for guests?", "kb")
    assert a.abstained and a.citations == () and a.language == "en"
    assert a.text == "I could not find this in the documents."


def test_weak_retrieval_abstains_without_calling_the_model(tmp_path: Path,
                                                           docs: Path) -> None:
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing",
                                abstain_below=0.99)) as a:
        a.ingest([docs], "kb")
        gen = ScriptedGenerator("should not be used")
        a.use_generator("fake", gen)
        ans = a.ask("Qual é a capital da França?", "kb", model="fake")
        assert ans.abstained and ans.text == "Não encontrei isso nos documentos."
        assert gen.calls == [] and ans.chunks == ()


def test_context_budget_limits_sources(tmp_path: Path, docs: Path) -> None:
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                                answer_context_tokens=128)) as a:
        a.ingest([docs], "kb")
        gen = ScriptedGenerator("ok [1]")
        a.use_generator("fake", gen)
        ans = a.ask("refund receipts days", "kb", model="fake", k=10)
        assert 1 <= len(ans.chunks) < 5
        assert sum(gen.count_tokens(h.text) + 12 for h in ans.chunks) <= 128


def test_streaming_yields_text_then_the_answer(kb: Alicerce) -> None:
    kb.use_generator("fake", ScriptedGenerator("Trinta dias [1]."))
    items = list(kb.ask_stream("prazo do refund", "kb"))
    assert isinstance(items[-1], Answer)
    assert "".join(i for i in items[:-1] if isinstance(i, str)) == "Trinta dias [1]."


def test_step_back_retrieves_for_the_general_question_too(kb: Alicerce) -> None:
    gen = ScriptedGenerator(["What are the office hours and lunch?", "Das 9h às 18h [1]."])
    kb.use_generator("fake", gen)
    a = kb.ask("Can I arrive at 9h?", "kb", step_back=True)
    assert len(gen.calls) == 2 and "Step-back question" in gen.calls[0][-1].content
    assert "step_back_ms" in a.timings and any(h.doc_key == "q2" for h in a.chunks)


def test_bad_requests(kb: Alicerce) -> None:
    kb.use_generator("fake", ScriptedGenerator("x"))
    with pytest.raises(InputError, match="empty"):
        kb.ask("  ", "kb")
    with pytest.raises(InputError, match="over the limit"):
        kb.ask("x" * 5000, "kb")
    with pytest.raises(NotFoundError):
        kb.ask("x", "missing")
    with pytest.raises(NotFoundError):
        kb.ask("x", "kb", prompt="nope@2")
    with pytest.raises(InputError, match="one candidate"):
        kb.ask("x", "kb", params={"n": 2})
    with pytest.raises(InputError, match="temperature"):
        kb.ask("x", "kb", params={"temperature": -1})


def test_chat_condenses_follow_ups_and_keeps_history(kb: Alicerce) -> None:
    def reply(messages: Sequence[Message]) -> str:
        last = messages[-1].content
        if "Complete question:" in last or "Pergunta completa:" in last:
            return "How many vacation days per year?"
        return "30 days [1]." if "vacation" in last else "Taxi and hotel [1]."

    kb.use_generator("fake", ScriptedGenerator(reply))
    cid, turn = kb.chat("What is refunded when I travel?", "kb")
    first = next(x for x in turn if isinstance(x, Answer))
    assert first.standalone_question == "What is refunded when I travel?"
    cid2, turn = kb.chat("And the holidays?", "kb", cid)
    second = next(x for x in turn if isinstance(x, Answer))
    assert cid2 == cid and second.standalone_question == "How many vacation days per year?"
    history = kb.conversations.history(cid)
    assert [m.role for m in history] == ["user", "assistant"] * 2
    assert history[2].content == "And the holidays?"
    kb.ingest([kb.settings.home.parent / "docs"], "other")
    with pytest.raises(NotFoundError, match="no conversation"):
        kb.chat("x", "other", cid)  # another app's conversation: not found
    with pytest.raises(NotFoundError, match="no conversation"):
        kb.chat("x", "kb", cid, caller="someone-else")  # another caller's: the same
    with pytest.raises(NotFoundError, match="no conversation"):
        kb.chat("x", "kb", "c-unknown")  # ids are never chosen by the client


def test_failed_chat_turns_store_nothing(kb: Alicerce) -> None:
    kb.use_generator("fake", ScriptedGenerator("ok [1]"))
    for bad in ({"params": {"top_p": 2}}, {"prompt": "missing"}, {"model": "nope"}):
        with pytest.raises(InputError):
            _, turn = kb.chat("What is refunded?", "kb", None, **bad)
            list(turn)
    with pytest.raises(NotFoundError):
        kb.chat("x", "no-such-collection", None)
    db = kb.conversations._db
    assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0


def test_techniques(kb: Alicerce) -> None:
    gen = ScriptedGenerator(["Step 1: 3 x 4 = 12.\nFinal answer: 12"])
    kb.use_generator("fake", gen)
    out = kb.generate("What is 3 x 4?", technique="cot")
    assert (out.text, out.reasoning) == ("12", "Step 1: 3 x 4 = 12.")
    assert out.prompts == ("cot@1",) and "Final answer:" in gen.calls[0][-1].content

    kb.use_generator("fake", ScriptedGenerator(["Reasoning here.", "12"]))
    out = kb.generate("What is 3 x 4?", technique="zero-shot-cot")
    assert out.text == "12" and out.reasoning == "Reasoning here."

    gen = ScriptedGenerator(["1. How much is 3 x 4?\n2. Add 1.", "12", "13", "13"])
    kb.use_generator("fake", gen)
    out = kb.generate("What is 3 x 4 + 1?", technique="least-to-most")
    assert out.steps == (("How much is 3 x 4?", "12"), ("Add 1.", "13")) and out.text == "13"
    assert "A: 12" in gen.calls[2][-1].content  # later steps see earlier answers

    kb.use_generator("fake", ScriptedGenerator(["What is multiplication?", "Repeated sums.",
                                                "12"]))
    out = kb.generate("What is 3 x 4?", technique="step-back")
    assert out.steps == (("What is multiplication?", "Repeated sums."),) and out.text == "12"


def test_k_shot_static_and_dynamic(kb: Alicerce) -> None:
    from alicerce.chains.techniques import Example

    examples = [Example("Onde fica a biblioteca?", "Where is the library?"),
                Example("Bom dia", "Good morning"),
                Example("Onde fica a estação?", "Where is the station?")]
    gen = ScriptedGenerator("Where is the bank?")
    kb.use_generator("fake", gen)
    out = kb.generate("Onde fica o banco?", technique="k-shot", examples=examples,
                      instructions="Traduza para inglês.")
    prompt = gen.calls[0][-1].content
    assert out.text == "Where is the bank?" and prompt.startswith("Traduza para inglês.")
    assert prompt.count("Input:") == 4 and prompt.rstrip().endswith("Output:")
    kb.generate("Onde fica o banco?", technique="k-shot", examples=examples, k=2)
    picked = gen.calls[1][-1].content
    assert "Bom dia" not in picked and picked.count("Input:") == 3
    with pytest.raises(InputError, match="needs examples"):
        kb.generate("x", technique="k-shot")
    with pytest.raises(InputError, match="unknown technique"):
        kb.generate("x", technique="tree-of-thought")


def test_reattribution_moves_a_citation_to_the_source_holding_its_figures() -> None:
    from alicerce.chains.citations import reattribute

    sources = [hit(1, "Reembolso em 30 dias."), hit(2, "Adiantamento de 70%."),
               hit(3, "Férias pedidas com 45 dias de antecedência.")]
    text = "Request vacation 45 days ahead [2].\n\nReceipts: 30 days [1]. Hello [2]."
    assert reattribute(text, sources) == (
        "Request vacation 45 days ahead [3].\n\nReceipts: 30 days [1]. Hello [2].")
    # The marker closes everything since the previous one, sentences included.
    assert reattribute("It takes 45 days. See source two [2].", sources) == (
        "It takes 45 days. See source two [3].")
    # Figures no source holds: the model's citation stays (nothing better to offer).
    assert reattribute("It costs 999 [2].", sources) == "It costs 999 [2]."


def test_uncited_sentences_get_the_source_that_holds_them() -> None:
    from alicerce.chains.citations import attach

    sources = [hit(1, "Os comprovantes devem ser enviados em até 30 dias corridos."),
               hit(2, "Férias pedidas com 45 dias de antecedência pelo sistema de RH.")]
    text = ("O prazo é de 30 dias corridos. As férias são pedidas pelo sistema de RH.\n"
            "1. Obrigado pela pergunta! Custa 999 reais.")
    assert attach(text, sources) == (
        "O prazo é de 30 dias corridos [1]. As férias são pedidas pelo sistema de RH [2].\n"
        "1. Obrigado pela pergunta! Custa 999 reais.")
    assert attach("Já citado [2].", sources) == "Já citado [2]."


def test_an_abstention_behind_a_citation_marker_is_still_one() -> None:
    from alicerce.chains.citations import is_abstention

    assert is_abstention("[1] Não encontrei isso nos documentos.")
    assert is_abstention("[1, 2]. I could not find this in the documents.")
    assert is_abstention("   ")
    assert not is_abstention("[1] O prazo é de 30 dias.")


def test_numbered_lists_keep_their_numbers_and_pages_come_from_the_sources() -> None:
    """Issue 16 item 15: list numbers were taken as sentence ends and cited ("1 [1]. ...")."""
    from alicerce.chains.citations import attach
    from alicerce.metrics.grounding import check

    src = [Hit(1, "reembolso.md", 1.0, "Acesse o portal em até 30 dias e anexe as notas "
               "fiscais 1 e 2 do pedido.", "Reembolso", "", None, "reembolso.md", {})]
    text = "1. Acesse o portal em até 30 dias.\n2. Anexe as notas fiscais."
    out = attach(text, src)
    assert out.startswith("1. Acesse") and "\n2. Anexe" in out
    assert "1 [1]" not in out and "2 [1]" not in out
    assert "30 dias [1]." in out
    invented = check("The vacation policy is on page 10 and gives 30 days [1].",
                     ["Vacation: 30 days a year, at most 10 per request."])
    assert invented.score <= 0.5 and "page 10" in invented.unsupported
    real = check("A política está na página 2 [1].", ["A política de férias"], pages=[2])
    assert "page 2" not in real.unsupported and real.facts == 1.0


def test_the_sources_are_checked_for_the_answer_before_answering(tmp_path: Path,
                                                                  docs: Path) -> None:
    """answerable_min: the yes/no question follows the answer's own prompt (its prefix is
    the answer's, so the prompt cache serves the answer), and a "no" abstains without
    generating."""
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                               generator="fake", answerable_min=0.5))
    a.ingest([docs], "kb")
    gen = ScriptedGenerator("Envie os comprovantes em até 30 dias [1].", answerable="não")
    a.use_generator("fake", gen)
    out = a.ask("Em quantos dias envio os receipts do refund?", "kb")
    assert out.abstained and out.text == "Não encontrei isso nos documentos."
    assert gen.calls == [] and len(gen.checks) == 1  # no answer was generated
    [check] = gen.checks
    assert check[-1].content.endswith("Responda apenas sim ou não.")
    assert "Pergunta: Em quantos dias envio os receipts do refund?" in check[-1].content
    spans = {s["name"]: s["attrs"] for s in a.traces.get(out.trace_id).spans}
    assert spans["answerable"]["p_yes"] == 0.0 and spans["answerable"]["abstain"] is True
    gen.answerable = "sim"
    yes = a.ask("Em quantos dias envio os receipts do refund?", "kb")
    assert not yes.abstained and yes.text.startswith("Envie os comprovantes em até 30 dias")
    [answer_prompt] = gen.calls
    assert gen.checks[-1][-1].content.startswith(answer_prompt[-1].content)  # shared prefix
    assert yes.usage.prompt_tokens > sum(len(m.content.split()) for m in answer_prompt)
    a.close()


def test_the_model_reads_sentence_windows_of_the_chunks(tmp_path: Path) -> None:
    docs = tmp_path / "d"
    docs.mkdir()
    filler = " ".join(f"O item {i} do manual trata de um assunto diferente." for i in range(30))
    (docs / "manual.md").write_text(
        f"# Manual\n\n{filler} O prazo para enviar os comprovantes é de 30 dias corridos. "
        f"Pedidos aprovados até o dia 20 são pagos no mesmo mês. {filler}\n", encoding="utf-8")
    settings = dict(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                    generator="fake", chunk_tokens=2000)
    for select, whole in (("windows", False), ("passages", True)):
        a = Alicerce(Settings.load(**settings, answer_select=select,
                                   answer_context_tokens=80 if select == "windows" else 4000))
        a.ingest([docs], "kb")
        gen = ScriptedGenerator("São 30 dias [1].")
        a.use_generator("fake", gen)
        out = a.ask("Qual o prazo para enviar os comprovantes?", "kb")
        prompt = gen.calls[0][-1].content
        assert "30 dias corridos" in prompt and "dia 20" in prompt  # the answer and its neighbour
        assert ("O item 3 do manual" in prompt) is whole
        assert ("…" in out.chunks[0].text) is not whole  # the window, as the model read it
        assert [c.n for c in out.citations] == [1]
        a.close()
