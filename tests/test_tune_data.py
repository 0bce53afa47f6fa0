"""Training rows from what a home holds: feedback (users' corrections win, answers rated up
are kept, ratings down without a correction are skipped with the reason, the prompt is the
one the model saw), golden sets, synthetic rows that training refuses until reviewed; the
held-out comparison and the gate that decides whether an adapter takes a label (scripted
models here; tests/test_tune.py trains for real)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alicerce import Alicerce
from alicerce.cli import app as cli
from alicerce.datasets import Row, build
from alicerce.errors import InputError
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.tune.build import from_feedback, from_golden, review, synthetic
from alicerce.tune.data import Example, load
from alicerce.tune.heldout import Side, decide, score
from alicerce.types import Message

APP = """
name: rh
collections: [kb]
model: fake
retrieval: {abstain_below: 0.0}
"""


def test_feedback_becomes_rows_with_the_prompt_the_model_saw(alc: Alicerce, docs: Path,
                                                             tmp_path: Path) -> None:
    alc.use_generator("fake", ScriptedGenerator("São 30 dias [1].", name="fake"))
    alc.ingest([docs], "kb", sync=True)
    alc.deploy_app(APP)
    answers = [alc.ask(q, "rh") for q in (
        "Qual o prazo dos recibos?", "Quantos dias de férias?", "Qual o horário?",
        "Qual a senha do wi-fi?")]
    ids = [a.trace_id for a in answers]
    alc.traces.feedback(ids[0], score=1)  # kept: the model's answer
    alc.traces.feedback(ids[1], score=-1, reference="São 30 dias por ano, pedidos com 45 "
                                                    "dias de antecedência.")  # the correction
    alc.traces.feedback(ids[2], score=-1)  # skipped: nothing to learn from
    alc.traces.feedback(ids[3], rating=5)
    built = from_feedback(alc.traces, "rh")
    assert len(built.rows) == 3 and [t for t, _ in built.skipped] == [ids[2]]
    by_trace = {r["origin"]["trace_id"]: r for r in built.rows}
    corrected = by_trace[ids[1]]["messages"]
    assert corrected[-1]["content"].startswith("São 30 dias por ano")
    assert by_trace[ids[1]]["origin"]["target"] == "reference"
    # the answer the user saw and rated (citations checked and moved to the right source)
    assert by_trace[ids[0]]["messages"][-1]["content"] == answers[0].text
    # the prompt as sent: the app's system prompt and the numbered sources, then the question
    assert corrected[0]["role"] == "system" and "[1]" in corrected[-2]["content"] + \
        corrected[0]["content"]
    assert "Quantos dias de férias?" in corrected[-2]["content"]
    out = tmp_path / "sft.jsonl"
    assert built.write(out) == 3 and len(load(out).examples) == 3  # trainable as written
    # a later feedback on the same trace replaces the earlier one
    alc.traces.feedback(ids[0], score=-1)
    assert ids[0] in [t for t, _ in from_feedback(alc.traces, "rh").skipped]
    # nothing new since a moment: nothing to write, and the error says why
    later = from_feedback(alc.traces, "rh", since=9e12)
    with pytest.raises(InputError, match="no training rows"):
        later.write(tmp_path / "none.jsonl")


def test_golden_rows_and_the_review_of_synthetic_ones(tmp_path: Path) -> None:
    ds = build("gold", [Row("1", "Qual o prazo?", reference="30 dias."),
                        Row("2", "Sem resposta?")])
    built = from_golden(ds, system="Responda em português.")
    assert [r["messages"][-1]["content"] for r in built.rows] == ["30 dias."]
    assert built.skipped == [("2", "no reference answer")]
    path = tmp_path / "synth.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}],
             "review": "pending", "origin": {"synthetic": True}} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError, match="line 1: a synthetic row nobody has reviewed"):
        load(path)
    verdicts = iter(["accept", "reject", None])  # the person stops at the third row
    assert review(path, lambda i, row: next(verdicts)) == (1, 1, 1)
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["review"] for r in kept] == ["accepted", "pending"]
    out = CliRunner().invoke(cli, ["tune", "data", "review", str(path), "--accept-all"])
    assert out.exit_code == 0 and '"accepted": 1' in out.output
    assert len(load(path).examples) == 2  # reviewed: trainable


def test_the_cli_builds_from_feedback_and_refuses_an_unclear_source(
        tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICERCE_EMBEDDER", "hashing")
    h = ["--home", str(tmp_path / "h")]
    golden = tmp_path / "gold.jsonl"
    golden.write_text(json.dumps({"question": "Qual o prazo?", "reference": "30 dias."}) + "\n",
                      encoding="utf-8")
    out = CliRunner().invoke(cli, ["tune", "data", "build", "--golden", str(golden),
                                   "--to", str(tmp_path / "g.jsonl"), *h])
    assert out.exit_code == 0 and "1 row(s) written" in out.output
    both = CliRunner().invoke(cli, ["tune", "data", "build", "--golden", str(golden),
                                    "--from-feedback", "--to", str(tmp_path / "x.jsonl"), *h])
    assert both.exit_code != 0 and "choose one source" in str(both.exception)


def test_the_gate_passes_a_better_adapter_and_stops_a_worse_one() -> None:
    rows = [Example((Message("user", f"Prazo {i}?"),), f"São {i} dias corridos.", i + 1)
            for i in range(6)]

    def side(label: str, reply: object) -> Side:
        return Side(label, f"id-{label}", ScriptedGenerator(reply, name=label),  # type: ignore[arg-type]
                    {"model": "base", "adapter": label})

    def echo(messages: list[Message]) -> str:  # answers in the references' words
        n = messages[-1].content.split()[1].rstrip("?")
        return f"São {n} dias corridos."

    base = score(side("base", "Não sei."), rows, "rh-heldout", "v1", "ev-1", 32)
    good = score(side("good", echo), rows, "rh-heldout", "v1", "ev-2", 32)
    assert base.rows == good.rows == 6 and good.summary["answer.f1"].mean == 1.0
    assert good.results[0].details["reference"] == "São 0 dias corridos."
    assert decide(good, base).passed
    stopped = decide(base, good)
    assert not stopped.passed
    assert "answer.f1 fell" in next(c.reason for c in stopped.checks if not c.ok)


def test_synthetic_rows_are_answered_by_the_app_and_wait_for_review(
        alc: Alicerce, docs: Path, tmp_path: Path) -> None:
    def reply(messages: list[Message]) -> str:
        if "perguntas de teste" in messages[0].content + messages[-1].content or \
                "test questions" in messages[0].content + messages[-1].content:
            return json.dumps({"questions": ["Quantos dias de férias por ano?",
                                             "Qual a cor do céu em Marte?"]})
        return "São 30 dias de férias por ano [1]."

    alc.use_generator("fake", ScriptedGenerator(reply, name="fake"))
    alc.ingest([docs], "kb", sync=True)
    alc.deploy_app(APP)
    built = synthetic(alc, "kb", app="rh", per_doc=2, model="fake")
    assert built.rows and all(r["review"] == "pending" for r in built.rows)
    row = built.rows[0]
    assert row["origin"]["synthetic"] and row["origin"]["source"] == "synthetic"
    assert row["messages"][-1]["content"].startswith("São 30 dias de férias por ano [")
    assert row["messages"][0]["role"] == "system"  # the prompt the app's model saw
    reasons = {why for _, why in built.skipped}
    assert "duplicate" in reasons or any("passage" in r for r in reasons)
    path = tmp_path / "synth.jsonl"
    built.write(path)
    with pytest.raises(InputError, match="nobody has reviewed"):
        load(path)
