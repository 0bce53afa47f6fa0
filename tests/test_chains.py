"""Chains on scripted models: deploy-time checks, the runner's mapping, map, branch,
transforms, guards, reranking, JSON retries and failures, traces, the plan compiled once,
and the CLI and HTTP surfaces."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.chains.transforms import Transform
from alicerce.cli import app as cli
from alicerce.errors import ChainError, GeneratorError, InputError, NotFoundError
from alicerce.server import create_app
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "chains"
LABEL = '{"label": "negative", "confidence": 0.9}'


def example(name: str, **models: str) -> str:
    """A shipped example with its models swapped for scripted ones."""
    text = (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
    for old, new in models.items():
        text = text.replace(f"model: {old}", f"model: {new}")
    return text


def _last(messages: Sequence[Message]) -> str:
    return messages[-1].content


@pytest.fixture
def alc(tmp_path: Path, docs: Path) -> Iterator[Alicerce]:
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", generator="big",
                               abstain_below=0.0, auth=False))
    a.use_generator("big", ScriptedGenerator("Resumo: o produto vazou e o suporte falhou.",
                                             name="big"))
    a.use_generator("small", ScriptedGenerator(LABEL, name="small"))
    a.ingest([docs], "kb")
    yield a
    a.close()


def deploy(alc: Alicerce, spec: str | dict[str, Any]) -> Any:
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec, allow_unicode=True)
    return alc.deploy_app(text)[0]


def test_the_multi_model_example_runs_each_step_on_its_own_model(alc: Alicerce) -> None:
    v = deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    r = alc.run_app("review-sentiment", {"text": "A cafeteira vazou em três semanas."})
    assert r.outputs == {"summary": "Resumo: o produto vazou e o suporte falhou.",
                         "label": "negative", "confidence": 0.9}
    small = alc.generator("small")
    assert isinstance(small, ScriptedGenerator)
    assert "Resumo: o produto vazou" in small.calls[0][-1].content  # step 2 got step 1's text
    alc.traces.flush()
    t = alc.traces.get(r.trace_id)
    assert [s["name"] for s in t.spans] == ["summarise", "classify"]
    assert t.spans[1]["attrs"]["model"] == "small"
    assert t.spans[1]["attrs"]["outputs"]["json"]["label"] == "negative"
    assert t.lineage["app"] == v.ref and t.lineage["app_hash"] == v.hash
    assert t.lineage["steps"]["classify"]["prompt"] == "classify-sentiment@1"
    assert t.app_version == v.version and t.status == "ok"


def test_the_plan_is_compiled_once_and_the_app_resolved_once_per_run(
        alc: Alicerce, monkeypatch: pytest.MonkeyPatch) -> None:
    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    lookups = []
    real = alc.app
    monkeypatch.setattr(alc, "app", lambda ref: lookups.append(ref) or real(ref))
    for _ in range(3):
        alc.run_app("review-sentiment", {"text": "bom"})
    assert alc.chains.compiled == 1
    assert len(lookups) == 3


@pytest.mark.parametrize("change, message", [
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "summarise",
                 "inputs": {"text": "$b.text"}},
                {"id": "b", "kind": "generate", "prompt": "summarise",
                 "inputs": {"text": "$a.text"}}]}, "form a cycle"),
    ({"steps": [{"id": "a", "kind": "python", "code": "x"}]}, "steps.0"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "summarise",
                 "inputs": {"text": "$nope.text"}}]}, "no step 'nope'"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "summarise",
                 "inputs": {"text": "$inputs.text"}}], "outputs": {"x": "$a.txt"}},
     "has no output 'txt'"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "summarise",
                 "inputs": {"text": "$inputs.text"}},
                {"id": "r", "kind": "retrieve", "collections": ["kb"],
                 "inputs": {"query": "$inputs.n"}}]}, "is an integer, but a string"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "nonexistent",
                 "inputs": {"text": "$inputs.text"}}]}, "nonexistent"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "summarise", "model": "gpt-99",
                 "inputs": {"text": "$inputs.text"}}]}, "gpt-99"),
    ({"steps": [{"id": "r", "kind": "retrieve", "collections": ["nokb"],
                 "inputs": {"query": "$inputs.text"}}]}, "no collection named 'nokb'"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "summarise",
                 "inputs": {"texto": "$inputs.text"}}]}, "uses text, not mapped"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "summarise",
                 "inputs": {"text": "$inputs.text"}},
                {"id": "a", "kind": "generate", "prompt": "summarise",
                 "inputs": {"text": "$inputs.text"}}]}, "used twice"),
    ({"collections": ["kb"], "steps": [{"id": "a", "kind": "generate", "prompt": "summarise",
                                        "inputs": {"text": "$inputs.text"}}]},
     "does not take collections"),
    ({"steps": [{"id": "a", "kind": "generate", "prompt": "classify-sentiment",
                 "inputs": {"text": "$inputs.text"},
                 "output": {"schema": {"type": "object",
                                       "properties": {"label": {"type": "string"}}}}}],
      "outputs": {"x": "$a.json.score"}}, "no property 'score'"),
])
def test_a_bad_chain_does_not_deploy(alc: Alicerce, change: dict[str, Any],
                                     message: str) -> None:
    spec: dict[str, Any] = {"name": "bad", "inputs": {"text": "string", "n": "integer"},
                            "outputs": {"x": "$a.text"}, **change}
    with pytest.raises(InputError) as err:
        deploy(alc, spec)
    assert message in str(err.value)
    assert not alc.apps.exists("bad")


def test_map_branch_transform_retrieve_rerank_and_guards(alc: Alicerce) -> None:
    alc.use_generator("judge", ScriptedGenerator(
        lambda m: "yes" if "30" in _last(m) else "no", name="judge"))
    spec = {
        "name": "flow", "inputs": {"question": "string", "reviews": "list"},
        "outputs": {"labels": "$each.results", "top": "$count.top", "route": "$route.taken",
                    "reply": "$route.reply", "passages": "$rerank.passages",
                    "clean": "$screen.text"},
        "steps": [
            {"id": "screen", "kind": "guard", "rails": ["pii"], "inputs":
             {"text": "$inputs.question"}},
            {"id": "find", "kind": "retrieve", "collections": ["kb"], "k": 4,
             "inputs": {"query": "$screen.text"}},
            {"id": "rerank", "kind": "rerank", "reranker": "llm", "model": "judge", "k": 2,
             "inputs": {"query": "$screen.text", "passages": "$find.passages"}},
            {"id": "each", "kind": "map", "over": "$inputs.reviews", "steps": [
                {"id": "classify", "kind": "generate", "model": "small",
                 "prompt": "classify-sentiment", "inputs": {"text": "$item"},
                 "output": {"schema": {"type": "object", "properties": {
                     "label": {"type": "string"}, "confidence": {"type": "number"}}}}}],
             "output": {"label": "$classify.json.label", "n": "$index"}},
            {"id": "count", "kind": "transform", "function": "count_labels",
             "inputs": {"items": "$each.results", "field": "label"}},
            {"id": "route", "kind": "branch", "if": {"value": "$count.top",
                                                      "equals": "negative"},
             "then": [{"id": "apology", "kind": "generate", "prompt": "summarise",
                       "inputs": {"text": "$count.top"}}],
             "output": {"reply": "$apology.text"}},
        ]}
    deploy(alc, spec)
    r = alc.run_app("flow", {"question": "Férias: quantos dias? meu email é ana@example.com",
                             "reviews": ["ruim", "péssimo"]})
    assert "ana@example.com" not in r.outputs["clean"]
    assert r.outputs["labels"] == [{"label": "negative", "n": 0}, {"label": "negative", "n": 1}]
    assert r.outputs["top"] == "negative" and r.outputs["route"] == "then"
    assert r.outputs["reply"].startswith("Resumo")
    assert len(r.outputs["passages"]) == 2 and "30" in r.outputs["passages"][0]["text"]
    assert [p["n"] for p in r.outputs["passages"]] == [1, 2]
    alc.traces.flush()
    names = [s["name"] for s in alc.traces.get(r.trace_id).spans]
    assert "each[1].classify" in names and "route.apology" in names


def test_a_branch_not_taken_gives_nulls_and_a_guard_can_stop_the_chain(
        alc: Alicerce) -> None:
    deploy(alc, {"name": "gate", "inputs": {"text": "string"},
                 "outputs": {"reply": "$route.reply", "summary": "$sum.text"},
                 "steps": [
                     {"id": "check", "kind": "guard", "rails": ["size"],
                      "inputs": {"text": "$inputs.text"}},
                     {"id": "sum", "kind": "generate", "prompt": "summarise",
                      "inputs": {"text": "$check.text"}},
                     {"id": "route", "kind": "branch",
                      "if": {"value": "$sum.text", "contains": "nunca"},
                      "then": [{"id": "x", "kind": "generate", "prompt": "summarise",
                                "inputs": {"text": "$sum.text"}}],
                      "output": {"reply": "$x.text"}}]})
    r = alc.run_app("gate", {"text": "ok"})
    assert r.outputs["reply"] is None and not r.blocked
    big = alc.generator("big")
    assert isinstance(big, ScriptedGenerator)
    calls = len(big.calls)
    blocked = alc.run_app("gate", {"text": "x\n" * 500})  # over size's 200 lines
    assert blocked.blocked == "check:size" and blocked.outputs == {}
    assert len(big.calls) == calls  # nothing ran after the guard


def test_json_is_retried_then_the_step_fails_by_name_with_a_partial_trace(
        alc: Alicerce) -> None:
    alc.use_generator("small", ScriptedGenerator(["not json", LABEL], name="small"))
    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    r = alc.run_app("review-sentiment", {"text": "bom"})
    alc.traces.flush()
    span = alc.traces.get(r.trace_id).spans[1]
    assert span["attrs"]["attempts"] == 2 and "not JSON" in span["attrs"]["invalid"][0]
    alc.use_generator("small", ScriptedGenerator('{"label": "angry", "confidence": 2}',
                                                 name="small"))
    with pytest.raises(GeneratorError) as err:
        alc.run_app("review-sentiment", {"text": "bom"})
    assert "step 'classify'" in str(err.value) and "after 3 tries" in str(err.value)
    alc.traces.flush()
    failed = alc.traces.find(app="review-sentiment", status="error")[0]
    assert [s["name"] for s in failed.spans] == ["summarise", "classify"]
    assert "error" in failed.spans[1]["attrs"]


def test_a_transform_that_raises_names_its_step(alc: Alicerce) -> None:
    def boom(text: str) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero")
    alc.use_transform(Transform("boom", boom, {"text": "string"}, {"text": "string"}))
    deploy(alc, {"name": "t", "inputs": {"text": "string"}, "outputs": {"x": "$b.text"},
                 "steps": [{"id": "b", "kind": "transform", "function": "boom",
                            "inputs": {"text": "$inputs.text"}}]})
    with pytest.raises(ChainError, match=r"step 'b' .*ZeroDivisionError"):
        alc.run_app("t", {"text": "x"})


@pytest.mark.parametrize("inputs, message", [
    ({}, "'text' is missing"),
    ({"text": "a", "extra": 1}, "unknown input(s): extra"),
    ({"text": 3}, "must be string"),
    ({"text": "  "}, "is empty"),
    ({"text": "x" * 60_000}, "over the limit"),
])
def test_inputs_are_checked_before_any_model_runs(alc: Alicerce, inputs: dict[str, Any],
                                                  message: str) -> None:
    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        alc.run_app("review-sentiment", inputs)
    big = alc.generator("big")
    assert isinstance(big, ScriptedGenerator) and big.calls == []


def test_rag_and_chain_apps_refuse_each_others_calls(alc: Alicerce) -> None:
    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    with pytest.raises(InputError, match="chain with declared inputs"):
        alc.ask("oi", "review-sentiment")
    alc.deploy_app("name: handbook\ncollections: [kb]\n")
    with pytest.raises(InputError, match="RAG app"):
        alc.run_app("handbook", {"text": "x"})
    with pytest.raises(NotFoundError):
        alc.run_app("nothing", {"text": "x"})


def test_cli_runs_shows_the_plan_and_every_step(tmp_path: Path) -> None:
    home = tmp_path / "h"
    runner = CliRunner()
    spec = tmp_path / "extract.yaml"
    spec.write_text(example("extract-fields").replace("model: qwen-1.5b", "model: big"))
    env = {"ALICERCE_EMBEDDER": "hashing"}
    # scripted models exist in-process only: deploy and run through the API, check the CLI
    # shows what is stored
    with Alicerce(Settings.load(home=home, embedder="hashing")) as a:
        a.use_generator("big", ScriptedGenerator(
            '{"tipo": "contrato", "assunto": "aluguel", "prazos_dias": [30], '
            '"valores_reais": [1200.5]}', name="big"))
        a.deploy_app(spec)
        r = a.run_app("extract-fields", {"documents": ["Contrato de aluguel...", "Outro"]})
        assert r.outputs["records"][1] == {"index": 1, "fields": {
            "tipo": "contrato", "assunto": "aluguel", "prazos_dias": [30],
            "valores_reais": [1200.5]}}
    out = runner.invoke(cli, ["apps", "show", "extract-fields", "--plan", "--home", str(home)],
                        env=env)
    assert out.exit_code == 0, out.output
    assert "- each (map)" in out.output and "extract (generate) big extract-json@1" in out.output
    shown = runner.invoke(cli, ["apps", "show", "extract-fields", "--plan", "--json",
                                "--home", str(home)], env=env)
    assert json.loads(shown.output)["steps"][0]["steps"][0]["prompt"] == "extract-json@1"
    bad = runner.invoke(cli, ["apps", "run", "extract-fields", "--input", "{oops",
                              "--home", str(home)], env=env)
    assert isinstance(bad.exception, InputError) and "not JSON" in str(bad.exception)


def test_http_run_and_chat_completions_share_the_runner(alc: Alicerce) -> None:
    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    alc.deploy_app("name: handbook\ncollections: [kb]\n")
    with TestClient(create_app(alc.settings, alc)) as client:
        ok = client.post("/v1/apps/review-sentiment/run", json={"inputs": {"text": "ruim"}})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["outputs"]["label"] == "negative" and body["app_version"] == 1
        assert body["trace_id"] and body["usage"]["total_tokens"] > 0
        bad = client.post("/v1/apps/review-sentiment/run", json={"inputs": {"txt": "x"}})
        assert bad.status_code == 400 and "unknown input" in bad.json()["error"]["message"]
        assert client.post("/v1/apps/nope/run", json={"inputs": {}}).status_code == 404
        rag = client.post("/v1/apps/handbook/run", json={"inputs": {"text": "x"}})
        assert rag.status_code == 400 and "RAG app" in rag.json()["error"]["message"]
        chat = client.post("/v1/chat/completions", json={
            "model": "review-sentiment", "messages": [{"role": "user", "content": "ruim"}]})
        assert chat.status_code == 200, chat.text
        content = json.loads(chat.json()["choices"][0]["message"]["content"])
        assert content["label"] == "negative"
        knob = client.post("/v1/chat/completions", json={
            "model": "review-sentiment", "temperature": 0.5,
            "messages": [{"role": "user", "content": "ruim"}]})
        assert knob.status_code == 400 and "temperature" in knob.json()["error"]["message"]


def test_a_key_restricted_to_collections_cannot_run_a_chain_it_is_not_given(
        alc: Alicerce) -> None:
    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    kb_only = alc.keys.create("kb-reader", scopes=("ask",), collections=("kb",))[1]
    named = alc.keys.create("sentiment", scopes=("ask",),
                            collections=("review-sentiment",))[1]
    guarded = Alicerce(alc.settings.model_copy(update={"auth": True}))
    for name in ("big", "small"):
        guarded.use_generator(name, alc.generator(name))
    with guarded, TestClient(create_app(guarded.settings, guarded)) as client:
        denied = client.post("/v1/apps/review-sentiment/run", json={"inputs": {"text": "x"}},
                             headers={"Authorization": f"Bearer {kb_only}"})
        assert denied.status_code == 403
        allowed = client.post("/v1/apps/review-sentiment/run", json={"inputs": {"text": "x"}},
                              headers={"Authorization": f"Bearer {named}"})
        assert allowed.status_code == 200, allowed.text


def test_eval_scores_a_chain_on_its_declared_outputs(alc: Alicerce) -> None:
    from alicerce.datasets import load

    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    ds = load(EXAMPLES / "reviews.jsonl")
    run = alc.evals.run("review-sentiment", ds, ["retrieval", "answer"])
    s = run.summary
    assert run.rows == 12 and run.failed == 0 and run.app_version == 1
    assert s["exact.label"].mean == pytest.approx(4 / 12)  # the fake always says negative
    # negative: F1 2*4/(2*4+8) = 0.5; positive and neutral 0 -> macro 1/6
    assert s["macro_f1.label"].mean == pytest.approx(1 / 6)
    assert s["chain.succeeded"].mean == 1.0 and s["json.first_try"].mean == 1.0
    assert run.lineage["skipped_groups"] == ["retrieval"]
    again = alc.evals.run("review-sentiment", ds, ["answer"])  # memoised: no new model calls
    small = alc.generator("small")
    assert isinstance(small, ScriptedGenerator) and len(small.calls) == 12
    assert again.summary["exact.label"].mean == pytest.approx(4 / 12)


def test_http_batches_run_in_the_background_and_belong_to_their_caller(
        alc: Alicerce) -> None:
    import time

    deploy(alc, example("review-sentiment", **{"qwen-1.5b": "big", "qwen-0.5b": "small"}))
    guarded = Alicerce(alc.settings.model_copy(update={"auth": True}))
    for name in ("big", "small"):
        guarded.use_generator(name, alc.generator(name))
    ana = {"Authorization": f"Bearer {alc.keys.create('ana', ['ask'])[1]}"}
    bob = {"Authorization": f"Bearer {alc.keys.create('bob', ['ask'])[1]}"}
    rows = [{"custom_id": f"r{i}", "inputs": {"text": f"avaliação {i}"}} for i in range(5)]
    rows.append({"inputs": {"text": 7}})
    with guarded, TestClient(create_app(guarded.settings, guarded)) as client:
        made = client.post("/v1/batches", headers=ana,
                           json={"app": "review-sentiment", "rows": rows})
        assert made.status_code == 202, made.text
        job = made.json()["id"]
        for _ in range(200):
            got = client.get(f"/v1/batches/{job}", headers=ana).json()
            if got["status"] == "done":
                break
            time.sleep(0.05)
        assert got["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
        out = client.get(f"/v1/batches/{job}/output", headers=ana)
        lines = [json.loads(x) for x in out.text.splitlines()]
        assert sorted(r["row"] for r in lines) == [1, 2, 3, 4, 5, 6]
        assert {r["custom_id"] for r in lines if r["error"] is None} == {f"r{i}" for i in
                                                                         range(5)}
        assert client.get(f"/v1/batches/{job}", headers=bob).status_code == 404
        assert client.get(f"/v1/batches/{job}/output", headers=bob).status_code == 404
        assert client.get("/v1/batches", headers=bob).json()["data"] == []
        bad = client.post("/v1/batches", headers=ana, json={"app": "review-sentiment",
                                                             "rows": [{}], "concurrency": 99})
        assert bad.status_code == 400


def test_an_http_answer_looks_its_app_up_once(alc: Alicerce,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    alc.use_generator("big", ScriptedGenerator("São 30 dias de férias [1].", name="big"))
    alc.deploy_app("name: handbook\ncollections: [kb]\n")
    with TestClient(create_app(alc.settings, alc)) as client:
        lookups: list[str] = []
        real = alc.app
        monkeypatch.setattr(alc, "app", lambda ref: lookups.append(ref) or real(ref))
        for route, body in (
                ("/v1/chat/completions", {"model": "handbook", "messages": [
                    {"role": "user", "content": "Quantos dias de férias?"}]}),
                ("/v1/apps/handbook/ask", {"question": "E o horário?"}),
                ("/v1/apps/handbook/ask", {"question": "Horário?", "conversation_id": "new"})):
            lookups.clear()
            got = client.post(route, json=body, headers={"Cache-Control": "no-cache"})
            assert got.status_code == 200, got.text
            assert lookups == ["handbook"], route
