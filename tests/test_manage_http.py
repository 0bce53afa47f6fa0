"""The management API behind the console: stored datasets, evaluation runs and their
comparison, the review queue into a golden dataset, drift runs, prompts, keys and the audit
log; and the `read` scope, which sees everything admin sees and changes nothing.

In-process server with the hashing embedder and a scripted model; every write route is
tried with a read-only key (and the list of write routes is taken from the OpenAPI schema,
so a new route cannot be forgotten)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli_app
from alicerce.core.governance import ReviewDecision
from alicerce.datasets import Row, build
from alicerce.server import create_app
from alicerce.testing.fakes import ScriptedGenerator

REPLY = "Send receipts within 30 days [1]."
GOLDEN = [{"question": "How many days to send receipts?", "sources": ["refund.md"],
           "reference": "Within 30 days."},
          {"question": "Is a taxi refunded?", "sources": ["refund.md"],
           "reference": "Yes, taxi and hotel are."},
          {"question": "Quantos dias de férias?", "sources": ["ferias.txt"],
           "reference": "30 dias por ano."}]


@pytest.fixture
def served(tmp_path: Path, docs: Path) -> Iterator[tuple[Alicerce, TestClient]]:
    settings = Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                             generator="fake", guards={})
    alc = Alicerce(settings)
    alc.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    alc.ingest([docs], "kb")
    alc.ingest([docs / "faq.jsonl"], "other", id_field="id", title_field="title")
    with TestClient(create_app(settings, alc)) as client:
        yield alc, client
    alc.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def upload(client: TestClient, key: str, name: str, rows: list[dict[str, Any]],
           filename: str = "golden.jsonl") -> Any:
    return client.post(f"/v1/datasets/{name}", headers=bearer(key),
                       files={"file": (filename, jsonl(rows), "application/jsonl")})


def test_datasets_are_versioned_by_content_and_feed_eval_runs(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    _, reader = alc.keys.create("auditor", ["read"])
    first = upload(client, admin, "golden", GOLDEN)
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.json()["created"] and first.json()["rows"] == 3
    again = upload(client, admin, "golden", GOLDEN, "same-rows.jsonl")
    assert again.json()["version"] == 1 and not again.json()["created"]
    second = upload(client, admin, "golden", GOLDEN[:2])
    assert second.json()["version"] == 2 and second.json()["rows"] == 2

    # a stored version is what `eval run --dataset golden@1` scores; its runs link back
    ds = alc.dataset("golden@1")
    assert [r.question for r in ds.rows] == [g["question"] for g in GOLDEN]
    run = alc.evals.run("kb", ds, ["retrieval", "answer"])
    page = client.get("/v1/datasets/golden@1", headers=bearer(reader),
                      params={"offset": 1, "limit": 1}).json()
    assert page["hash"] == ds.version and [r["question"] for r in page["items"]] == [
        GOLDEN[1]["question"]]
    assert [v["version"] for v in page["versions"]] == [2, 1]
    assert [r["id"] for r in page["runs"]] == [run.id]
    newest = client.get("/v1/datasets/golden", headers=bearer(reader)).json()
    assert newest["version"] == 2 and newest["runs"] == []
    listed = client.get("/v1/datasets", headers=bearer(reader)).json()["data"]
    assert [(d["name"], d["version"]) for d in listed] == [("golden", 2)]

    bad = upload(client, admin, "golden", [{"no_question": 1}])
    assert bad.status_code == 400 and "no usable rows" in bad.json()["error"]["message"]
    wrong = client.post("/v1/datasets/golden", headers=bearer(admin),
                        files={"file": ("x.exe", b"MZ", "application/octet-stream")})
    assert wrong.status_code == 400 and ".jsonl" in wrong.json()["error"]["message"]
    assert upload(client, admin, "Bad Name!", GOLDEN).status_code in (400, 404)
    assert client.get("/v1/datasets/nope", headers=bearer(reader)).status_code == 404
    assert client.get("/v1/datasets/golden@x", headers=bearer(reader)).status_code == 400
    actions = [(e.action, e.actor) for e in alc.keys.audit_log()]
    assert ("dataset.add", admin.split("-")[1]) in actions


def test_runs_listed_shown_and_compared_row_by_row_with_trace_links(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, reader = alc.keys.create("auditor", ["read"])
    _, other_only = alc.keys.create("analyst", ["read"], ["other"])
    ds = build("golden", [Row(f"r{i}", g["question"], tuple(g["sources"]), g["reference"])
                          for i, g in enumerate(GOLDEN)])
    a = alc.evals.run("kb", ds, ["retrieval", "answer"])
    alc.use_generator("fake", ScriptedGenerator("I do not know.", name="fake"))
    b = alc.evals.run("kb", ds, ["retrieval", "answer"], cache=False)

    runs = client.get("/v1/evals", headers=bearer(reader)).json()["data"]
    assert [r["id"] for r in runs] == [b.id, a.id] and "results" not in runs[0]
    assert set(runs[0]["summary"]["answer.f1"]) == {"mean", "low", "high", "n"}
    shown = client.get(f"/v1/evals/{a.id}", headers=bearer(reader),
                       params={"limit": 2}).json()
    assert len(shown["results"]) == 2 and shown["rows"] == 3
    assert all(r["trace_id"] for r in shown["results"])

    c = client.get(f"/v1/evals/{a.id}/compare/{b.id}", headers=bearer(reader)).json()
    assert c["rows"] == 3 and c["changed"] >= 1
    f1 = next(m for m in c["metrics"] if m["metric"] == "answer.f1")
    assert f1["delta"]["mean"] < 0
    top = c["questions"][0]
    assert top["answer_a"] == REPLY and top["answer_b"] == "I do not know."
    assert top["trace_a"] and top["trace_b"] and top["change"] < 0
    # the link from a row goes to the trace that produced that answer
    trace = client.get(f"/v1/traces/{top['trace_b']}", headers=bearer(reader)).json()
    assert trace["answer"] == "I do not know."
    changes = [abs(q["change"]) for q in c["questions"]]
    assert changes == sorted(changes, reverse=True)

    # a key restricted to another collection sees none of kb's runs, and cannot guess them
    assert client.get("/v1/evals", headers=bearer(other_only)).json()["data"] == []
    assert client.get(f"/v1/evals/{a.id}", headers=bearer(other_only)).status_code == 404
    assert client.get(f"/v1/evals/{a.id}/compare/{b.id}",
                      headers=bearer(other_only)).status_code == 404
    assert client.get("/v1/evals/ev-nope", headers=bearer(reader)).status_code == 404


def test_review_queue_to_golden_dataset(served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    _, reader = alc.keys.create("auditor", ["read"])
    _, user = alc.keys.create("ana", ["ask"])
    ids = []
    for q in ("How many days to send receipts?", "Is a taxi refunded?", "Is wine refunded?"):
        r = client.post("/v1/apps/kb/ask", headers=bearer(user), json={"question": q})
        ids.append(r.json()["trace_id"])
    alc.traces.flush()
    for tid, ref in zip(ids, ("", "Yes, taxi and hotel.", ""), strict=True):
        assert client.post("/v1/feedback", headers=bearer(user), json={
            "trace_id": tid, "score": -1, "comment": "<b>wrong</b>",
            "reference": ref}).status_code == 200
    queue = client.get("/v1/review", headers=bearer(reader)).json()["data"]
    assert [q["trace_id"] for q in queue] == ids
    assert queue[1]["reference"] == "Yes, taxi and hotel." and queue[0]["why"] == "rated down"
    assert queue[0]["comments"] == ["<b>wrong</b>"]

    decisions = [{"trace_id": ids[0], "action": "correct", "reference": "Within 30 days."},
                 {"trace_id": ids[1], "action": "accept"},
                 {"trace_id": ids[2], "action": "discard"}]
    for key in (reader, user):  # reading is not deciding
        refused = client.post("/v1/review", headers=bearer(key),
                              json={"dataset": "golden", "decisions": decisions})
        assert refused.status_code == 403
    missing = client.post("/v1/review", headers=bearer(admin), json={
        "dataset": "golden", "decisions": [*decisions, {"trace_id": "nope", "action": "accept"}]})
    assert missing.status_code == 404 and not alc.datasets.exists("golden")  # all or nothing
    no_ref = client.post("/v1/review", headers=bearer(admin), json={
        "decisions": [{"trace_id": ids[0], "action": "correct"}]})
    assert no_ref.status_code == 400 and "reference" in no_ref.json()["error"]["message"]

    done = client.post("/v1/review", headers=bearer(admin),
                       json={"dataset": "golden", "decisions": decisions})
    assert done.status_code == 200, done.text
    assert done.json()["dataset"]["ref"] == "golden@1" and done.json()["dataset"]["rows"] == 2
    rows = {r.question: r for r in alc.datasets.get("golden").rows}
    assert rows["How many days to send receipts?"].reference == "Within 30 days."
    assert rows["Is a taxi refunded?"].reference == "Yes, taxi and hotel."
    assert rows["Is a taxi refunded?"].origin["trace_id"] == ids[1]
    assert client.get("/v1/review", headers=bearer(reader)).json()["data"] == []
    # a later correction of the same trace replaces its row in a new version
    alc.review([ReviewDecision(ids[0], "correct", "In 30 days.")], "golden")
    assert [v.version for v in alc.datasets.versions("golden")] == [2, 1]
    again = {r.id: r.reference for r in alc.datasets.get("golden").rows}
    assert len(again) == 2 and again[f"trace-{ids[0]}"] == "In 30 days."


def test_drift_runs_are_listed_for_keys_that_may_see_the_app(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, reader = alc.keys.create("auditor", ["read"])
    _, other_only = alc.keys.create("analyst", ["read"], ["other"])
    rng, now = random.Random(0), time.time()
    for i in range(30):
        q = f"Qual o prazo para enviar os comprovantes de {rng.choice(['táxi', 'hotel'])}?"
        alc.traces.record("kb", "k1", q, at=now - 86400 * (2 + i % 5), answer={
            "answer": "30 dias [1].", "abstained": False, "citations": [], "versions": {},
            "usage": {}, "timings": {}})
        alc.traces.record("kb", "k1", q, at=now - 3600, answer={
            "answer": "30 dias [1].", "abstained": False, "citations": [], "versions": {},
            "usage": {}, "timings": {}})
    run = alc.drift("kb", "window:7d", "24h", sample=50)
    listed = client.get("/v1/drift", headers=bearer(reader)).json()["data"]
    assert [r["id"] for r in listed] == [run.id] and listed[0]["sides"]
    assert client.get(f"/v1/drift/{run.id}", headers=bearer(reader)).json()["app"] == "kb"
    assert client.get("/v1/drift", headers=bearer(other_only)).json()["data"] == []
    assert client.get(f"/v1/drift/{run.id}", headers=bearer(other_only)).status_code == 404


def test_prompts_versions_labels_and_diff(served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    _, reader = alc.keys.create("auditor", ["read"])
    body = {"template": "Pergunta: {{ question }}", "system": "Responda em português."}
    made = client.post("/v1/prompts/rh-qa", headers=bearer(admin), json=body)
    assert made.status_code == 201 and made.json()["version"] == 1 and made.json()["created"]
    same = client.post("/v1/prompts/rh-qa", headers=bearer(admin), json=body).json()
    assert same["version"] == 1 and not same["created"]
    v2 = client.post("/v1/prompts/rh-qa", headers=bearer(admin), json={
        **body, "template": "Pergunta do usuário: {{ question }}"}).json()
    assert v2["version"] == 2 and v2["variables"] == ["question"]
    labelled = client.post("/v1/prompts/rh-qa/label", headers=bearer(admin),
                           json={"version": 2, "label": "production"})
    assert labelled.json()["labels"] == ["production"]
    shown = client.get("/v1/prompts/rh-qa@production", headers=bearer(reader)).json()
    assert shown["version"] == 2 and [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["history"][-1]["to"] == 2
    diff = client.get("/v1/prompts/rh-qa/diff", headers=bearer(reader),
                      params={"a": 1, "b": 2}).json()["diff"]
    assert "-Pergunta: {{ question }}" in diff and "+Pergunta do usuário" in diff
    listed = client.get("/v1/prompts", headers=bearer(reader)).json()["data"]
    assert next(p for p in listed if p["name"] == "rh-qa")["labelled"] == {"production": 2}
    broken = client.post("/v1/prompts/rh-qa", headers=bearer(admin),
                         json={"template": "{% if %}"})
    assert broken.status_code == 400 and "Jinja2" in broken.json()["error"]["message"]
    assert client.post("/v1/prompts/rh-qa", headers=bearer(reader), json=body).status_code == 403
    acts = [e.action for e in alc.keys.audit_log()]
    assert acts.count("prompt.create") == 2 and acts.count("prompt.label") == 1


def test_keys_created_once_revoked_and_audited(served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    admin_key, admin = alc.keys.create("ops", ["admin"])
    _, reader = alc.keys.create("auditor", ["read"])
    _, kb_admin = alc.keys.create("kb-ops", ["admin"], ["kb"])
    made = client.post("/v1/keys", headers=bearer(admin),
                       json={"name": "bot", "scopes": ["ask"], "collections": ["kb"]})
    assert made.status_code == 201 and made.json()["key"].startswith("alc-")
    secret, kid = made.json()["key"], made.json()["id"]
    assert client.post("/v1/apps/kb/ask", headers=bearer(secret),
                       json={"question": "Taxi?"}).status_code == 200
    listed = client.get("/v1/keys", headers=bearer(reader)).text
    assert kid in listed and secret.split("-", 2)[2] not in listed and "salt" not in listed
    # a collection-restricted admin cannot mint or see keys (they concern every collection)
    assert client.post("/v1/keys", headers=bearer(kb_admin),
                       json={"name": "x", "scopes": ["admin"]}).status_code == 403
    assert client.get("/v1/keys", headers=bearer(kb_admin)).status_code == 403
    assert client.post(f"/v1/keys/{kid}/revoke", headers=bearer(reader)).status_code == 403
    gone = client.post(f"/v1/keys/{kid}/revoke", headers=bearer(admin))
    assert gone.status_code == 200 and gone.json()["revoked_at"]
    assert client.post("/v1/apps/kb/ask", headers=bearer(secret),
                       json={"question": "Taxi?"}).status_code == 401
    log = client.get("/v1/audit", headers=bearer(reader)).json()["data"]
    assert [(e["action"], e["actor"]) for e in log[:2]] == [("key.revoke", admin_key.id),
                                                            ("key.create", admin_key.id)]
    bad = client.post("/v1/keys", headers=bearer(admin), json={"name": "x", "scopes": ["root"]})
    assert bad.status_code == 400


def test_read_key_sees_everyones_records_and_no_write_route_accepts_it(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, reader = alc.keys.create("auditor", ["read"])
    _, kb_reader = alc.keys.create("kb-auditor", ["read"], ["kb"])
    ana, user = alc.keys.create("ana", ["ask"])
    _, bob = alc.keys.create("bob", ["ask"])
    job = alc.batches.create(ana.id, "kb", 1, alc.settings.home / "in.jsonl",
                             alc.settings.home / "out.jsonl", 1)
    tid = client.post("/v1/apps/kb/ask", headers=bearer(user),
                      json={"question": "Taxi?"}).json()["trace_id"]
    other = client.post("/v1/apps/other/ask", headers=bearer(user),
                        json={"question": "Wi-Fi?"}).json()["trace_id"]
    alc.traces.flush()
    assert {t["id"] for t in client.get("/v1/traces", headers=bearer(reader)).json()[
        "data"]} == {tid, other}
    assert [t["id"] for t in client.get("/v1/traces", headers=bearer(kb_reader)).json()[
        "data"]] == [tid]
    versioned = client.get("/v1/traces", headers=bearer(reader), params={"app_version": 1})
    assert versioned.json()["data"] == []  # a collection's answers carry no app version
    assert client.get(f"/v1/traces/{other}", headers=bearer(kb_reader)).status_code == 403
    assert client.get(f"/v1/traces/{tid}", headers=bearer(bob)).status_code == 403
    assert client.get(f"/v1/traces/{tid}", headers=bearer(reader)).status_code == 200
    assert client.get("/v1/apps", headers=bearer(reader)).status_code == 200

    # every route that changes something (or spends model time) refuses a read-only key
    writes = {(path, method) for path, ops in client.get("/openapi.json").json()[
        "paths"].items() for method in ops if method in ("post", "put", "patch", "delete")}
    bodies: dict[str, Any] = {
        "/v1/chat/completions": {"json": {"model": "kb", "messages": [
            {"role": "user", "content": "x"}]}},
        "/v1/completions": {"json": {"model": "kb", "prompt": "x"}},
        "/v1/embeddings": {"json": {"model": "kb", "input": "x"}},
        "/v1/apps/{app}/ask": {"json": {"question": "x"}},
        "/v1/apps/{app}/run": {"json": {"inputs": {}}},
        "/v1/apps": {"json": {"spec": "name: x\ncollections: [kb]\n"}},
        "/v1/apps/{app}/label": {"json": {"version": 1}},
        "/v1/apps/{app}/rollback": {"json": {}},
        "/v1/collections/{name}/search": {"json": {"query": "x"}},
        "/v1/collections/{name}/documents": {"files": {"files": ("a.md", b"# A\n\nb")}},
        "/v1/feedback": {"json": {"trace_id": tid, "score": -1}},
        "/v1/batches": {"json": {"app": "kb", "rows": [{"question": "x"}]}},
        "/v1/batches/{job_id}/cancel": {},
        "/v1/datasets/{name}": {"files": {"file": ("g.jsonl", jsonl(GOLDEN))}},
        "/v1/review": {"json": {"decisions": [{"trace_id": tid, "action": "accept"}]}},
        "/v1/evals": {"json": {"app": "kb", "dataset": "golden@1"}},
        "/v1/prompts/{name}": {"json": {"template": "{{ question }}"}},
        "/v1/prompts/{name}/label": {"json": {"version": 1}},
        "/v1/keys": {"json": {"name": "x", "scopes": ["admin"]}},
        "/v1/keys/{key_id}/revoke": {},
        "/v1/traces/{trace_id}/explain": {"json": {}},
        "/v1/traces/{trace_id}/counterfactual": {"json": {"change": "sem a fonte 1"}},
    }
    params = {"app": "kb", "name": "kb", "job_id": job.id, "key_id": ana.id, "trace_id": tid}
    missing = {p for p, _ in writes} - set(bodies)
    assert not missing, f"write routes without a read-key check here: {missing}"
    before = (len(alc.keys.audit_log(1000)), alc.traces.count())
    for path, method in sorted(writes):
        url = path.format(**params)
        r = client.request(method.upper(), url, headers=bearer(reader), **bodies[path])
        if path == "/v1/collections/{name}/search":  # a POST that changes nothing
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert r.json()["error"]["type"] == "permission_error"
    alc.traces.flush()
    assert (len(alc.keys.audit_log(1000)), alc.traces.count()) == before
    assert not alc.datasets.all() and not alc.traces.feedback_for(tid)
    assert alc.batches.get(job.id).state == "queued" and alc.keys.get(ana.id).revoked_at is None
    assert alc.explanations.store.latest(tid) is None
    assert client.get(f"/v1/batches/{job.id}", headers=bearer(reader)).status_code == 200


def test_datasets_and_review_from_the_cli(served: tuple[Alicerce, TestClient],
                                          tmp_path: Path) -> None:
    alc, client = served
    home = str(alc.settings.home)
    f = tmp_path / "g.jsonl"
    f.write_bytes(jsonl(GOLDEN))
    runner = CliRunner()
    out = runner.invoke(cli_app, ["datasets", "add", str(f), "--name", "golden", "--home", home])
    assert out.exit_code == 0 and "golden@1: 3 rows (new version)" in out.output, out.output
    out = runner.invoke(cli_app, ["datasets", "list", "--home", home, "--json"])
    assert json.loads(out.output)[0]["ref"] == "golden@1"
    out = runner.invoke(cli_app, ["datasets", "export", "golden@1", "--to",
                                  str(tmp_path / "back.jsonl"), "--home", home])
    assert out.exit_code == 0
    assert len((tmp_path / "back.jsonl").read_text().splitlines()) == 3
    _, user = alc.keys.create("ana", ["ask"])
    tid = client.post("/v1/apps/kb/ask", headers=bearer(user),
                      json={"question": "Taxi?"}).json()["trace_id"]
    alc.traces.flush()
    alc.traces.feedback(tid, -1, caller="x")
    out = runner.invoke(cli_app, ["monitor", "review", "--accept-into", "golden",
                                  "--home", home])
    assert out.exit_code == 0 and "1 accepted into golden@2" in out.output, out.output
    shown = runner.invoke(cli_app, ["datasets", "show", "golden", "--home", home, "--json"])
    assert len(json.loads(shown.output)["items"]) == 4 == json.loads(shown.output)["rows"]


def test_evaluation_jobs_run_in_the_background_and_name_their_run(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    _, reader = alc.keys.create("auditor", ["read"])
    _, other_only = alc.keys.create("analyst", ["admin"], ["other"])
    assert upload(client, admin, "golden", GOLDEN).status_code == 201
    body = {"app": "kb", "dataset": "golden@1", "metrics": ["retrieval", "answer"]}
    assert client.post("/v1/evals", headers=bearer(reader), json=body).status_code == 403
    assert client.post("/v1/evals", headers=bearer(other_only), json=body).status_code == 403
    bad = client.post("/v1/evals", headers=bearer(admin), json={**body, "metrics": ["vibes"]})
    assert bad.status_code == 400 and "retrieval" in bad.json()["error"]["message"]
    assert client.post("/v1/evals", headers=bearer(admin),
                       json={**body, "dataset": "golden@9"}).status_code == 404
    assert client.post("/v1/evals", headers=bearer(admin),
                       json={**body, "app": "nope"}).status_code == 404
    started = client.post("/v1/evals", headers=bearer(admin), json={**body, "limit": 2})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["state"] == "queued" and job["total"] == 2
    deadline = time.time() + 60
    while job["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.1)
        job = client.get(f"/v1/evals/jobs/{job['id']}", headers=bearer(reader)).json()
    assert job["state"] == "done" and job["done"] == 2, job
    run = client.get(f"/v1/evals/{job['run_id']}", headers=bearer(reader)).json()
    assert run["rows"] == 2 and run["dataset"] == "golden" and "answer.f1" in run["summary"]
    listed = client.get("/v1/evals/jobs", headers=bearer(reader)).json()["data"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get(f"/v1/evals/jobs/{job['id']}",
                      headers=bearer(other_only)).status_code == 404
    assert ("eval.start", job["id"]) in [(e.action, e.target) for e in alc.keys.audit_log()]


def test_a_conversation_is_a_session_view_with_each_turns_feedback(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, user = alc.keys.create("ana", ["ask"])
    _, bob = alc.keys.create("bob", ["ask"])
    _, reader = alc.keys.create("auditor", ["read"])
    _, other_only = alc.keys.create("analyst", ["read"], ["other"])
    first = client.post("/v1/apps/kb/ask", headers=bearer(user), json={
        "question": "How many days to send receipts?", "conversation_id": "new"}).json()
    cid = first["conversation_id"]
    second = client.post("/v1/apps/kb/ask", headers=bearer(user), json={
        "question": "And the taxi?", "conversation_id": cid}).json()
    alc.traces.flush()
    client.post("/v1/feedback", headers=bearer(user), json={
        "trace_id": first["trace_id"], "score": -1, "comment": "too vague"})
    body = client.get(f"/v1/conversations/{cid}", headers=bearer(user)).json()
    assert [t["trace_id"] for t in body["turns"]] == [first["trace_id"], second["trace_id"]]
    assert body["turns"][0]["feedback"][0]["comment"] == "too vague"
    assert body["turns"][1]["question"] == "And the taxi?" and body["app"].startswith("kb")
    assert alc.conversations.of_trace(second["trace_id"]) == cid
    assert client.get(f"/v1/conversations/{cid}", headers=bearer(reader)).status_code == 200
    assert client.get(f"/v1/conversations/{cid}", headers=bearer(bob)).status_code == 404
    assert client.get(f"/v1/conversations/{cid}",
                      headers=bearer(other_only)).status_code == 403
    assert client.get("/v1/conversations/nope", headers=bearer(user)).status_code == 404


def test_a_stopping_server_ends_an_evaluation_between_questions_and_resumes_it(
        tmp_path: Path, docs: Path) -> None:
    """The server's shutdown waits for the question in flight and starts no other (the
    home is closed after it); the next start runs the job again to its end."""
    started, gate = threading.Event(), threading.Event()

    def slow(messages: Any) -> str:
        started.set()
        gate.wait(10)
        return REPLY
    settings = Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                             generator="fake", guards={})
    with Alicerce(settings) as alc:
        alc.use_generator("fake", ScriptedGenerator(slow, name="fake"))
        alc.ingest([docs], "kb")
        _, admin = alc.keys.create("ops", ["admin"])
        body = {"app": "kb", "dataset": "golden@1", "metrics": ["answer"]}
        with TestClient(create_app(settings, alc)) as client:
            assert upload(client, admin, "golden", GOLDEN).status_code == 201
            job = client.post("/v1/evals", headers=bearer(admin), json=body).json()
            assert started.wait(10)
            threading.Timer(0.5, gate.set).start()  # the question ends while it stops
        assert not [t for t in threading.enumerate() if t.name == f"alicerce-{job['id']}"]
        left = alc.eval_jobs.get(job["id"])
        assert left.state == "running" and left.done == 1 and not left.run_id
        with TestClient(create_app(settings, alc)) as client:
            deadline = time.time() + 60
            while time.time() < deadline:
                got = alc.eval_jobs.get(job["id"])
                if got.state not in ("queued", "running"):
                    break
                time.sleep(0.1)
        assert got.state == "done" and got.done == 3 and got.run_id, got
