"""Continuous evaluation: live traces sampled by id, scored once, joined with feedback,
stored as online runs per app version; the review queue and its export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli_app
from alicerce.errors import InputError
from alicerce.evaluate.online import sampled
from alicerce.testing.fakes import ScriptedGenerator


@pytest.fixture
def kb(tmp_path: Path, docs: Path) -> Alicerce:
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                               generator="fake", guards={}))
    a.ingest([docs], "kb")
    a.use_generator("fake", ScriptedGenerator(
        lambda m: "The office opens at 7 on Sundays and lunch is free [1]."
        if "sundays" in m[-1].content.lower() else "Send receipts within 30 days [1]."))
    yield a
    a.close()


def test_sampling_is_by_trace_id_and_near_the_share() -> None:
    ids = [f"{i:024x}" for i in range(4000)]
    share = sum(sampled(t, 0.05) for t in ids) / len(ids)
    assert 0.04 < share < 0.06
    assert [sampled(t, 0.05) for t in ids[:50]] == [sampled(t, 0.05) for t in ids[:50]]


def test_live_traces_are_scored_once_joined_with_feedback_and_queued(kb: Alicerce) -> None:
    good = kb.ask("When do I send receipts?", "kb", caller="k1")
    bad = kb.ask("When does the office open on Sundays?", "kb", caller="k1")
    kb.ask("When do I send receipts?", "kb", caller="eval")  # not live traffic
    kb.traces.feedback(good.trace_id, 1, rating=5)
    kb.traces.feedback(bad.trace_id, -1, reference="It is closed on Sundays.")

    runs = kb.monitor("kb", sample=1.0, window="1h")
    assert len(runs) == 1
    run = runs[0]
    assert run.kind == "online" and run.rows == 2 and run.failed == 0
    scores = {r.trace_id: r.scores for r in run.results}
    assert scores[good.trace_id]["triad.groundedness"] > scores[bad.trace_id][
        "triad.groundedness"]
    assert scores[good.trace_id]["feedback.up"] == 1.0
    assert scores[bad.trace_id]["feedback.up"] == 0.0
    assert run.summary["feedback.rating"].mean == 5.0
    assert kb.evals.runs.get(run.id).kind == "online"
    assert kb.monitor("kb", sample=1.0, window="1h") == []  # each trace is scored once

    queue = kb.review_queue("kb")
    assert [t.id for t, _ in queue] == [bad.trace_id]
    assert "rated down" in queue[0][1] or "groundedness" in queue[0][1]
    with pytest.raises(InputError, match="sample"):
        kb.monitor("kb", sample=0.0)


def test_review_export_and_monitor_cli(kb: Alicerce, tmp_path: Path) -> None:
    bad = kb.ask("When does the office open on Sundays?", "kb", caller="k1")
    kb.traces.feedback(bad.trace_id, -1, reference="It is closed on Sundays.")
    kb.traces.flush()
    home = ["--home", str(kb.settings.home)]
    env = {"ALICERCE_EMBEDDER": "hashing", "ALICERCE_GENERATOR": "smollm2-135m"}
    runner = CliRunner()
    r = runner.invoke(cli_app, ["monitor", "run", "--app", "kb", "--sample", "1",
                                "--window", "1h", "--json", *home], env=env)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["runs"][0]["rows"] == 1 and out["review_queue"] == 1
    r = runner.invoke(cli_app, ["monitor", "review", "--app", "kb", *home], env=env)
    assert r.exit_code == 0 and bad.trace_id in r.output
    dest = tmp_path / "review.jsonl"
    r = runner.invoke(cli_app, ["monitor", "review", "--export", str(dest), *home], env=env)
    assert r.exit_code == 0 and "1 row" in r.output
    row = json.loads(dest.read_text(encoding="utf-8"))
    assert row["reference_answer"] == "It is closed on Sundays."
    assert row["origin"]["trace_id"] == bad.trace_id
    assert kb.review_queue("kb") == []  # exported rows leave the queue


def test_with_a_judge_the_triad_is_scored(kb: Alicerce) -> None:
    from test_evaluate import judge_reply

    kb.use_generator("fake", judge_reply(label="PARTLY_RELEVANT"))
    a = kb.ask("When do I send receipts?", "kb", caller="k1")
    (run,) = kb.monitor("kb", sample=1.0, window="1h", judge=True)
    scores = run.results[0].scores
    assert run.results[0].trace_id == a.trace_id and run.judge == "fake"
    assert scores["triad.answer_relevance"] == 0.5 and scores["triad.context_relevance"] == 0.5
    assert 0 < scores["triad.groundedness"] <= 1  # judge (SUPPORTED) mixed with the checks
    assert "triad" in run.metrics
