"""Sentence windows: what of the retrieved chunks the model reads (chains/select.py)."""

from __future__ import annotations

from alicerce.chains.select import sentences, windows
from alicerce.testing.fakes import HashingEmbedder
from alicerce.types import Hit

REEMBOLSO = ("## Prazos\nO prazo para enviar os comprovantes é de 30 dias corridos após a "
             "data da despesa. Pedidos aprovados até o dia 20 são pagos na folha do mesmo "
             "mês. Pedidos fora do prazo precisam de aprovação da diretoria financeira. "
             "Bebidas alcoólicas e multas de trânsito não são reembolsadas.")
FERIAS = ("As férias devem ser pedidas com 45 dias de antecedência no sistema de RH. "
          "O gestor aprova o pedido em até cinco dias úteis.")
SENHA = "Senhas precisam de pelo menos 14 caracteres. Troque a senha a cada 90 dias."


def hit(n: int, text: str) -> Hit:
    return Hit(n, f"doc-{n}", 1.0 / n, text, f"Título {n}", "", None, "", {"dense": 0.9})


def words(text: str) -> int:
    return len(text.split())


def test_sentences_split_and_short_fragments_join_the_next() -> None:
    parts = sentences(REEMBOLSO)
    assert parts[0].startswith("## Prazos O prazo para enviar")  # the heading rides along
    assert len(parts) == 4
    assert sentences("Sim.") == ["Sim."]
    assert sentences("  \n ") == []
    # a list: each item its own sentence, the bare number joined to its text
    assert sentences("1. Acesse o portal financeiro agora.\n2. Anexe os comprovantes "
                     "de cada despesa.") == ["1. Acesse o portal financeiro agora.",
                                              "2. Anexe os comprovantes de cada despesa."]


def test_windows_keep_the_answering_sentence_and_its_neighbour_within_budget() -> None:
    hits = [hit(1, FERIAS), hit(2, REEMBOLSO), hit(3, SENHA)]
    out = windows("Qual o prazo para enviar os comprovantes da despesa?", hits,
                  HashingEmbedder(), 50, words)
    [kept] = out  # the other passages did not make the budget
    assert kept.chunk_id == 2
    assert "30 dias corridos" in kept.text
    assert "Pedidos aprovados até o dia 20" in kept.text  # its neighbour
    assert "Bebidas" not in kept.text and kept.text.endswith("…")  # cut, and marked
    assert kept.doc_key == "doc-2" and kept.title == "Título 2"  # still the same chunk
    assert words(kept.text) + 12 <= 50
    roomy = windows("Qual o prazo para enviar os comprovantes da despesa?", hits,
                    HashingEmbedder(), 500, words)
    assert [h.chunk_id for h in roomy] == [1, 2, 3]  # their retrieval order, not the cosine's
    assert [h.text for h in roomy] == [FERIAS, REEMBOLSO.replace("\n", " "), SENHA]


def test_a_tight_budget_takes_the_best_sentence_alone() -> None:
    out = windows("Senhas precisam de quantos caracteres?", [hit(1, REEMBOLSO), hit(2, SENHA)],
                  HashingEmbedder(), 24, words)
    assert [h.chunk_id for h in out] == [2]
    assert out[0].text.startswith("Senhas precisam de pelo menos 14 caracteres.")


def test_overlapping_chunks_are_read_once() -> None:
    a = "O prazo para enviar os comprovantes é de 30 dias corridos. Depois disso, a diretoria."
    b = "O prazo para enviar os comprovantes é de 30 dias corridos. Outra frase sobre nada."
    out = windows("prazo para enviar os comprovantes", [hit(1, a), hit(2, b)],
                  HashingEmbedder(), 200, words)
    text = " ".join(h.text for h in out)
    assert text.count("30 dias corridos") == 1


def test_nothing_to_read_gives_no_sources() -> None:
    assert windows("pergunta", [hit(1, "  ")], HashingEmbedder(), 100, words) == ()
    assert windows("pergunta", [], HashingEmbedder(), 100, words) == ()


def test_the_budget_adapts_to_how_far_the_other_windows_fall_below_the_best() -> None:
    hits = [hit(1, FERIAS), hit(2, REEMBOLSO), hit(3, SENHA)]
    q = "Senhas precisam de quantos caracteres?"
    fixed = windows(q, hits, HashingEmbedder(), 500, words)
    assert [h.chunk_id for h in fixed] == [1, 2, 3]  # no floor: the whole budget is filled
    tight = windows(q, hits, HashingEmbedder(), 500, words, least=0, drop=0.0)
    assert [h.chunk_id for h in tight] == [3]  # only the best window, with its neighbour
    assert "14 caracteres" in tight[0].text
    # past `least` tokens only: under it, the lower windows still go in
    assert windows(q, hits, HashingEmbedder(), 500, words, least=400, drop=0.0) == fixed
    # a drop wide enough to take every score is the fixed budget again
    assert windows(q, hits, HashingEmbedder(), 500, words, least=0, drop=1.0) == fixed


def test_the_adaptive_budget_keeps_the_best_sentence_in_the_other_language() -> None:
    # an English question over a Portuguese handbook: every Portuguese sentence scores
    # under the English ones, so one shared best would leave the answer out
    english = hit(1, "Welcome to the company. Collect your badge and laptop at reception.")
    ferias = hit(2, FERIAS)
    out = windows("How many days in advance must vacation be requested at the company?",
                  [english, ferias], HashingEmbedder(), 500, words, least=0, drop=0.0)
    assert [h.chunk_id for h in out] == [1, 2]
    assert "45 dias" in out[1].text
