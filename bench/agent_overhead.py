"""The agent loop's overhead per step against the model calls alone (issue 18; target
<= 5 ms per step).

    python bench/agent_overhead.py [--steps 5] [--runs 100]

An agent answers after N calculator calls on an instant scripted model, so what is timed is
the platform: rendering the ReAct prompt, the action schema's decoding parameters, parsing
and checking each action, the tool call through the pool with its timeout, observations
with their rails, spans, citations. "model alone" makes the same N+2 model calls (the
decision, N actions, the answer) on the same messages by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from common import machine

from alicerce import Alicerce, Settings
from alicerce.generate.params import DecodingParams
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message

TARGET_MS = 5.0


def script(steps: int) -> list[str]:
    acts = [json.dumps({"thought": "conta", "tool": "calculator",
                        "args": {"expression": f"{i} * 120"}}) for i in range(steps)]
    return ['{"use_tools": true}', *acts,
            json.dumps({"thought": "pronto", "tool": "final_answer",
                        "args": {"answer": "São R$ 480,00."}})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    replies = script(args.steps)
    state = {"i": 0}

    def reply(_: Sequence[Message]) -> str:
        out = replies[state["i"] % len(replies)]
        state["i"] += 1
        return out
    gen = ScriptedGenerator(reply, name="fake")
    with Alicerce(Settings.load(home=Path(tempfile.mkdtemp()) / "h", embedder="hashing",
                                generator="fake", guards={})) as alc:
        alc.use_generator("fake", gen)
        alc.deploy_app(yaml.safe_dump({
            "name": "ov", "inputs": {"question": "string"}, "outputs": {"a": "$agent.text"},
            "steps": [{"id": "agent", "kind": "agent", "model": "fake",
                       "inputs": {"question": "$inputs.question"},
                       "tools": ["calculator", "dates"], "max_steps": args.steps + 1}]}))
        question = {"question": "Quanto recebo por 4 dias de viagem?"}
        for _ in range(5):
            alc.run_app("ov", question)
        calls = [list(c) for c in gen.calls[-(args.steps + 2):]]
        params = DecodingParams(max_tokens=256, temperature=0.0)
        t0 = time.perf_counter()
        for _ in range(args.runs):
            for messages in calls:
                gen.complete(messages, params)
        alone = (time.perf_counter() - t0) / args.runs * 1000
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            alc.run_app("ov", question)
            times.append((time.perf_counter() - t) * 1000)
        loop = statistics.median(times)
    per_step = (loop - alone) / (args.steps + 2)
    print(machine())
    print(f"{args.steps} tool steps + decision + answer, {args.runs} runs")
    print(f"model calls alone  {alone:8.2f} ms/run")
    print(f"agent (run_app)    {loop:8.2f} ms/run (median)")
    print(f"overhead           {per_step:8.2f} ms/step   target <= {TARGET_MS} ms "
          f"(ratio {per_step / TARGET_MS:.2f})")


if __name__ == "__main__":
    main()
