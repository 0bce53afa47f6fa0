"""Apps as versioned artifacts (spec, deploy, labels, rollback, diff), the traces each
request leaves (spans, lineage, errors, redaction, retention) and feedback with its export."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.apps.spec import parse
from alicerce.cli import app as cli
from alicerce.errors import InputError, NotFoundError
from alicerce.server import create_app
from alicerce.store.db import transaction
from alicerce.testing.fakes import ScriptedGenerator

REPLY = "Envie os comprovantes em até 30 dias [1]."
SPEC = """\
name: reembolso
description: Reembolsos e férias
use_case:
  actors: [analista de RH]
  main_flow: [pergunta, resposta com fontes]
  latency_budget_ms: 3000
collections: [kb, other]
retrieval: {mode: hybrid, k: 3}
decoding: {max_tokens: 64, temperature: 0}
"""


def home(tmp_path: Path, docs: Path, **overrides: object) -> Alicerce:
    alc = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                                 generator="fake", **overrides))
    alc.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    alc.ingest([docs], "kb")
    alc.ingest([docs / "faq.jsonl"], "other")
    return alc


@pytest.fixture
def alc(tmp_path: Path, docs: Path) -> Iterator[Alicerce]:
    a = home(tmp_path, docs)
    yield a
    a.close()


@pytest.mark.parametrize(("text", "says"), [
    ("name: x\ncollections: [kb]\ncolections: [kb]\n", "colections: unknown field"),
    ("name: x\ncollections: []\n", "collections:"),
    ("name: X Y\ncollections: [kb]\n", "name: use lower-case"),
    ("name: x\ncollections: [kb]\nretrieval: {k: 0}\n", "retrieval.k:"),
    ("name: x\ncollections: [kb]\nchain: [generate, retrieve]\n", "steps must run in the order"),
    ("name: x\ncollections: [kb]\nchain: [retrieve]\n", "needs at least the retrieve and "),
    ("name: x\ncollections: [kb]\nguards: {pii: true}\n", "unknown key(s) ['pii']"),
    ("name: x\ncollections: [kb]\nguards: {input: [pii: erase]}\n", "action must be one of"),
    ("name: x\ncollections: [kb]\nguards: {output: [injection]}\n", "runs on input, context"),
    ("name: x\ncollections: [kb]\nguards: {input: [topics: {deny: politics}]}\n",
     "deny must be a list"),
    ("name: x\ncollections: [kb]\nchain: [input_guards, retrieve, generate]\n",
     "input_guards has no rails"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_spec_errors_name_the_field(text: str, says: str) -> None:
    with pytest.raises(InputError) as err:
        parse(text)
    assert says in str(err.value)


def test_deploy_label_rollback_and_diff(alc: Alicerce) -> None:
    v1, created = alc.deploy_app(SPEC, actor="ana")
    assert created and v1.ref == "reembolso@1" and v1.labels == ("production",)
    spec = v1.spec
    assert spec["prompt"].startswith("rag-answer@") and spec["model"]["name"] == "fake"
    assert spec["retrieval"]["k"] == 3 and spec["decoding"]["max_tokens"] == 64
    assert [c["embedder"] for c in spec["collections"]] == ["hashing-256"] * 2
    same, created = alc.deploy_app(SPEC + "\n# a comment changes nothing resolved\n")
    assert not created and same.version == 1
    v2, created = alc.deploy_app(SPEC.replace("k: 3", "k: 5"), actor="ana")
    assert created and v2.version == 2 and v2.labels == ()
    assert alc.app("reembolso").version == 1  # a new version is not served until labelled
    assert "-  k: 3" in alc.apps.diff("reembolso@1", "reembolso@2")
    assert alc.label_app("reembolso@2", "production", actor="bea")[0].version == 2
    assert alc.app("reembolso").version == 2 and alc.app("reembolso@production").version == 2
    alc.label_app("reembolso@1", "staging")
    assert alc.app("reembolso:staging").version == 1
    back, left = alc.rollback_app("reembolso", actor="bea")
    assert (back.version, left) == (1, 2) and alc.app("reembolso").version == 1
    with pytest.raises(InputError, match="nothing to roll back to"):
        alc.rollback_app("reembolso")
    with pytest.raises(NotFoundError):
        alc.label_app("reembolso@9", "production")
    with pytest.raises(NotFoundError):  # beyond SQLite's INTEGER: not found, not a crash
        alc.label_app("reembolso@9223372036854775808", "production")
    with pytest.raises(InputError, match="label"):
        alc.label_app("reembolso@1", "Not A Label")
    assert [h["to"] for h in alc.apps.history("reembolso")] == [1, 2, 1, 1]
    audit = [(e.actor, e.action, e.target) for e in alc.keys.audit_log()]
    assert ("ana", "app.deploy", "reembolso@1") in audit
    assert ("bea", "app.label", "reembolso@2") in audit
    assert ("bea", "app.rollback", "reembolso@1") in audit


@pytest.mark.parametrize(("change", "says"), [
    ("collections: [kb, nope]", "no collection named 'nope'"),
    ("prompt: missing-prompt", "missing-prompt"),
    ("prompt: zero-shot", "does not use"),
    ("model: no-such-model", "unknown model 'no-such-model'"),
    ("decoding: {temperature: 9}", "decoding:"),
    ("decoding: {n: 2}", "n must be 1"),
])
def test_unresolvable_specs_store_nothing(alc: Alicerce, change: str, says: str) -> None:
    key = change.split(":")[0]
    text = "\n".join(line for line in SPEC.splitlines() if not line.startswith(key + ":"))
    with pytest.raises((InputError, NotFoundError)) as err:
        alc.deploy_app(text + "\n" + change + "\n")
    assert says in str(err.value)
    assert alc.apps.names() == [] and alc.keys.audit_log() == []


def test_an_app_answers_with_its_spec_and_leaves_a_full_trace(alc: Alicerce) -> None:
    alc.deploy_app(SPEC)
    a = alc.ask("Em quantos dias envio os comprovantes?", "reembolso")
    assert a.text == REPLY and a.trace_id
    assert a.versions["app"] == "reembolso@1"
    assert {c.split("@")[0] for c in a.versions["collection"].split(",")} == {"kb", "other"}
    t = alc.traces.get(a.trace_id)
    assert (t.app, t.app_version, t.status) == ("reembolso", 1, "ok")
    assert t.latency_ms is not None and t.latency_ms > 0
    names = [s["name"] for s in t.spans]
    for step in ("retrieve.sparse", "retrieve.dense", "fusion", "context", "prompt",
                 "generate", "citations"):
        assert step in names, names
    spans = {s["name"]: s["attrs"] for s in t.spans}
    assert spans["generate"]["params"]["max_tokens"] == 64
    assert spans["generate"]["output"] == REPLY
    assert spans["prompt"]["messages"][-1]["content"].rstrip().endswith(
        "Em quantos dias envio os comprovantes?")
    assert t.lineage["model_identity"] == "custom:fake"
    assert t.lineage["prompt"].startswith("rag-answer@")
    assert t.lineage["software"].startswith("alicerce ")
    # A request option overrides the app's decoding for that request only.
    b = alc.ask("Em quantos dias envio os comprovantes?", "reembolso",
                params={"max_tokens": 20})
    spans = {s["name"]: s["attrs"] for s in alc.traces.get(b.trace_id).spans}
    assert spans["generate"]["params"]["max_tokens"] == 20
    assert spans["generate"]["params"]["temperature"] == 0


def test_failed_requests_are_traced_too(alc: Alicerce) -> None:
    alc.deploy_app(SPEC)
    with pytest.raises(InputError):
        alc.ask("   ", "reembolso")
    [t] = alc.traces.find(app="reembolso", status="error")
    assert t.app_version == 1 and t.error and t.answer == ""
    assert alc.traces.find(app="reembolso", status="ok") == []


def test_redaction_keeps_timings_and_drops_text(tmp_path: Path, docs: Path) -> None:
    alc = home(tmp_path, docs, trace_redact=True)
    try:
        a = alc.ask("Em quantos dias envio os comprovantes?", "kb")
        t = alc.traces.get(a.trace_id)
        assert t.redacted and "comprovantes" not in t.question and "30 dias" not in t.answer
        spans = {s["name"]: s for s in t.spans}
        assert spans["prompt"]["attrs"]["messages"] == "[redacted]"
        assert spans["generate"]["attrs"]["output"] == "[redacted]"
        assert "comprovantes" not in json.dumps(t.spans, ensure_ascii=False)
        assert spans["generate"]["ms"] >= 0 and spans["generate"]["attrs"]["completion_tokens"]
    finally:
        alc.close()


def test_retention_drops_old_and_excess_traces(alc: Alicerce) -> None:
    ids = [alc.traces.record("kb", "local", f"q{i}", answer={"text": "a"}) for i in range(5)]
    alc.traces.feedback(ids[0], 1)
    old = time.time() - 40 * 86400
    alc.traces.flush()
    with transaction(alc.traces._db) as db:  # age the first two traces
        db.execute("UPDATE traces SET at=? WHERE id IN (?, ?)", (old, ids[0], ids[1]))
    assert alc.traces.prune(keep_days=30, keep_count=0) == 2
    assert alc.traces.count() == 3 and alc.traces.feedback_for(ids[0]) == []
    assert alc.traces.prune(keep_days=0, keep_count=2) == 1
    assert [t.question for t in alc.traces.find()] == ["q4", "q3"]


def test_feedback_filters_summary_and_export(alc: Alicerce, tmp_path: Path) -> None:
    alc.deploy_app(SPEC)
    good = alc.ask("Em quantos dias envio os comprovantes?", "reembolso")
    bad = alc.ask("Qual a senha do Wi-Fi?", "reembolso")
    alc.ask("Horário?", "reembolso")
    alc.traces.feedback(good.trace_id, 1, "ótimo", rating=5)
    alc.traces.feedback(bad.trace_id, -1, "errado", rating=1,
                        reference="Peça o código de convidado na recepção.")
    with pytest.raises(InputError, match="rating must be 1 to 5"):
        alc.traces.feedback(good.trace_id, rating=7)
    with pytest.raises(InputError, match="empty"):
        alc.traces.feedback(good.trace_id)
    with pytest.raises(NotFoundError):
        alc.traces.feedback("nope", 1)
    assert [t.id for t in alc.traces.find(feedback="down")] == [bad.trace_id]
    assert len(alc.traces.find(app="reembolso", feedback="none")) == 1
    [row] = alc.traces.summary("reembolso")
    assert (row["app_version"], row["traces"], row["up"], row["down"]) == (1, 3, 1, 1)
    assert row["mean_rating"] == 3.0
    out = tmp_path / "eval.jsonl"
    assert alc.export_feedback(out, app="reembolso", rating="down") == 1
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["question"] == "Qual a senha do Wi-Fi?" and line["answer"] == bad.text
    assert line["reference_answer"] == "Peça o código de convidado na recepção."
    assert line["origin"]["trace_id"] == bad.trace_id and line["origin"]["app_version"] == 1
    assert line["sources"]
    assert alc.export_feedback(out, min_stars=4) == 1
    assert json.loads(out.read_text())["origin"]["trace_id"] == good.trace_id
    with pytest.raises(InputError, match="cannot write"):
        alc.export_feedback(tmp_path / "no" / "dir" / "x.jsonl")
    assert json.loads(out.read_text())["origin"]["trace_id"] == good.trace_id  # untouched
    assert "feedback.export" in [e.action for e in alc.keys.audit_log()]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_server_deploys_labels_and_serves_the_new_version_at_once(
        tmp_path: Path, docs: Path) -> None:
    alc = home(tmp_path, docs)
    with TestClient(create_app(alc.settings, alc)) as client:
        _, admin = alc.keys.create("ops", ["admin", "ask"])
        _, user = alc.keys.create("ana", ["ask"], ["reembolso"])
        assert client.post("/v1/apps", headers=bearer(user),
                           json={"spec": SPEC}).status_code == 403
        bad = client.post("/v1/apps", headers=bearer(admin),
                          json={"spec": SPEC + "colections: []\n"})
        assert bad.status_code == 400 and "unknown field" in bad.json()["error"]["message"]
        assert alc.apps.names() == []
        made = client.post("/v1/apps", headers=bearer(admin), json={"spec": SPEC})
        assert made.status_code == 201 and made.json()["version"] == 1
        client.post("/v1/apps", headers=bearer(admin),
                    json={"spec": SPEC.replace("max_tokens: 64", "max_tokens: 32")})

        def ask() -> dict[str, object]:
            r = client.post("/v1/chat/completions", headers=bearer(user), json={
                "model": "reembolso", "messages": [
                    {"role": "user", "content": "Em quantos dias envio os comprovantes?"}]})
            assert r.status_code == 200, r.text
            return r.json()["alicerce"]

        first = ask()
        assert first["versions"]["app"] == "reembolso@1"
        moved = client.post("/v1/apps/reembolso/label", headers=bearer(admin),
                            json={"version": 2, "label": "production"})
        assert moved.status_code == 200, moved.text
        second = ask()  # same process, no restart, and not the cached v1 answer
        assert second["versions"]["app"] == "reembolso@2"
        spans = {s["name"]: s["attrs"] for s in alc.traces.get(second["trace_id"]).spans}
        assert spans["generate"]["params"]["max_tokens"] == 32  # the app's, not the default
        assert second["trace_id"] != first["trace_id"]
        back = client.post("/v1/apps/reembolso/rollback", headers=bearer(admin), json={})
        assert back.status_code == 200 and back.json()["version"] == 1
        assert ask()["versions"]["app"] == "reembolso@1"
        shown = client.get("/v1/apps/reembolso@2", headers=bearer(user)).json()
        assert shown["spec"]["decoding"]["max_tokens"] == 32
        listed = client.get("/v1/traces?app=reembolso", headers=bearer(admin)).json()["data"]
        assert len(listed) == 3 and {t["app_version"] for t in listed} == {1, 2}
        fb = client.post("/v1/feedback", headers=bearer(user), json={
            "trace_id": second["trace_id"], "score": -1, "rating": 2, "comment": "curto"})
        assert fb.status_code == 200, fb.text
        one = client.get(f"/v1/traces/{second['trace_id']}", headers=bearer(user)).json()
        assert one["feedback"][0]["rating"] == 2 and one["spans"]
        assert client.get("/v1/traces?app=kb", headers=bearer(user)).status_code == 403
    alc.close()


def test_raw_model_calls_and_techniques_are_traced_too(tmp_path: Path, docs: Path) -> None:
    alc = home(tmp_path, docs)
    with TestClient(create_app(alc.settings, alc)) as client:
        _, key = alc.keys.create("dev", ["ask"])
        r = client.post("/v1/chat/completions", headers=bearer(key), json={
            "model": "fake", "max_tokens": 20,
            "messages": [{"role": "system", "content": "Seja breve."},
                         {"role": "user", "content": "Diga oi."}]})
        assert r.status_code == 200, r.text
        tid = r.json()["id"].removeprefix("chatcmpl-")
        streamed = client.post("/v1/chat/completions", headers=bearer(key), json={
            "model": "fake", "stream": True,
            "messages": [{"role": "user", "content": "Diga tchau."}]})
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
    t = alc.traces.get(tid)
    assert (t.app, t.question, t.answer, t.caller) == ("fake", "Diga oi.", REPLY,
                                                       key.split("-")[1])
    [span] = t.spans
    assert span["name"] == "generate" and span["attrs"]["params"]["max_tokens"] == 20
    assert [m["role"] for m in span["attrs"]["messages"]] == ["system", "user"]
    assert t.lineage["model_identity"] == "custom:fake"
    [st] = alc.traces.find(app="fake", limit=1)
    assert st.question == "Diga tchau." and st.answer == REPLY
    assert st.spans[0]["attrs"]["time_to_first_token_ms"] is not None
    g = alc.generate("Traduza: bom dia", technique="zero-shot", model="fake")
    gt = alc.traces.get(g.trace_id)
    assert gt.question == "Traduza: bom dia" and gt.spans[0]["attrs"]["technique"] == "zero-shot"
    alc.close()


def test_cli_apps_traces_and_feedback(tmp_path: Path, docs: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands' plumbing; the server and platform tests above cover what they call."""
    monkeypatch.setenv("ALICERCE_EMBEDDER", "hashing")
    monkeypatch.setenv("ALICERCE_GENERATOR", "smollm2-135m")  # hashed, never loaded here
    h = str(tmp_path / "h")
    runner = CliRunner()

    def run(*args: str) -> str:
        r = runner.invoke(cli, [*args, "--home", h])
        assert r.exit_code == 0, r.output
        return r.output

    run("ingest", str(docs), "-c", "kb")
    run("ingest", str(docs / "faq.jsonl"), "-c", "other")
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    assert "reembolso@1 stored" in run("apps", "deploy", str(spec))
    assert "unchanged" in run("apps", "deploy", str(spec))
    spec.write_text(SPEC.replace("k: 3", "k: 4"), encoding="utf-8")
    assert "reembolso@2 stored" in run("apps", "deploy", str(spec), "--label", "staging")
    listed = run("apps", "list")
    assert "production=@1" in listed and "staging=@2" in listed
    assert "+  k: 4" in run("apps", "diff", "reembolso@1", "reembolso@2")
    assert "@1 -> @2" in run("apps", "label", "reembolso@2", "production")
    assert "@2 -> @1" in run("apps", "rollback", "reembolso")
    assert json.loads(run("apps", "show", "reembolso", "--json"))["version"] == 1
    with Alicerce.open(h) as alc:  # a trace as a served request leaves it
        trace_id = alc.traces.record(
            "reembolso", "local", "Qual o prazo?", app_version=1,
            answer={"answer": "Em 30 dias [1].", "abstained": False, "citations": []},
            spans=[{"name": "generate", "start_ms": 0.0, "ms": 5.0,
                    "attrs": {"output": "Em 30 dias [1]."}}])
        alc.traces.flush()
    assert trace_id in run("traces", "list", "--app", "reembolso", "--since", "1h")
    shown = run("traces", "show", trace_id)
    assert "generate" in shown and "lineage:" in shown
    run("feedback", "give", trace_id, "--down", "--rating", "2",
        "--reference", "Em até 30 dias.")
    assert trace_id in run("traces", "list", "--feedback", "down")
    out = tmp_path / "fb.jsonl"
    assert "1 rows written" in run("feedback", "export", "--to", str(out))
    assert json.loads(out.read_text())["reference_answer"] == "Em até 30 dias."
    bad = runner.invoke(cli, ["apps", "deploy", str(tmp_path / "none.yaml"), "--home", h])
    # main() prints these as "error: ... hint: ..." with exit status 2 (test_cli.py).
    assert isinstance(bad.exception, InputError) and "cannot read" in str(bad.exception)
    bad = runner.invoke(cli, ["traces", "list", "--since", "yesterday", "--home", h])
    assert isinstance(bad.exception, InputError) and "--since" in str(bad.exception)


def test_the_shipped_example_app_deploys(tmp_path: Path, docs: Path) -> None:
    alc = home(tmp_path, docs)
    try:
        alc.ingest([docs], "handbook")
        example = Path(__file__).resolve().parents[1] / "examples" / "handbook-app.yaml"
        version, created = alc.deploy_app(example)
        assert created and version.ref == "rh@1"
        assert version.spec["chain"] == ["input_guards", "condense", "retrieve", "generate",
                                         "output_guards"]
        assert [r["rail"] for r in version.spec["guards"]["output"]] == [
            "pii", "toxicity", "grounding", "canary"]
        answer = alc.ask("Quantos dias de férias?", "rh")
        assert answer.versions["app"] == "rh@1"
        assert {v["stage"] for v in answer.guards} >= {"input", "output"}
    finally:
        alc.close()
