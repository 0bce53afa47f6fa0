"""Batch jobs on scripted models: input shapes, per-row errors, resuming from a cut output
file without running or writing a row twice, cancel, and traces tagged as batch work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings
from alicerce.batch.runner import BatchRunner, check_paths, recover
from alicerce.errors import InputError
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
