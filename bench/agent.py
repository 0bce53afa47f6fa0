"""The shipped HR agent on its task set (examples/agents/rh-tasks.jsonl): task success, mean
steps and seconds per task, and action validity, per model, constrained decoding against
unconstrained (issue 18).

    python bench/agent.py [--models qwen-1.5b,qwen-0.5b] [--modes constrained,free] [--n 12]
                          [--peer smolagents]

A task succeeds when every expected group (a number, a date in any of its written forms, a
keyword) is in the final answer. Action validity: the share of the model's action replies
that parse as JSON and name a declared tool or final_answer. The home is built in a
temporary folder (the sample handbook with the default embedder, so search is what a user
gets); models load once, before the clock starts. With `--peer smolagents`, smolagents'
ToolCallingAgent runs the same tasks with the same model through a live `alicerce serve`
on the same home (OpenAI tool calling) and the same tools (bench/agent_peer.py).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from agent_peer import run_peer
from common import machine

from alicerce import Alicerce, Settings
from alicerce.evaluate.text import task_success
from alicerce.testing.procs import serving

ROOT = Path(__file__).resolve().parents[1]


def variant(model: str, constrained: bool) -> str:
    spec = yaml.safe_load((ROOT / "examples/agents/rh-agent.yaml").read_text("utf-8"))
    spec["name"] = f"rh-{model}-{'c' if constrained else 'f'}".replace(".", "")
    agent = next(s for s in spec["steps"] if s["kind"] == "agent")
    agent.update(model=model, constrained=constrained)
    return yaml.safe_dump(spec, allow_unicode=True)


def run(alc: Alicerce, app: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for t in tasks:
        t0 = time.perf_counter()
        r = alc.run_app(app, t["inputs"])
        secs = time.perf_counter() - t0
        a = r.agents[0]
        ok = task_success(str(r.outputs["answer"]), t["expected"]["answer"]["contains"])
        rows.append({"id": t["id"], "ok": ok, "steps": a["steps"], "s": secs,
                     "actions": a["actions"], "invalid": a["invalid"],
                     "status": a["status"], "answer": r.outputs["answer"][:160]})
        print(f"  {t['id']} ok={ok:.0f} steps={a['steps']} {secs:5.1f}s {a['status']:9} "
              f"{r.outputs['answer'][:100]!r}", flush=True)
    actions = sum(x["actions"] for x in rows)
    return {"success": statistics.mean(x["ok"] for x in rows),
            "steps": statistics.mean(x["steps"] for x in rows),
            "seconds": statistics.mean(x["s"] for x in rows),
            "median_s": statistics.median(x["s"] for x in rows),
            "validity": 1 - sum(x["invalid"] for x in rows) / actions if actions else 0.0,
            "rows": rows}


def peer(alc: Alicerce, home: Path, models: list[str],
         tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """smolagents through a live server on this home, model by model."""
    out: dict[str, Any] = {}
    key = secrets.token_hex(4)
    env = {**os.environ, "ALICERCE_HOME": str(home)}
    with serving(env, home.parent / "server.log", "--no-auth") as (base, _):
        for model in models:
            print(f"{model} smolagents:", flush=True)
            r = run_peer(alc, base, key, model, tasks, task_success)
            rows = r["rows"]
            out[f"{model} smolagents"] = {
                "success": statistics.mean(x["ok"] for x in rows),
                "steps": statistics.mean(x["steps"] for x in rows),
                "seconds": statistics.mean(x["s"] for x in rows),
                "median_s": statistics.median(x["s"] for x in rows), "rows": rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="qwen-1.5b,qwen-0.5b")
    ap.add_argument("--modes", default="constrained,free")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None, help="write per-task rows as JSON")
    ap.add_argument("--peer", choices=["smolagents"], default=None)
    args = ap.parse_args()
    tasks = [json.loads(x) for x in (ROOT / "examples/agents/rh-tasks.jsonl")
             .read_text("utf-8").splitlines() if x.strip()][: args.n]
    print(machine())
    results: dict[str, Any] = {}
    home = Path(tempfile.mkdtemp()) / "h"
    with Alicerce(Settings.load(home=home)) as alc:
        alc.ingest([ROOT / "examples/handbook"], "handbook")
        for model in args.models.split(","):
            alc.generator(model).count_tokens("warm up")
            for mode in args.modes.split(","):
                version, _ = alc.deploy_app(variant(model, mode == "constrained"))
                print(f"{model} {mode}:", flush=True)
                results[f"{model} {mode}"] = run(alc, version.name, tasks)
        if args.peer:
            results.update(peer(alc, home, args.models.split(","), tasks))
    print(f"\n{'agent':28} {'success':>8} {'steps':>6} {'s/task':>7} {'median':>7} "
          f"{'valid':>6}")
    for name, r in results.items():
        print(f"{name:28} {r['success']:8.3f} {r['steps']:6.2f} {r['seconds']:7.1f} "
              f"{r['median_s']:7.1f} {r.get('validity', float('nan')):6.3f}")
    for model in args.models.split(","):
        ours, theirs = results.get(f"{model} constrained"), results.get(f"{model} smolagents")
        if ours and theirs:
            print(f"{model}: success {ours['success']:.3f} vs {theirs['success']:.3f}, "
                  f"time ratio (ours / smolagents) {ours['seconds'] / theirs['seconds']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
