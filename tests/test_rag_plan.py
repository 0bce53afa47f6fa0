"""RAG is a chain: a RAG app's short `chain:` list compiles to a plan of the same step kinds
chain apps use, run by the same runner (compiled once per version), and a user can write
the same grounded chain as a chain app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.chains.rag_plan import RagConfig, rag_chain
from alicerce.cli import app as cli
from alicerce.errors import InputError
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Answer, Message

REPLY = "São 30 dias de férias por ano [1]."
GROUNDED_CHAIN = """name: grounded
inputs: {question: string}
outputs: {answer: $check.text, citations: $answer.citations, sources: $answer.sources}
steps:
  - id: find
    kind: retrieve
    collections: [kb]
    k: 3
    inputs: {query: $inputs.question}
  - id: answer
    kind: generate
    prompt: rag-answer
    grounded: {context_tokens: 800}
    inputs: {question: $inputs.question, passages: $find.passages}
  - id: check
    kind: guard
    stage: output
    rails: [canary]
    inputs: {text: $answer.text, sources: $answer.sources}
"""


@pytest.fixture
def alc(tmp_path: Path, docs: Path) -> Iterator[Alicerce]:
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", generator="fake",
                               abstain_below=0.0))
    a.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    a.ingest([docs], "kb")
    yield a
    a.close()


def test_a_rag_apps_chain_compiles_to_the_runners_step_kinds(alc: Alicerce) -> None:
    v, _ = alc.deploy_app("name: rh\ncollections: [kb]\nretrieval: {k: 3}\n"
                          "chain: [condense, step_back, retrieve, generate]\n"
                          "guards: {input: [size], output: [canary]}\n")
    plan = alc.chains.plan(v)
    assert [(n.id, n.step.kind) for n in plan.nodes] == [
        ("condense", "condense"), ("input_guards", "guard"), ("retrieve", "retrieve"),
        ("generate", "generate"), ("output_guards", "guard")]
    retrieve, generate = plan.nodes[2].step, plan.nodes[3].step
    assert retrieve.step_back == "step-back" and retrieve.k == 3
    assert generate.prompt == v.spec["prompt"] and generate.grounded is not None
    assert plan.nodes[3].watch is plan.nodes[4].step  # the output rails watch the stream
    assert set(plan.output_types) == {"answer", "citations", "abstained"}
    g = generate.grounded
    assert (g.select, g.context_min, g.window_drop) == ("windows", 150, 0.02)  # settings


def test_an_apps_window_budget_compiles_into_its_plan(alc: Alicerce) -> None:
    v, _ = alc.deploy_app("name: rh\ncollections: [kb]\nretrieval: {context_tokens: 400, "
                          "context_min: 0, window_drop: 0.05}\n")
    g = next(n.step for n in alc.chains.plan(v).nodes if n.id == "generate").grounded
    assert g is not None and (g.context_tokens, g.context_min, g.window_drop) == (400, 0, 0.05)
    with pytest.raises(InputError, match="window_drop"):
        alc.deploy_app("name: rh\ncollections: [kb]\nretrieval: {window_drop: 2}\n")

    # a version resolved before windows and their adaptive budget existed reads as it did
    old = {k: x for k, x in v.spec["retrieval"].items()
           if k not in ("select", "context_min", "window_drop")}
    spec = rag_chain(RagConfig.of({**v.spec, "retrieval": old}, "kb", alc.settings))
    grounded = next(s for s in spec.steps if s.id == "generate").grounded
    assert grounded is not None and (grounded.select, grounded.context_min) == ("passages", None)


def test_a_rag_app_runs_through_its_plan_compiled_once(alc: Alicerce) -> None:
    alc.deploy_app("name: rh\ncollections: [kb]\nguards: {output: [canary]}\n")
    before = alc.chains.compiled
    first = alc.ask("Quantos dias de férias?", "rh")
    second = alc.ask("E o horário?", "rh")
    assert alc.chains.compiled == before + 1  # one plan for the version, shared
    assert first.text == REPLY and first.citations and second.citations
    # a request's own options get a plan of their own, not cached
    narrow = alc.ask("Quantos dias de férias?", "rh", k=1)
    assert len(narrow.chunks) == 1 and alc.chains.compiled == before + 1
    alc.traces.flush()
    names = [s["name"] for s in alc.traces.get(first.trace_id).spans]
    assert names[-3:] == ["generate", "citations", "output_guards"]
    assert "retrieve" in names and "context" in names and "prompt" in names
    # the canary goes into the system prompt because the plan's output rails have it
    gen = alc.generator("fake")
    assert isinstance(gen, ScriptedGenerator) and alc.canary in gen.calls[0][0].content


def test_a_chat_turn_condenses_through_the_plan(alc: Alicerce) -> None:
    gen = ScriptedGenerator(["Quantos dias de férias por ano?", REPLY], name="fake")
    alc.use_generator("fake", gen)
    alc.deploy_app("name: rh\ncollections: [kb]\n")
    history = [Message("user", "Tenho férias?"), Message("assistant", "Sim [1].")]
    out = list(alc.ask_messages([*history, Message("user", "quantos dias?")], "rh"))
    answer = out[-1]
    assert isinstance(answer, Answer)
    assert answer.standalone_question == "Quantos dias de férias por ano?"
    assert "Tenho férias?" in gen.calls[0][-1].content  # the condenser saw the history


def test_the_same_grounded_chain_written_as_a_chain_app(alc: Alicerce) -> None:
    alc.deploy_app(GROUNDED_CHAIN)
    r = alc.run_app("grounded", {"question": "Quantos dias de férias?"})
    assert r.outputs["answer"] == REPLY and not r.blocked
    [cite] = r.outputs["citations"]
    assert cite["n"] == 1 and cite["doc_key"] == r.outputs["sources"][0]["doc"]
    json.dumps(r.outputs)  # outputs are plain JSON values
    alc.traces.flush()
    names = [s["name"] for s in alc.traces.get(r.trace_id).spans]
    for step in ("find", "context", "prompt", "generate", "citations", "check"):
        assert step in names, names


@pytest.mark.parametrize("change, message", [
    ("prompt: rag-answer", "prompt: summarise", ),
    ("grounded: {context_tokens: 800}",
     "grounded: {context_tokens: 800}\n    output: {schema: {type: object}}"),
    ("passages: $find.passages", "passages: $find.count"),
])
def test_a_wrong_grounded_step_does_not_deploy(alc: Alicerce, change: str,
                                               message: str) -> None:
    with pytest.raises(InputError, match="step 'answer'"):
        alc.deploy_app(GROUNDED_CHAIN.replace(change, message))


def test_the_cli_shows_a_rag_apps_plan(tmp_path: Path, docs: Path) -> None:
    home = tmp_path / "h"
    with Alicerce(Settings.load(home=home, embedder="hashing")) as a:
        a.ingest([docs], "kb")
        a.deploy_app("name: rh\ncollections: [kb]\nguards: {input: [size]}\n")
    runner = CliRunner()
    env = {"ALICERCE_EMBEDDER": "hashing"}
    out = runner.invoke(cli, ["apps", "show", "rh", "--plan", "--home", str(home)], env=env)
    assert out.exit_code == 0, out.output
    assert "- input_guards (guard) input rails: size" in out.output
    assert "- generate (generate)" in out.output and "grounded: context_tokens=" in out.output
    shown = json.loads(runner.invoke(cli, ["apps", "show", "rh", "--plan", "--json",
                                           "--home", str(home)], env=env).output)
    assert [s["id"] for s in shown["steps"]] == ["condense", "input_guards", "retrieve",
                                                 "generate"]
