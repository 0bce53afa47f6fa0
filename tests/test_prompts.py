from pathlib import Path

import pytest

from alicerce.errors import InputError, NotFoundError
from alicerce.prompts.builtin import BUILTINS
from alicerce.prompts.registry import PromptRegistry
from alicerce.prompts.template import PromptTemplate


def test_variables_come_from_both_templates_and_are_enforced() -> None:
    p = PromptTemplate("t", "Q: {{ question }}{% for s in sources %}{{ s.text }}{% endfor %}",
                       "Answer in {{ language }}.")
    assert p.variables == ("language", "question", "sources")
    msgs = p.render(question="why?", sources=[{"text": "because"}], language="pt")
    assert [m.role for m in msgs] == ["system", "user"]
    assert msgs[1].content == "Q: why?because" and msgs[0].content == "Answer in pt."
    with pytest.raises(InputError, match="missing language"):
        p.render(question="x", sources=[])
    with pytest.raises(InputError, match="unknown extra"):
        p.render(question="x", sources=[], language="en", extra=1)


def test_syntax_errors_and_sandbox() -> None:
    with pytest.raises(InputError, match="line 1"):
        PromptTemplate("t", "{% if x %}unclosed")
    with pytest.raises(InputError, match="empty template"):
        PromptTemplate("t", "  ")
    evil = PromptTemplate("t", "{{ x.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InputError, match="could not be rendered"):
        evil.render(x="")


def test_registry_versions_labels_rollback_and_diff(tmp_path: Path) -> None:
    reg = PromptRegistry(tmp_path / "p.db")
    v1 = reg.create("greet", "Olá {{ name }}", description="first")
    assert (v1.version, reg.create("greet", "Olá {{ name }}").version) == (1, 1)  # same hash
    v2 = reg.create("greet", "Oi {{ name }}!", "Seja breve.")
    assert v2.version == 2 and v2.hash != v1.hash
    assert reg.get("greet").version == 2  # no production label yet: newest
    reg.label("greet@1", "production")
    assert reg.get("greet").version == 1 and reg.get("greet@production").version == 1
    reg.label("greet@2", "production")
    reg.label("greet@2", "staging")
    assert reg.get("greet").labels == ("production", "staging")
    reg.label("greet@1", "production")  # rollback
    assert reg.get("greet@production").version == 1
    assert [(lab, old, new) for lab, old, new, _ in reg.history("greet")] == [
        ("production", None, 1), ("production", 1, 2), ("staging", None, 2),
        ("production", 2, 1)]
    diff = reg.diff("greet@1", "greet@2")
    assert "-Olá {{ name }}" in diff and "+Oi {{ name }}!" in diff and "+Seja breve." in diff
    assert reg.get("greet@1").template == "Olá {{ name }}"  # versions never change
    reg.close()
    again = PromptRegistry(tmp_path / "p.db")  # persisted
    assert again.get("greet@production").version == 1


def test_registry_errors_name_what_exists(tmp_path: Path) -> None:
    reg = PromptRegistry(tmp_path / "p.db")
    reg.create("a", "x")
    with pytest.raises(NotFoundError) as exc:
        reg.get("a@7")
    assert "versions 1..1" in exc.value.hint
    with pytest.raises(NotFoundError, match="no prompt a@canary"):
        reg.get("a@canary")
    with pytest.raises(NotFoundError) as exc:
        reg.get("nope")
    assert "known prompts: a" in exc.value.hint
    with pytest.raises(InputError, match="invalid prompt name"):
        reg.create("Bad Name", "x")
    with pytest.raises(InputError, match="invalid label"):
        reg.label("a@1", "1st")
    with pytest.raises(InputError):
        reg.create("b", "{{ broken")
    assert [p.name for p in reg.all()] == ["a"]  # nothing half-written


def test_builtins_are_seeded_once_and_render(tmp_path: Path) -> None:
    reg = PromptRegistry(tmp_path / "p.db", BUILTINS)
    names = {p.name for p in reg.all()}
    assert {"rag-answer", "condense-question", "k-shot", "cot", "step-back"} <= names
    reg.create("rag-answer", "Only {{ question }} {{ sources }} {{ language }} "
               "{{ extractiveness }} {{ abstain }}")
    reg.close()
    reg = PromptRegistry(tmp_path / "p.db", BUILTINS)
    assert reg.get("rag-answer").version == 1  # production still the builtin
    assert len(reg.versions("rag-answer")) == 2
    msgs = reg.get("rag-answer").render(
        question="Qual o prazo?", language="pt", extractiveness="quote", abstain="Não sei.",
        sources=[{"n": 1, "title": "Reembolso", "section": "Prazo", "text": "30 dias."}])
    assert "Copie literalmente" in msgs[0].content and "Não sei." in msgs[0].content
    assert "[1] Reembolso — Prazo" in msgs[1].content and "Pergunta: Qual o prazo?" in \
        msgs[1].content


def test_a_changed_shipped_prompt_moves_production_unless_the_user_chose(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    old = PromptTemplate("rag-answer", "v1 {{ question }}")
    PromptRegistry(db, [old]).close()
    reg = PromptRegistry(db, [PromptTemplate("rag-answer", "v2 {{ question }}")])
    assert reg.get("rag-answer").template == "v2 {{ question }}"  # production followed
    mine = reg.create("rag-answer", "mine {{ question }}")
    reg.label(mine.ref, "production")
    reg.close()
    reg = PromptRegistry(db, [PromptTemplate("rag-answer", "v3 {{ question }}")])
    assert reg.get("rag-answer").ref == mine.ref  # the user's choice stays
    assert reg.get("rag-answer@4").template == "v3 {{ question }}"
