"""The HTTP server in-process (FastAPI's TestClient) with the hashing embedder and a scripted
model: access control, errors in OpenAI's shape, streaming format, cache, limits, metrics.
The real model behind a live `alicerce serve` is tested in test_server_live.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alicerce import Alicerce, Settings
from alicerce.errors import ConfigError
from alicerce.server import check_bind, create_app
from alicerce.testing.fakes import ScriptedGenerator

REPLY = "Envie os comprovantes em até 30 dias [1]."


def make(tmp_path: Path, docs: Path, **overrides: object) -> tuple[Alicerce, TestClient]:
    # Rails off unless a test asks: their models (spaCy, e5) would hold readiness back.
    settings = Settings.load(**{"home": tmp_path / "srv", "embedder": "hashing",
                                "abstain_below": 0.0, "generator": "fake", "guards": {},
                                **overrides})
    alc = Alicerce(settings)
    alc.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    alc.ingest([docs], "kb")
    alc.ingest([docs / "faq.jsonl"], "other")
    return alc, TestClient(create_app(settings, alc))


@pytest.fixture
def server(tmp_path: Path, docs: Path) -> Iterator[tuple[Alicerce, TestClient]]:
    alc, client = make(tmp_path, docs)
    with client:
        yield alc, client
    alc.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def chat(client: TestClient, key: str, model: str = "kb", **body: object) -> object:
    return client.post("/v1/chat/completions", headers=bearer(key), json={
        "model": model, "messages": [{"role": "user", "content": "Em quantos dias envio os "
                                                                 "comprovantes?"}], **body})


def test_keys_scopes_and_collection_isolation(server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, kb_only = alc.keys.create("analyst", ["ask"], ["kb"])
    _, ingester = alc.keys.create("bot", ["ingest"])
    assert client.post("/v1/chat/completions", json={"model": "kb", "messages": [
        {"role": "user", "content": "x"}]}).json()["error"]["type"] == "authentication_error"
    bad = chat(client, "alc-0000-nope")
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    ok = chat(client, kb_only)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["choices"][0]["message"]["content"] == REPLY
    assert body["alicerce"]["citations"][0]["n"] == 1 and body["alicerce"]["trace_id"]
    other = chat(client, kb_only, model="other")
    assert other.status_code == 403 and other.json()["error"]["type"] == "permission_error"
    assert chat(client, ingester).status_code == 403  # no ask scope
    models = client.get("/v1/models", headers=bearer(kb_only)).json()["data"]
    apps = [m["id"] for m in models if m["kind"] == "app"]
    assert apps == ["kb"]  # never lists another collection
    cols = client.get("/v1/collections", headers=bearer(kb_only)).json()["data"]
    assert [c["name"] for c in cols] == ["kb"]
    key_id = kb_only.split("-")[1]
    alc.keys.revoke(key_id)
    revoked = chat(client, kb_only)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    actions = [e.action for e in alc.keys.audit_log()]
    assert actions.count("key.create") == 2 and "key.revoke" in actions


def test_keys_are_stored_only_as_salted_hashes(server: tuple[Alicerce, TestClient]) -> None:
    alc, _ = server
    _, secret = alc.keys.create("a", ["ask"])
    _, secret2 = alc.keys.create("b", ["ask"])
    plain = secret.split("-", 2)[2]
    if not alc.settings.store:  # the SQLite file's bytes; on PostgreSQL, every stored column
        assert plain.encode() not in (alc.settings.home / "alicerce.db").read_bytes()
    everything = alc.keys._db.execute("SELECT * FROM api_keys").fetchall()
    assert not any(plain in repr(v) for row in everything for v in row)
    rows = alc.keys._db.execute("SELECT salt, hash FROM api_keys").fetchall()
    assert len({bytes(r[0]) for r in rows}) == 2 and all(len(r[1]) == 32 for r in rows)
    assert alc.keys.verify(secret2).name == "b"


def test_errors_are_precise_and_in_openai_shape(server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, key = alc.keys.create("a", ["ask"])
    h = bearer(key)
    cases = [
        (client.post("/v1/chat/completions", headers={**h, "Content-Type": "application/json"},
                     content=b"{not json"), 400, None),
        (client.post("/v1/chat/completions", headers=h,
                     json={"model": "kb", "messages": "hi"}), 400, "messages"),
        (client.post("/v1/chat/completions", headers=h, json={
            "model": "kb", "messages": [{"role": "user", "content": "x"}], "temprature": 1}),
         400, "temprature"),
        (chat(client, key, temperature=-1), 400, None),
        (chat(client, key, top_p=1.5), 400, None),
        (chat(client, key, max_tokens=999_999), 400, None),
        (chat(client, key, model="nope"), 404, None),
        (client.post("/v1/apps/nope/ask", headers=h, json={"question": "x"}), 404, None),
        (client.post("/v1/apps/kb/ask", headers=h, json={"question": "  "}), 400, None),
        (client.post("/v1/apps/kb/ask", headers=h, json={"question": "x" * 3000}), 400, None),
        (chat(client, key, response_format={"type": "json_schema", "json_schema": {
            "name": "a", "schema": {"type": "nonsense"}}}, model="fake"), 400, None),
        (client.post("/v1/embeddings", headers=h, json={"model": "nope", "input": "x"}),
         404, None),
        (client.get("/v1/nowhere", headers=h), 404, None),
    ]
    for resp, status, param in cases:
        assert resp.status_code == status, resp.text
        err = resp.json()["error"]
        assert err["message"] and err["type"]
        if param:
            assert err["param"] == param, err
    big = client.post("/v1/chat/completions", headers={**h, "Content-Type": "application/json"},
                      content=b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    assert "temprature" in cases[2][0].json()["error"]["message"]
    assert "top_p" in cases[4][0].json()["error"]["message"]
    assert "max_tokens_cap" in cases[5][0].json()["error"]["message"]


def test_streaming_chunks_follow_openai_and_end_with_citations(
        server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, key = alc.keys.create("a", ["ask"])
    with client.stream("POST", "/v1/chat/completions", headers=bearer(key), json={
            "model": "kb", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Em quantos dias envio os comprovantes?"}]
    }) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in resp.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[len("data: "):]) for ln in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == REPLY
    final = next(c for c in chunks if "alicerce" in c)
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["alicerce"]["citations"][0]["title"] and final["alicerce"]["trace_id"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_cache_hits_are_exact_scoped_and_invalidated(server: tuple[Alicerce, TestClient],
                                                     docs: Path) -> None:
    alc, client = server
    _, a = alc.keys.create("a", ["ask", "ingest"], ["kb"])
    _, b = alc.keys.create("b", ["ask"], ["kb", "other"])
    gen = alc.generator("fake")
    assert isinstance(gen, ScriptedGenerator)

    def ask(key: str, q: str = "Em quantos dias envio os comprovantes?") -> dict[str, object]:
        r = client.post("/v1/apps/kb/ask", headers=bearer(key), json={"question": q})
        assert r.status_code == 200, r.text
        return r.json()

    first = ask(a)
    calls = len(gen.calls)
    again = ask(a, "Em quantos  dias envio os comprovantes? ")  # whitespace normalised
    assert again["cached"] and again["answer"] == first["answer"]
    assert len(gen.calls) == calls  # no model call
    assert not ask(b)["cached"]  # another collection scope never shares an entry
    fresh = client.post("/v1/apps/kb/ask", headers={**bearer(a), "Cache-Control": "no-cache"},
                        json={"question": "Em quantos dias envio os comprovantes?"}).json()
    assert not fresh["cached"]
    (docs / "new.md").write_text("# Novo\n\nPrazo novo: 10 dias.", encoding="utf-8")
    alc.ingest([docs], "kb")  # a new collection version: old entries no longer match
    assert not ask(a)["cached"]
    metrics = client.get("/metrics").text
    assert 'alicerce_cache_total{kind="exact",result="hit"} 1.0' in metrics


def test_rate_limits_answer_429_with_retry_after(server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, key = alc.keys.create("slow", ["ask"], rpm=2)
    assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    codes = [chat(client, key).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = chat(client, key)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    _, tokens = alc.keys.create("few-tokens", ["ask"], tpm=5)
    assert chat(client, tokens, seed=1).status_code == 200  # admitted, spends > 5 tokens
    assert chat(client, tokens, seed=2).status_code == 429  # (a cache hit would be free)
    assert "alicerce_rate_limited_total" in client.get("/metrics").text


def test_feedback_traces_health_and_metrics(server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, key = alc.keys.create("a", ["ask"], ["kb"])
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["store"] == "ok"
    ans = client.post("/v1/apps/kb/ask", headers=bearer(key),
                      json={"question": "Em quantos dias envio os comprovantes?"}).json()
    fb = client.post("/v1/feedback", headers=bearer(key),
                     json={"trace_id": ans["trace_id"], "score": 1, "comment": "útil"})
    assert fb.status_code == 200 and fb.json()["recorded"]
    assert client.post("/v1/feedback", headers=bearer(key),
                       json={"trace_id": "nope", "score": 1}).status_code == 404
    assert client.post("/v1/feedback", headers=bearer(key),
                       json={"trace_id": ans["trace_id"], "score": 5}).status_code == 400
    trace = client.get(f"/v1/traces/{ans['trace_id']}", headers=bearer(key)).json()
    assert trace["lineage"]["collection"].startswith("kb@")
    assert trace["feedback"][0]["score"] == 1 and trace["caller"] == key.split("-")[1]
    text = client.get("/metrics").text
    assert 'alicerce_requests_total{app="kb",route="/v1/apps/{app}/ask",status="200"}' in text
    assert "alicerce_request_seconds_bucket" in text
    assert 'alicerce_feedback_total{app="kb",score="up"} 1.0' in text
    assert 'alicerce_tokens_total{app="kb",direction="out"}' in text


def test_quality_drift_and_evaluation_metrics(server: tuple[Alicerce, TestClient]) -> None:
    """Answers by outcome, retrieval scores, ratings, the process, and the gauges of drift
    and evaluation runs stored by other processes (read from the home at scrape time)."""
    alc, client = server
    _, key = alc.keys.create("a", ["ask"], ["kb"])
    for q in ("Em quantos dias envio os comprovantes?", "Táxi é reembolsado?",
              "Quantos dias de férias?", "Qual a senha do Wi-Fi?", "Hotel é reembolsado?"):
        ans = client.post("/v1/apps/kb/ask", headers=bearer(key), json={"question": q}).json()
    client.post("/v1/feedback", headers=bearer(key),
                json={"trace_id": ans["trace_id"], "score": -1, "rating": 2})
    alc.monitor("kb", sample=1.0, window="1h")
    for i, q in enumerate(("Wi-Fi?", "Senha?", "Visitantes?", "Rede?", "Código?")):
        alc.traces.record("kb", "k", q, at=time.time() - 86400 * (2 + i))  # last week
    alc.drift("kb", "window:7d", "1h", sides=["input"], sample=10)
    text = client.get("/metrics").text
    assert 'alicerce_answers_total{app="kb",outcome="answered",version=""} 5.0' in text
    assert 'alicerce_answers_total{app="kb",outcome="abstained",version=""} 0.0' in text
    assert 'alicerce_retrieval_top_score_count{app="kb"} 5.0' in text
    assert 'alicerce_feedback_rating_sum{app="kb"} 2.0' in text
    assert 'alicerce_feedback_total{app="kb",score="down"} 1.0' in text
    assert "alicerce_queue_capacity" in text and "process_resident_memory_bytes" in text
    assert 'alicerce_info{version="' in text
    assert 'kind="online",metric="triad.groundedness",version=""}' in text
    assert 'alicerce_drift_detected{app="kb",side="input"}' in text
    assert 'alicerce_drift_statistic{app="kb",side="input",test="embedding_mmd"}' in text


def test_conversation_follow_up_through_the_native_route(
        server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    alc.use_generator("fake", ScriptedGenerator(
        lambda msgs: "Quantos dias para enviar comprovantes?" if "Pergunta completa" in
        msgs[-1].content else REPLY, name="fake"))
    _, key = alc.keys.create("a", ["ask"])
    one = client.post("/v1/apps/kb/ask", headers=bearer(key),
                      json={"question": "Qual o prazo dos comprovantes?",
                            "conversation_id": "new"}).json()
    cid = one["conversation_id"]
    assert cid != "new" and len(cid) == 24
    two = client.post("/v1/apps/kb/ask", headers=bearer(key),
                      json={"question": "E para hotel?", "conversation_id": cid}).json()
    assert two["conversation_id"] == cid
    assert two["standalone_question"] == "Quantos dias para enviar comprovantes?"
    assert len(alc.conversations.history(cid)) == 4


def test_upload_ingests_in_the_background(server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, key = alc.keys.create("a", ["ingest", "ask"], ["kb2"])
    _, asker = alc.keys.create("b", ["ask"])
    files = [("files", ("../../wifi.md", b"# Wi-Fi\n\nA senha muda toda semana.",
                        "text/markdown"))]
    assert client.post("/v1/collections/kb2/documents", headers=bearer(asker),
                       files=files).status_code == 403
    assert client.post("/v1/collections/kb/documents", headers=bearer(key),
                       files=files).status_code == 403  # not its collection
    job = client.post("/v1/collections/kb2/documents", headers=bearer(key), files=files)
    assert job.status_code == 202, job.text
    jid = job.json()["id"]
    for _ in range(100):
        state = client.get(f"/v1/collections/kb2/jobs/{jid}", headers=bearer(key)).json()
        if state["state"] in ("done", "failed"):
            break
        import time
        time.sleep(0.05)
    assert state["state"] == "done", state
    assert state["report"]["added"] == 1 and state["files"] == ["wifi.md"]
    assert any(e.action == "collection.ingest" for e in alc.keys.audit_log())


def test_auth_off_only_on_loopback(tmp_path: Path, docs: Path) -> None:
    check_bind("127.0.0.1", auth=False)
    check_bind("::1", auth=False)
    check_bind("0.0.0.0", auth=True)
    for host in ("0.0.0.0", "192.168.0.10", "example.org"):
        with pytest.raises(ConfigError, match="auth off"):
            check_bind(host, auth=False)
    alc, client = make(tmp_path, docs, auth=False)
    with client:
        assert chat(client, "").status_code == 200
    alc.close()


def test_raw_model_and_embeddings(server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, restricted = alc.keys.create("r", ["ask"], ["kb"])
    denied = chat(client, restricted, model="fake")  # raw models are a scope of their own
    assert denied.status_code == 403 and "'models'" in denied.json()["error"]["message"]
    _, key = alc.keys.create("a", ["ask", "models"], ["kb"])
    raw = chat(client, key, model="fake", n=2)
    assert raw.status_code == 200 and len(raw.json()["choices"]) == 2
    assert "alicerce" not in raw.json()
    assert chat(client, key, model="fake", filters={"area": "it"}).status_code == 400
    comp = client.post("/v1/completions", headers=bearer(key),
                       json={"model": "fake", "prompt": "Diga oi"}).json()
    assert comp["object"] == "text_completion" and comp["choices"][0]["text"] == REPLY


def test_semantic_cache_is_opt_in_and_reuses_near_identical_questions(
        tmp_path: Path, docs: Path) -> None:
    alc, client = make(tmp_path, docs, semantic_cache=True, semantic_cache_threshold=0.9)
    with client:
        _, key = alc.keys.create("a", ["ask"])
        q = "Em quantos dias envio os comprovantes?"
        first = client.post("/v1/apps/kb/ask", headers=bearer(key), json={"question": q})
        near = client.post("/v1/apps/kb/ask", headers=bearer(key),
                           json={"question": "em quantos dias envio os comprovantes"})
        far = client.post("/v1/apps/kb/ask", headers=bearer(key),
                          json={"question": "Qual a senha do Wi-Fi de visitantes?"})
        assert not first.json()["cached"] and near.json()["cached"]
        assert not far.json()["cached"]
        assert 'alicerce_cache_total{kind="semantic",result="hit"} 1.0' in \
            client.get("/metrics").text
    alc.close()


class FailingGenerator(ScriptedGenerator):
    def stream(self, messages, params):  # type: ignore[no-untyped-def]
        yield from list(super().stream(messages, params))[:2]
        from alicerce.errors import GeneratorError

        raise GeneratorError("the model crashed")


def test_a_model_error_mid_stream_ends_it_with_an_error_event(
        server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    alc.use_generator("fake", FailingGenerator(REPLY, name="fake"))
    _, key = alc.keys.create("a", ["ask"])
    with client.stream("POST", "/v1/chat/completions", headers={
            **bearer(key), "Cache-Control": "no-cache"}, json={
            "model": "kb", "stream": True,
            "messages": [{"role": "user", "content": "Em quantos dias?"}]}) as resp:
        assert resp.status_code == 200
        lines = [ln for ln in resp.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    err = json.loads(lines[-2][len("data: "):])
    assert err["error"]["type"] == "server_error" and "crashed" in err["error"]["message"]
    assert len(lines) >= 4  # role chunk, two pieces, error, done
    alc.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    assert chat(client, key).status_code == 200  # the server goes on


def test_answer_cache_bounds_size_and_age(monkeypatch: pytest.MonkeyPatch) -> None:
    from alicerce.server import cache as cache_mod
    from alicerce.server.cache import AnswerCache

    now = [1000.0]
    monkeypatch.setattr(cache_mod.time, "monotonic", lambda: now[0])
    c = AnswerCache(size=2, ttl_s=60)
    ctx = AnswerCache.context(app="kb", versions={"collection": "kb@1"})
    for q in ("a", "b"):
        c.put(ctx, "kb", q, {"answer": q})
    assert c.get(ctx, "a") == ({"answer": "a"}, "exact")  # "a" is now the most recent
    c.put(ctx, "kb", "c", {"answer": "c"})  # over size: the least recently used ("b") goes
    assert c.get(ctx, "b") == (None, "") and len(c) == 2
    now[0] += 61
    assert c.get(ctx, "a") == (None, "")  # expired
    other = AnswerCache.context(app="kb", versions={"collection": "kb@2"})
    assert other != ctx and c.get(other, "c") == (None, "")
    assert c.drop("kb") == 1 and len(c) == 0
    assert AnswerCache(size=0, ttl_s=60).get(ctx, "a") == (None, "")


def test_cli_keys_and_serve_refusals(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "ALICERCE_HOME": str(tmp_path / "cli"), "ALICERCE_EMBEDDER": "hashing"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    made = run("keys", "create", "--name", "ci", "--scopes", "ask,ingest",
               "--collections", "kb", "--rpm", "5", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["key"].startswith(f"alc-{key['id']}-") and key["collections"] == ["kb"]
    listed = run("keys", "list")
    assert key["id"] in listed.stdout and key["key"] not in listed.stdout
    assert run("keys", "revoke", key["id"]).returncode == 0
    assert "revoked" in run("keys", "list").stdout
    audit = run("keys", "audit", "--json")
    assert [e["action"] for e in json.loads(audit.stdout)] == ["key.revoke", "key.create"]
    bad = run("keys", "create", "--name", "x", "--scopes", "root")
    assert bad.returncode == 2 and "unknown scope" in bad.stderr and "hint" in bad.stderr
    assert run("keys", "revoke", "nope").returncode == 2
    exposed = run("serve", "--host", "0.0.0.0", "--no-auth")
    assert exposed.returncode == 2 and "refusing to serve on 0.0.0.0" in exposed.stderr


def test_readyz_waits_for_the_models(tmp_path: Path, docs: Path) -> None:
    import threading
    import time

    loaded = threading.Event()

    class SlowToLoad(ScriptedGenerator):
        def count_tokens(self, text: str) -> int:
            loaded.wait(10)
            return super().count_tokens(text)

    alc, _ = make(tmp_path, docs)
    alc.use_generator("fake", SlowToLoad(REPLY, name="fake"))
    with TestClient(create_app(alc.settings, alc)) as client:
        first = client.get("/readyz")
        assert first.status_code == 503 and first.json()["models"] == "loading"
        assert client.get("/healthz").status_code == 200  # alive all the same
        loaded.set()
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.02)
        assert client.get("/readyz").json() == {"status": "ready", "models": "loaded",
                                                "store": "ok"}
    alc.close()


def test_a_rail_that_blocks_is_a_content_filter_finish_and_counted(tmp_path: Path,
                                                                  docs: Path) -> None:
    alc, client = make(tmp_path, docs, guards={"input": [{"size": {"max_chars": 20}}]})
    with client:
        _, key = alc.keys.create("a", ["ask"], ["kb"])
        r = chat(client, key)
        body = r.json()  # type: ignore[attr-defined]
        assert body["choices"][0]["finish_reason"] == "content_filter"
        assert body["alicerce"]["blocked"] == "input:size"
        assert body["choices"][0]["message"]["content"] == "Não posso ajudar com esse pedido."
        metrics = client.get("/metrics").text
        assert 'alicerce_guard_verdicts_total{action="block",app="kb",rail="size",' \
               'stage="input"} 1.0' in metrics
    alc.close()


def test_the_server_runs_drift_and_continuous_evaluation_on_its_schedule(
        tmp_path: Path, docs: Path) -> None:
    alc, client = make(tmp_path, docs, monitor_interval_s=0.3, monitor_sample=1.0,
                       drift_window="1h")
    for i, q in enumerate(("Wi-Fi?", "Senha?", "Visitantes?", "Rede?", "Código?")):
        alc.traces.record("kb", "k", q, at=time.time() - 86400 * (2 + i))  # last week
    with client:
        _, key = alc.keys.create("a", ["ask"], ["kb"])
        for q in ("Táxi?", "Hotel?", "Férias?", "Comprovantes?", "Prazo?"):
            assert client.post("/v1/apps/kb/ask", headers=bearer(key),
                               json={"question": q}).status_code == 200
        deadline = time.time() + 30
        while not (alc.drift_runs.history("kb") and alc.evals.runs.list(app="kb")):
            assert time.time() < deadline, "the monitor thread never ran"
            time.sleep(0.2)
    assert alc.drift_runs.history("kb")[0].window == "1h"
    assert alc.evals.runs.list(app="kb")[0].kind == "online"
    alc.close()


def wait_job(client: TestClient, key: str, coll: str, jid: str) -> dict[str, object]:
    for _ in range(200):
        state = client.get(f"/v1/collections/{coll}/jobs/{jid}", headers=bearer(key)).json()
        if state["state"] in ("done", "failed"):
            return dict(state)
        time.sleep(0.05)
    raise AssertionError(state)


def test_reupload_replaces_and_bad_names_leave_nothing(
        server: tuple[Alicerce, TestClient]) -> None:
    alc, client = server
    _, key = alc.keys.create("up", ["ingest", "ask"], ["kb3", "..", "-x"])
    _, other = alc.keys.create("up2", ["ingest", "ask"], ["kb3"])
    up = alc.settings.home / "uploads"

    def send(coll: str, name: str, data: bytes = b"# P\n\nTexto.") -> object:
        # multipart by hand: httpx would percent-encode a NUL in the file name
        body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\""
                + name.encode() + b"\"\r\nContent-Type: text/markdown\r\n\r\n" + data
                + b"\r\n--b--\r\n")
        return client.post(f"/v1/collections/{coll}/documents", content=body, headers={
            **bearer(key), "Content-Type": "multipart/form-data; boundary=b"})

    for coll, name, why in [("kb3", "a\x00b.md", "NUL"), ("kb3", "x" * 300 + ".md", "255"),
                            ("kb3", ".env", "hidden"), ("kb3", "virus.exe", "unsupported"),
                            ("%2E%2E", "policy.md", "invalid collection name"),
                            ("-x", "policy.md", "invalid collection name")]:
        r = send(coll, name)
        assert r.status_code == 400 and why in r.json()["error"]["message"], r.text
    assert not up.exists() or not any(up.iterdir())  # nothing left behind
    first = send("kb3", "policy.md", b"# Policy\n\nReceipts within 10 days.").json()
    assert wait_job(client, key, "kb3", first["id"])["state"] == "done"
    again = send("kb3", "policy.md", b"# Policy\n\nReceipts within 45 days.").json()
    state = wait_job(client, key, "kb3", again["id"])
    assert state["report"]["updated"] == 1 and state["report"]["added"] == 0, state
    info = next(c for c in alc.collections() if c.name == "kb3")
    assert info.documents == 1
    hits = alc.search("receipts days", "kb3", mode="sparse")
    assert "45 days" in hits[0].text and all("10 days" not in h.text for h in hits)
    assert not any(up.iterdir())  # files removed when the jobs ended
    # a job is its caller's: another key of the same collection is told it does not exist
    foreign = client.get(f"/v1/collections/kb3/jobs/{again['id']}", headers=bearer(other))
    assert foreign.status_code == 404


def test_newcomer_errors_are_precise(server: tuple[Alicerce, TestClient]) -> None:
    """Issue 16 items 13, 14, 16: what a new user (or a sloppy client) runs into."""
    from alicerce.errors import GeneratorError, StoreError
    from alicerce.server.errors import describe

    alc, client = server
    _, key = alc.keys.create("n", ["ask"])
    h = {**bearer(key), "Content-Type": "application/json"}
    bad_json = client.post("/v1/chat/completions", headers=h, content=b'{"model": "kb",')
    err = bad_json.json()["error"]
    assert bad_json.status_code == 400 and err["param"] is None and "at byte" in err["message"]
    latin1 = client.post("/v1/chat/completions", headers=h,
                         content='{"model": "kb", "messages": "ação"}'.encode("latin-1"))
    err = latin1.json()["error"]
    assert latin1.status_code == 400 and "UTF-8" in err["message"] and err["code"]
    assert client.get("/v1/traces?since_s=-1", headers=bearer(key)).status_code == 400
    ids = {m["id"] for m in client.get("/v1/models", headers=bearer(key)).json()["data"]}
    assert "remote" not in ids  # no remote_embed_url: listed nowhere, refused with why
    remote = client.post("/v1/embeddings", headers=bearer(key),
                         json={"model": "remote", "input": "x"})
    assert remote.status_code == 404 and "remote_embed_url" in remote.json()["error"]["message"]
    for exc, code in ((GeneratorError("x"), "model_error"), (StoreError("x"), "store_error")):
        assert describe(exc)[1]["error"]["code"] == code  # never a Python class name
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower() and '"validatorUrl": null' in docs.text
    assert client.get("/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/favicon.ico").status_code == 200

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536
    big = client.post("/v1/chat/completions", headers=h, content=chunks())  # chunked
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    metrics = client.get("/metrics").text
    assert 'route="/v1/chat/completions",status="413"' in metrics
