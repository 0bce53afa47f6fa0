"""The whole loop on SmolLM2-135M, as the issue's "done when" reads: users correct an app's
answers, a round of continuous tuning builds rows from that feedback, trains a LoRA adapter,
measures it against the frozen base on the held-out rows and labels it staging; promoting it
to production passes the same gate; an app answers with it, its version in the trace."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli
from alicerce.tune.config import TuneConfig

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                                 reason="the tune extra: pip install 'alicerce[tune]'")]

APP = """
name: {name}
collections: [kb]
model: smollm2-135m
{adapter}
retrieval: {{k: 2, abstain_below: 0.0, context_tokens: 128}}
decoding: {{max_tokens: 24, temperature: 0.0}}
"""
CORRECTIONS = [("How many days to send receipts?", "São 30 dias corridos [1]."),
               ("How many vacation days per year?", "São 30 dias de férias por ano [1]."),
               ("When is the office open?", "Das 9h às 18h, com almoço [1]."),
               ("What is the guest Wi-Fi code?", "Peça o código na recepção [1].")]


def test_feedback_to_a_production_adapter(docs: Path, tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path / "h", embedder="hashing")
    with Alicerce(settings) as alc:
        alc.ingest([docs], "kb", sync=True)
        alc.deploy_app(APP.format(name="rh", adapter=""))
        for _ in range(3):  # each question asked three times, each answer corrected
            for q, right in CORRECTIONS:
                alc.traces.feedback(alc.ask(q, "rh").trace_id, score=-1, reference=right)
        cfg = TuneConfig(epochs=4, batch_size=4, learning_rate=3e-3, log_every=3,
                         eval_split=0.25, max_seq_len=256, early_stopping_patience=0)
        skipped = alc.tune_schedule("rh-style", app="rh", config=cfg, min_new=20)
        assert skipped.state == "skipped" and "12 new row(s)" in skipped.reason
        done = alc.tune_schedule("rh-style", app="rh", config=cfg, min_new=12)
        assert done.state == "staged", done.reason
        adapter = alc.adapters.get(done.adapter)
        assert adapter.labels == ("staging",) and adapter.base == "smollm2-135m"
        mine, base = (alc.evals.runs.get(i) for i in done.eval_runs)
        assert base.app == "smollm2-135m" and mine.app == "smollm2-135m:rh-style@1"
        assert mine.summary["answer.f1"].mean > base.summary["answer.f1"].mean
        # nothing new since: the next round does nothing
        assert alc.tune_schedule("rh-style", app="rh", config=cfg, min_new=1).state == \
            "skipped"
        moved, gate = alc.promote_adapter("rh-style@1", "production")
        assert gate is not None and gate.passed and "production" in moved.labels
        alc.deploy_app(APP.format(name="rh-tuned", adapter="adapter: rh-style@production"))
        answer = alc.ask(CORRECTIONS[0][0], "rh-tuned")
        trace = alc.traces.get(answer.trace_id)
        assert trace.lineage["adapter"] == "rh-style@1"
        assert trace.lineage["model"] == "smollm2-135m:rh-style@1"
        audit = [e for e in alc.keys.audit_log() if e.action == "adapter.label"]
        assert [e.target for e in audit] == ["rh-style@1", "rh-style@1"]
    # the CLI: the same comparison, printed metric by metric
    out = CliRunner().invoke(cli, ["tune", "eval", "rh-style@1", "--home", str(tmp_path / "h")])
    assert out.exit_code == 0, out.output
    assert "-> smollm2-135m:rh-style@1" in out.output and "answer.f1" in out.output
