"""The agent step on scripted models: a cited multi-step answer, bad actions told back to
the model, loops, limits, timeouts, failing tools, direct answers, abstention, rails on
observations, ask_app, deploy-time checks, traces and the CLI/HTTP surfaces."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.chains.agent import action_schema
from alicerce.cli import app as cli
from alicerce.errors import InputError, NotFoundError
from alicerce.server import create_app
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agents" / "rh-agent.yaml"


def act(tool: str, thought: str = "", **args: Any) -> str:
    return json.dumps({"thought": thought, "tool": tool, "args": args}, ensure_ascii=False)


def final(answer: str) -> str:
    return act("final_answer", "Já sei.", answer=answer)


USE = '{"use_tools": true}'


@pytest.fixture
def alc(tmp_path: Path) -> Iterator[Alicerce]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "reembolso.md").write_text(
        "# Reembolso\n\n## Alimentação\n\nAlimentação em viagem: até R$ 120,00 por dia.\n",
        encoding="utf-8")
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", generator="fake",
                               abstain_below=0.0, auth=False))
    a.ingest([docs], "kb")
    yield a
    a.close()


def agent(alc: Alicerce, replies: list[str] | Any, **step: Any) -> ScriptedGenerator:
    """Deploy a one-agent app `ag` on a scripted model."""
    gen = ScriptedGenerator(replies, name="fake")
    alc.use_generator("fake", gen)
    body = {"id": "agent", "kind": "agent", "inputs": {"question": "$inputs.question"},
            "tools": [{"search": {"collection": "kb", "k": 2}}, "calculator", "dates"],
            **step}
    alc.deploy_app(yaml.safe_dump({
        "name": "ag", "inputs": {"question": "string"},
        "outputs": {"answer": "$agent.text", "citations": "$agent.citations",
                    "status": "$agent.status", "steps": "$agent.steps",
                    "abstained": "$agent.abstained"},
        "steps": [body]}, allow_unicode=True))
    return gen


def observations(gen: ScriptedGenerator) -> list[str]:
    return [m.content for m in gen.calls[-1] if m.role == "user"][1:]


def test_search_then_calculator_gives_a_cited_answer_and_a_full_trace(alc: Alicerce) -> None:
    gen = agent(alc, [USE, act("search", "Busco a regra.", query="alimentação viagem"),
                      act("calculator", "4 dias x 120.", expression="4 * 120"),
                      final("Você pode receber R$ 480,00 [1].")])
    r = alc.run_app("ag", {"question": "Viajei 4 dias; quanto recebo de alimentação?"})
    out = r.outputs
    assert out["status"] == "answered" and not out["abstained"]
    assert out["answer"] == "Você pode receber R$ 480,00 [1]."
    assert out["citations"][0]["doc_key"].endswith("reembolso.md")
    assert [s["tool"] for s in out["steps"]] == ["search", "calculator"]
    assert out["steps"][1]["observation"] == "480" and out["steps"][0]["thought"]
    seen = observations(gen)
    assert seen[0].startswith("Observação: [1] Reembolso") and "R$ 120,00" in seen[0]
    assert seen[1] == "Observação: 480"
    # the action was constrained to the declared tools and final_answer
    schema = gen.calls[1][0].content  # the system prompt lists the tools
    assert "calculator" in schema and "final_answer" in schema
    alc.traces.flush()
    names = [s["name"] for s in alc.traces.get(r.trace_id).spans]
    assert names[0] == "agent.decide" and names.count("agent.think") == 3
    assert names.count("agent.act") == 2 and names[-1] == "agent.answer"
    acts = [s["attrs"] for s in alc.traces.get(r.trace_id).spans if s["name"] == "agent.act"]
    assert acts[1]["args"] == {"expression": "4 * 120"} and acts[1]["observation"] == "480"


def test_an_unknown_tool_and_bad_arguments_are_told_back_to_the_model(alc: Alicerce) -> None:
    gen = agent(alc, [USE, act("weather", city="Recife"), act("calculator", expr="1+1"),
                      "não é json", act("calculator", expression="2 + 2"), final("4")],
                max_steps=5)
    out = alc.run_app("ag", {"question": "Quanto é 2 + 2?"}).outputs
    seen = observations(gen)
    # told in the question's language, naming what is wrong
    assert "não há ferramenta 'weather'" in seen[0] and "calculator" in seen[0]
    assert "bad arguments for calculator" in seen[1] and "expression" in seen[1]
    assert "não é JSON" in seen[2] and seen[2].startswith("A ação não é válida")
    assert out["status"] == "answered" and out["answer"] == "4"
    assert [s["error"] for s in out["steps"]] == [True, True, True, False]
    assert [s["valid"] for s in out["steps"]] == [False, True, False, True]


def test_the_same_call_twice_ends_the_loop_and_the_model_answers_from_what_it_has(
        alc: Alicerce) -> None:
    gen = agent(alc, [USE, act("calculator", expression="1/0"),
                      act("calculator", expression="1/0"), final("Não foi possível dividir.")])
    out = alc.run_app("ag", {"question": "Quanto é 1/0?"}).outputs
    assert out["status"] == "loop" and out["answer"] == "Não foi possível dividir."
    assert "division by zero" in out["steps"][0]["observation"]
    assert "mesmos argumentos" in gen.calls[-1][-1].content
    assert len(out["steps"]) == 1  # the repeated call was not run


def test_an_answer_that_echoes_the_loop_instruction_is_not_taken_as_the_answer(
        alc: Alicerce) -> None:
    """qwen-0.5b answered "Você chamou search com esses mesmos argumentos." to the loop
    message: the run says it got stuck and keeps what the tool found instead."""
    agent(alc, [USE, act("calculator", expression="4 * 120"),
                act("calculator", expression="4 * 120"),
                final("Você chamou calculator com esses mesmos argumentos.")])
    out = alc.run_app("ag", {"question": "Quanto é 4 x 120?"}).outputs
    assert out["status"] == "loop"
    assert out["answer"] == "Não cheguei a uma resposta: a mesma chamada se repetiu. 480"


def test_max_steps_ends_the_loop_with_a_last_turn_to_answer(alc: Alicerce) -> None:
    gen = agent(alc, [USE, act("calculator", expression="1+1"),
                      act("calculator", expression="2+2"), final("Parcial: 4.")], max_steps=2)
    out = alc.run_app("ag", {"question": "Some coisas."}).outputs
    assert out["status"] == "max_steps" and out["answer"] == "Parcial: 4."
    assert "Acabaram os 2 passos" in gen.calls[-1][-1].content
    # the last turn may only answer: its schema has final_answer alone
    assert len(gen.calls) == 4


def test_a_slow_tool_times_out_and_a_spent_budget_returns_what_it_has(alc: Alicerce) -> None:
    def slow(seconds: float) -> str:
        """Waits.

        Args:
            seconds: how long
        """
        time.sleep(seconds)
        return "pronto"
    alc.use_tool(slow)
    gen = ScriptedGenerator([USE, act("calculator", expression="6*7"),
                             *[act("slow", seconds=5 + i) for i in range(5)]], name="fake")
    alc.use_generator("fake", gen)
    alc.deploy_app(yaml.safe_dump({
        "name": "lento", "inputs": {"question": "string"},
        "outputs": {"answer": "$agent.text", "status": "$agent.status",
                    "steps": "$agent.steps"},
        "steps": [{"id": "agent", "kind": "agent", "inputs": {"question": "$inputs.question"},
                   "tools": ["calculator", "slow"], "tool_timeout_s": 0.3,
                   "budget_s": 0.5}]}))
    t0 = time.perf_counter()
    out = alc.run_app("lento", {"question": "Calcule e espere."}).outputs
    assert time.perf_counter() - t0 < 3
    assert out["steps"][1]["error"] and "did not answer" not in out["steps"][1]["observation"]
    assert "não respondeu em 0.3 s" in out["steps"][1]["observation"]
    assert out["status"] == "budget"
    assert out["answer"].startswith("Não consegui concluir dentro do tempo de 0.5 s")
    assert "42" in out["answer"]  # what it had


def test_a_tool_that_raises_is_an_observation_not_a_crash(alc: Alicerce) -> None:
    def broken(x: int) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")
    alc.use_tool(broken)
    gen = ScriptedGenerator([USE, act("broken", x=1), final("Falhou.")], name="fake")
    alc.use_generator("fake", gen)
    alc.deploy_app(yaml.safe_dump({
        "name": "quebrado", "inputs": {"question": "string"},
        "outputs": {"answer": "$agent.text", "steps": "$agent.steps"},
        "steps": [{"id": "agent", "kind": "agent", "inputs": {"question": "$inputs.question"},
                   "tools": ["broken"]}]}))
    out = alc.run_app("quebrado", {"question": "Tente."}).outputs
    assert out["steps"][0]["observation"] == "Erro: RuntimeError: disk on fire"
    assert out["answer"] == "Falhou."


def test_no_tool_needed_answers_directly_with_only_final_answer_allowed(
        alc: Alicerce) -> None:
    seen: list[Sequence[Message]] = []

    def reply(messages: Sequence[Message]) -> str:
        seen.append(messages)
        return '{"use_tools": false}' if len(seen) == 1 else final("Olá! Como posso ajudar?")
    agent(alc, reply)
    out = alc.run_app("ag", {"question": "Olá, tudo bem?"}).outputs
    assert out["status"] == "direct" and out["answer"] == "Olá! Como posso ajudar?"
    assert out["steps"] == [] and len(seen) == 2


def test_a_search_that_finds_nothing_abstains(alc: Alicerce) -> None:
    agent(alc, [USE, act("search", query="xyzzy"), final("Inventei uma resposta.")],
          tools=[{"search": {"collection": "kb", "k": 2, "filters": {"doc": "nenhum"}}}])
    out = alc.run_app("ag", {"question": "Qual é o xyzzy?"}).outputs
    assert out["abstained"] and out["answer"] == "Não encontrei isso nos documentos."


def test_observations_pass_the_context_rails_before_the_model_sees_them(
        alc: Alicerce, tmp_path: Path) -> None:
    def lookup(name: str) -> str:
        """A directory lookup that returns personal data."""
        return f"{name}: CPF 123.456.789-09"
    alc.use_tool(lookup)
    gen = ScriptedGenerator([USE, act("lookup", name="Ana"), final("Encontrei a Ana.")],
                            name="fake")
    alc.use_generator("fake", gen)
    alc.deploy_app(yaml.safe_dump({
        "name": "diretorio", "inputs": {"question": "string"},
        "outputs": {"answer": "$agent.text"},
        "steps": [{"id": "agent", "kind": "agent", "inputs": {"question": "$inputs.question"},
                   "tools": ["lookup"], "rails": ["pii"]}]}))
    r = alc.run_app("diretorio", {"question": "Quem é a Ana?"})
    shown = observations(gen)[0]
    assert "123.456.789-09" not in shown and "Ana" in shown
    alc.traces.flush()
    assert "123.456.789-09" not in json.dumps(alc.traces.get(r.trace_id).spans)


def test_ask_app_runs_another_app_with_its_spans_in_this_trace(alc: Alicerce) -> None:
    alc.use_generator("fake", ScriptedGenerator("x", name="fake"))
    alc.deploy_app(yaml.safe_dump({
        "name": "eco", "inputs": {"text": "string"}, "outputs": {"text": "$say.text"},
        "steps": [{"id": "say", "kind": "transform", "function": "truncate",
                   "inputs": {"text": "$inputs.text", "max_chars": 5}}]}))
    gen = ScriptedGenerator([USE, act("ask_app", question="abcdefgh"), final("abcde")],
                            name="fake")
    alc.use_generator("fake", gen)
    alc.deploy_app(yaml.safe_dump({
        "name": "chefe", "inputs": {"question": "string"}, "outputs": {"a": "$agent.text"},
        "steps": [{"id": "agent", "kind": "agent", "inputs": {"question": "$inputs.question"},
                   "tools": [{"ask_app": {"app": "eco"}}]}]}))
    r = alc.run_app("chefe", {"question": "Pergunte ao eco."})
    assert observations(gen)[0] == "Observação: abcde"
    alc.traces.flush()
    assert "agent.act.eco.say" in [s["name"] for s in alc.traces.get(r.trace_id).spans]
    with pytest.raises(InputError, match="cannot ask its own app"):
        alc.deploy_app(yaml.safe_dump({
            "name": "chefe", "inputs": {"question": "string"}, "outputs": {"a": "$agent.text"},
            "steps": [{"id": "agent", "kind": "agent",
                       "inputs": {"question": "$inputs.question"},
                       "tools": [{"ask_app": {"app": "chefe"}}]}]}))


@pytest.mark.parametrize(("tools", "error", "match"), [
    (["weather"], InputError, "no tool named 'weather'"),
    ([{"search": {"collection": "nope"}}], NotFoundError, "existing collection"),
    ([{"search": {"collection": "kb", "k": 500}}], InputError, "k must be 1..20"),
    (["calculator", "calculator"], InputError, "two tools are named 'calculator'"),
    ([{"tool": "calculator", "name": "final_answer"}], InputError, "final_answer"),
    ([{"http_get": {"allow": []}}], InputError, "allow"),
    ([{"ask_app": {"app": "ghost"}}], NotFoundError, "no deployed app 'ghost'"),
    ([{"dates": {"country": "XX"}}], InputError, "no holiday calendar"),
])
def test_deploy_refuses_bad_tools_naming_the_problem(
        alc: Alicerce, tools: list[Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        agent(alc, "x", tools=tools)


def test_sql_may_not_open_the_homes_own_database(alc: Alicerce) -> None:
    home_db = alc.settings.home / "alicerce.db"  # on PostgreSQL, a SQLite file put there
    sqlite3.connect(home_db).close()
    with pytest.raises(InputError, match="inside the Alicerce home"):
        agent(alc, "x", tools=[{"sql": {"path": str(home_db)}}])


def test_an_agents_search_collections_bound_which_keys_may_use_it(alc: Alicerce) -> None:
    agent(alc, "x")
    assert alc.app_collections("ag") == ["kb"]


def test_one_search_tool_over_several_collections_interleaves_them(
        alc: Alicerce, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "ti.md").write_text("# TI\n\nA senha do Wi-Fi muda toda segunda.\n",
                                 encoding="utf-8")
    alc.ingest([other], "ti")
    gen = agent(alc, [USE, act("search", query="alimentação senha"), final("Pronto [1][2].")],
                tools=[{"search": {"collection": ["kb", "ti"], "k": 2}}])
    out = alc.run_app("ag", {"question": "Alimentação e senha do Wi-Fi?"}).outputs
    assert {c["doc_key"].split("/")[-1] for c in out["citations"]} == {"reembolso.md", "ti.md"}
    assert "R$ 120,00" in observations(gen)[0] and "Wi-Fi" in observations(gen)[0]
    assert alc.app_collections("ag") == ["kb", "ti"]  # a key needs both
    with pytest.raises(NotFoundError, match="'nada'"):
        agent(alc, "x", tools=[{"search": {"collection": ["kb", "nada"]}}])


def test_the_action_schema_is_one_of_the_tools_or_final_answer(alc: Alicerce) -> None:
    agent(alc, "x")
    plan = alc.chains.plan(alc.chains.version("ag"))
    tools = alc.chains.runner.agent.tools(plan.nodes[0].step, "k")  # type: ignore[arg-type]
    schema = action_schema(tools)
    assert [o["properties"]["tool"]["const"] for o in schema["anyOf"]] == [
        "search", "calculator", "dates", "final_answer"]
    calc = schema["anyOf"][1]["properties"]["args"]
    assert calc["required"] == ["expression"] and calc["additionalProperties"] is False


def test_the_shipped_agent_deploys_and_runs_from_the_cli_and_http(
        alc: Alicerce, tmp_path: Path) -> None:
    alc.ingest([tmp_path / "docs"], "handbook")
    gen = ScriptedGenerator([USE, act("calculator", expression="4 * 120"),
                             final("R$ 480,00.")] * 3, name="fake")
    alc.use_generator("qwen-1.5b", gen)
    spec = EXAMPLE.read_text(encoding="utf-8")
    alc.deploy_app(spec)
    assert alc.run_app("rh-agent", {"question": "4 dias?"}).outputs["answer"] == "R$ 480,00."
    with TestClient(create_app(alc.settings, alc)) as client:
        got = client.post("/v1/apps/rh-agent/run", json={"inputs": {"question": "4 dias?"}})
        assert got.status_code == 200, got.text
        assert got.json()["outputs"]["status"] == "answered"
        # the chat route (the chat page's) carries the answer and the steps to fold
        chat = client.post("/v1/chat/completions", json={
            "model": "rh-agent", "messages": [{"role": "user", "content": "4 dias?"}]})
        extra = chat.json()["alicerce"]
        assert chat.json()["choices"][0]["message"]["content"] == extra["answer"] == \
            "R$ 480,00."
        assert [s["tool"] for s in extra["steps"]] == ["calculator"]
        assert extra["steps"][0]["observation"] == "480" and extra["citations"] == []
    res = CliRunner().invoke(cli, ["apps", "show", "rh-agent", "--plan", "--home",
                                   str(alc.settings.home)])
    assert res.exit_code == 0, res.output
    assert "- agent (agent) qwen-1.5b agent-react@1 rails: injection tools: search, " \
           "calculator, dates max_steps=6" in res.output


def test_eval_scores_task_success_steps_tool_errors_and_action_validity(
        alc: Alicerce, tmp_path: Path) -> None:
    from alicerce.datasets import load

    def reply(messages: Sequence[Message]) -> str:
        if "use_tools" in messages[0].content:
            return USE
        question = messages[1].content
        done = [m for m in messages if m.role == "user"][1:]
        if "240" in question:  # a bad call first, then the right one
            return (act("calculator", expr="x") if not done else
                    act("calculator", expression="240 * 15 / 100") if len(done) == 1 else
                    final("São 36."))
        return "não é json" if not done else final("Não sei.")
    agent(alc, reply)
    rows = tmp_path / "tasks.jsonl"
    rows.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "a", "inputs": {"question": "Quanto é 15% de 240?"},
         "expected": {"answer": {"contains": [["36", "trinta e seis"]]}}},
        {"id": "b", "inputs": {"question": "Quanto custa 1.000 vezes 2?"},
         "expected": {"answer": {"contains": ["2.000"]}}}]), encoding="utf-8")
    run = alc.evals.run("ag", load(rows), ["answer"])
    s = run.summary
    assert s["task.answer"].mean == 0.5
    # a: bad arguments (a tool error), the right call, the answer; b: not JSON, the answer
    assert s["agent.steps"].mean == 1.5 and s["agent.tool_errors"].mean == 0.5
    assert s["agent.valid_actions"].mean == pytest.approx((1 + 1 / 2) / 2)
    assert s["agent.finished"].mean == 1.0 and "seconds" in s


def test_a_loop_whose_last_turn_fails_says_why_and_keeps_what_it_had(alc: Alicerce) -> None:
    agent(alc, [USE, act("calculator", expression="6 * 7"),
                act("calculator", expression="6 * 7"), "cortado no meio {"])
    out = alc.run_app("ag", {"question": "Quanto é 6 x 7?"}).outputs
    assert out["status"] == "loop"
    assert out["answer"] == "Não cheguei a uma resposta: a mesma chamada se repetiu. 42"
