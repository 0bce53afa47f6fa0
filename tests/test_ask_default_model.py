"""`ask` on the bundled default model over the sample handbook: the issue's "done when"."""

import re

import pytest
from conftest import EXAMPLES

from alicerce import Alicerce, Settings
from alicerce.language import detect

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def alc(tmp_path_factory: pytest.TempPathFactory) -> Alicerce:
    a = Alicerce(Settings.load(home=tmp_path_factory.mktemp("h")))  # every default
    a.ingest([EXAMPLES], "handbook")
    yield a
    a.close()


def test_portuguese_answer_with_citation(alc: Alicerce) -> None:
    a = alc.ask("Qual o prazo para enviar os comprovantes?", "handbook",
                params={"temperature": 0})
    assert a.versions["model"] == "qwen-1.5b" and a.language == "pt" and not a.abstained
    assert "30 dias" in a.text
    assert a.citations and a.citations[0].doc_key == "handbook/reembolso.md"
    assert re.search(r"\[\d\]", a.text)


def test_english_question_over_portuguese_documents(alc: Alicerce) -> None:
    a = alc.ask("How many days in advance must vacation be requested?", "handbook",
                params={"temperature": 0})
    assert a.language == "en" and not a.abstained
    assert "45" in a.text
    assert {c.doc_key for c in a.citations} == {"handbook/ferias.html"}
    assert detect(a.text) == "en"  # answered in English (it may quote a section's title)


def test_abstains_off_topic(alc: Alicerce) -> None:
    a = alc.ask("Qual é a capital da França?", "handbook")
    assert a.abstained and a.text == "Não encontrei isso nos documentos." and not a.citations
