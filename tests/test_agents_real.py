"""The shipped HR agent on the real bundled model (qwen-1.5b) over the sample handbook:
every action the constrained decoding produced is a valid call of a declared tool, the
calculator is really called, the trace holds each thought, call and observation, and the
CLI runs it. Correctness over the whole task set is measured by bench/agent.py, not
asserted here (a small model's answers vary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_agent_calls_real_tools_with_valid_actions(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with Alicerce(Settings.load(home=home, embedder="hashing")) as alc:
        alc.ingest([ROOT / "examples/handbook"], "handbook")
        alc.deploy_app(ROOT / "examples/agents/rh-agent.yaml")
    res = CliRunner().invoke(cli, [
        "apps", "run", "rh-agent", "--home", str(home), "--input",
        json.dumps({"question": "Quanto é 15% de 240?"}, ensure_ascii=False)])
    assert res.exit_code == 0, res.output
    with Alicerce(Settings.load(home=home, embedder="hashing")) as alc:
        r = alc.run_app("rh-agent", {"question": "Viajei 4 dias a serviço; quanto posso "
                                                 "receber de alimentação?"})
        agent = r.agents[0]
        assert agent["invalid"] == 0 and agent["actions"] >= 1  # constrained: all valid
        tools = [s["tool"] for s in r.outputs["steps"]]
        assert set(tools) <= {"search", "calculator", "dates"}
        assert r.outputs["status"] in ("answered", "loop", "max_steps")
        alc.traces.flush()
        spans = alc.traces.get(r.trace_id).spans
        thoughts = [s["attrs"] for s in spans if s["name"] == "agent.think"]
        assert thoughts and all(t["valid"] and t["tool"] for t in thoughts)
        acts = [s["attrs"] for s in spans if s["name"] == "agent.act"]
        assert [a["tool"] for a in acts] == tools
        assert all(a["observation"] for a in acts)
        runs = [t for t in alc.traces.find(app="rh-agent", limit=5)]
        first = alc.traces.get(runs[-1].id)  # the CLI's: 15% of 240
        calc = [s["attrs"] for s in first.spans
                if s["name"] == "agent.act" and s["attrs"]["tool"] == "calculator"]
        assert calc and calc[0]["observation"] == "36"
        assert "36" in json.loads(first.answer or "{}").get("answer", "")
