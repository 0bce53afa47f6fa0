"""Batch jobs on scripted models: input shapes, per-row errors, resuming from a cut output
file without running or writing a row twice, cancel, and traces tagged as batch work."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alicerce import Alicerce, Settings
from alicerce.batch.runner import BatchRunner, check_paths, recover
from alicerce.errors import InputError
from alicerce.server import create_app
from alicerce.testing.fakes import ScriptedGenerator

SPEC = """\
name: tag
inputs: {text: string, lang: {type: string, required: false, default: pt}}
outputs: {summary: $s.text}
steps:
  - {id: s, kind: generate, model: fake, prompt: summarise, inputs: {text: $inputs.text}}
"""


@pytest.fixture
def alc(tmp_path: Path) -> Iterator[Alicerce]:
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", auth=False))
    a.use_generator("fake", ScriptedGenerator(lambda m: "resumo: " + m[-1].content[-12:],
                                              name="fake"))
    a.deploy_app(SPEC)
    yield a
    a.close()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def rows_file(tmp_path: Path, n: int) -> Path:
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"text": f"avaliação número {i}"}) + "\n"
                         for i in range(n)), encoding="utf-8")
    return f


def start(alc: Alicerce, src: Path, out: Path, concurrency: int = 1) -> BatchRunner:
    check_paths(src, out)
    job = alc.batches.create("local", "tag", 1, src, out, concurrency)
    runner = BatchRunner(alc, alc.batches)
    runner.run(job)
    return runner


def test_every_row_once_with_per_row_errors_in_every_input_shape(
        alc: Alicerce, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        json.dumps({"text": "primeira"}),
        "{not json",
        json.dumps({"text": 5}),
        json.dumps({"custom_id": "req-4", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": "quarta"}]}}),
        json.dumps({"custom_id": "req-5", "inputs": {"text": "quinta", "lang": "en"}}),
        "",
        json.dumps(["a list"]),
    ]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    start(alc, src, out, concurrency=2)
    got = {r["row"]: r for r in lines(out)}
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert got[1]["error"] is None
    assert str(got[1]["outputs"]["summary"]).startswith("resumo: ")
    assert got[2]["error"]["code"] == "invalid_row" and "not JSON" in got[2]["error"]["message"]
    assert got[3]["error"]["code"] == "invalid_input"
    assert got[4]["custom_id"] == "req-4" and got[4]["error"] is None
    assert got[5]["custom_id"] == "req-5" and got[5]["error"] is None
    assert got[6]["error"]["code"] == "invalid_row"
    job = alc.batches.list()[0]
    assert (job.state, job.total, job.succeeded, job.failed) == ("done", 6, 3, 3)
    alc.traces.flush()
    traced = alc.traces.find(app="tag", limit=50)
    assert traced and all(t.origin == f"batch:{job.id}" for t in traced)
    assert alc.drift_runs.traces("tag", 0, 2e9, 100).inputs == []  # not live traffic


def test_a_cut_output_resumes_without_rerunning_or_rewriting_rows(
        alc: Alicerce, tmp_path: Path) -> None:
    src, out = rows_file(tmp_path, 8), tmp_path / "out.jsonl"
    start(alc, src, out)
    full = out.read_bytes().splitlines(keepends=True)
    # what a kill -9 leaves: three whole lines and half of the fourth
    out.write_bytes(b"".join(full[:3]) + full[3][:10])
    job = alc.batches.list()[0]
    gen = alc.generator("fake")
    assert isinstance(gen, ScriptedGenerator)
    before = len(gen.calls)
    BatchRunner(alc, alc.batches).run(alc.batches.get(job.id))
    assert len(gen.calls) - before == 5  # rows 4..8 only
    rows = [r["row"] for r in lines(out)]
    assert sorted(rows) == list(range(1, 9)) and len(rows) == 8
    again = alc.batches.get(job.id)
    assert (again.state, again.succeeded, again.runs) == ("done", 8, 2)


def test_csv_rows_and_recover_on_a_missing_file(alc: Alicerce, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("custom_id,text\na,primeira\nb,segunda\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    start(alc, src, out)
    assert [(r["custom_id"], r["error"]) for r in lines(out)] == [("a", None), ("b", None)]
    assert recover(tmp_path / "missing.jsonl") == {}


def test_paths_and_cancel(alc: Alicerce, tmp_path: Path) -> None:
    src = rows_file(tmp_path, 2)
    for bad, message in ((tmp_path / "x.txt", "must be .jsonl or .csv"),
                         (tmp_path / "none.jsonl", "no input file")):
        with pytest.raises(InputError, match=message):
            check_paths(bad, tmp_path / "o.jsonl")
    with pytest.raises(InputError, match="overwrite the input"):
        check_paths(src, src)
    job = alc.batches.create("local", "tag", 1, src, tmp_path / "o.jsonl", 1)
    assert alc.batches.cancel(job.id).state == "cancelled"  # no process runs it: now
    with pytest.raises(InputError, match="no batch job"):
        alc.batches.get(job.id, caller="someone-else")


def _wait_for(client: Any, job: str, headers: dict[str, str], states: set[str]) -> Any:
    for _ in range(400):
        got = client.get(f"/v1/batches/{job}", headers=headers).json()
        if got["status"] in states:
            return got
        time.sleep(0.05)
    raise AssertionError(f"job {job} stayed {got['status']}")


def test_http_batch_rows_spend_their_keys_tokens(alc: Alicerce) -> None:
    """A batch cannot get round a key's tokens per minute: its rows are charged to the key
    (a live request after it is refused) and wait while the key is over its limit."""
    guarded = Alicerce(alc.settings.model_copy(update={"auth": True}))
    guarded.use_generator("fake", alc.generator("fake"))
    _, secret = guarded.keys.create("ana", ["ask"], tpm=20)
    ana = {"Authorization": f"Bearer {secret}"}
    with guarded, TestClient(create_app(guarded.settings, guarded)) as client:
        made = client.post("/v1/batches", headers=ana, json={
            "app": "tag", "rows": [{"inputs": {"text": "um texto longo " * 20}}]})
        assert made.status_code == 202, made.text
        _wait_for(client, made.json()["id"], ana, {"done"})
        live = client.post("/v1/apps/tag/run", headers=ana, json={"inputs": {"text": "oi"}})
        assert live.status_code == 429, live.text  # the batch row used the key's tokens
        assert "tokens per minute" in live.json()["error"]["message"]


def test_a_revoked_keys_batch_is_cancelled_at_its_next_row(alc: Alicerce) -> None:
    gate = threading.Event()

    def slow(messages: Any) -> str:
        gate.wait(10)
        return "resumo"
    guarded = Alicerce(alc.settings.model_copy(update={"auth": True}))
    guarded.use_generator("fake", ScriptedGenerator(slow, name="fake"))
    key, secret = guarded.keys.create("bob", ["ask"])
    bob = {"Authorization": f"Bearer {secret}"}
    rows = [{"inputs": {"text": f"linha {i}"}} for i in range(4)]
    with guarded, TestClient(create_app(guarded.settings, guarded)) as client:
        job = client.post("/v1/batches", headers=bob, json={"app": "tag", "rows": rows,
                                                             "concurrency": 1}).json()["id"]
        guarded.keys.revoke(key.id, "admin")
        gate.set()
        got = guarded.batches.get(job)
        for _ in range(400):
            got = guarded.batches.get(job)
            if got.state in ("cancelled", "done", "failed"):
                break
            time.sleep(0.05)
        assert got.state == "cancelled" and got.succeeded <= 1
        out = [json.loads(x) for x in Path(got.output).read_text().splitlines()]
        assert any("revoked" in (r["error"] or {}).get("message", "") for r in out)


def test_a_server_stopping_under_a_batch_lets_its_row_finish_and_leaves_the_rest(
        alc: Alicerce) -> None:
    """Closing the home under a running row crashed the process (SQLite closed under it):
    the server's shutdown now starts no new row and waits for the one in flight."""
    started, gate = threading.Event(), threading.Event()

    def slow(messages: Any) -> str:
        started.set()
        gate.wait(10)
        return "resumo"
    alc.use_generator("fake", ScriptedGenerator(slow, name="fake"))
    rows = [{"inputs": {"text": f"linha {i}"}} for i in range(3)]
    with TestClient(create_app(alc.settings, alc)) as client:
        job = client.post("/v1/batches", json={"app": "tag", "rows": rows,
                                               "concurrency": 1}).json()["id"]
        assert started.wait(10)
        threading.Timer(0.5, gate.set).start()  # the row ends while the server stops
    assert not [t for t in threading.enumerate() if t.name == f"alicerce-{job}"]
    got = alc.batches.get(job)
    assert got.state == "running"  # left to resume on the next start
    done = Path(got.output).read_text().splitlines() if Path(got.output).exists() else []
    assert len(done) == 1 and json.loads(done[0])["error"] is None
