"""The chain runner's overhead per step against calling the model directly (issue 17).

    python bench/chain_overhead.py [--steps 8] [--runs 300]

A chain of N generate steps, each feeding the next, runs on an instant scripted model, so
what is timed is the platform: reference resolution, prompt rendering, decoding
parameters, spans. "direct" renders the same prompts and calls the same model by hand;
"runner" is `ChainRunner.run` on the compiled plan; "run_app" adds the app lookup, input
checks, lineage and queueing the trace. Printed: ms per run and per step for each, and the
per-step overhead against the 2 ms target.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import machine

from alicerce import Alicerce, Settings
from alicerce.generate.params import DecodingParams
from alicerce.observe.spans import Recorder
from alicerce.testing.fakes import ScriptedGenerator

TARGET_MS = 2.0


def spec(steps: int) -> str:
    lines = ["name: overhead", "inputs: {text: string}", f"outputs: {{out: $s{steps - 1}.text}}",
             "steps:"]
    for i in range(steps):
        src = "$inputs.text" if i == 0 else f"$s{i - 1}.text"
        lines.append(f"  - {{id: s{i}, kind: generate, model: fake, prompt: summarise, "
                     f"inputs: {{text: {src}}}, decoding: {{temperature: 0, max_tokens: 64}}}}")
    return "\n".join(lines) + "\n"


def timed(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp()) / "h"
    with Alicerce(Settings.load(home=home, embedder="hashing")) as alc:
        gen = ScriptedGenerator("Um resumo curto do texto, em uma frase.", name="fake")
        alc.use_generator("fake", gen)
        version, _ = alc.deploy_app(spec(args.steps))
        plan = alc.chains.plan(version)
        template = alc.prompts.get("summarise@1")
        params = DecodingParams(max_tokens=64, temperature=0.0)
        text = "Uma avaliação de produto com algumas frases. " * 10

        def direct() -> None:
            t = text
            for _ in range(args.steps):
                t = gen.complete(template.render(text=t), params).text

        def runner() -> None:
            alc.chains.runner.run(plan, {"text": text}, Recorder(), version.hash)

        def run_app() -> None:
            alc.run_app("overhead", {"text": text})

        for fn in (direct, runner, run_app):  # warm up
            timed(fn, 10)
        results = {name: timed(fn, args.runs) for name, fn in
                   (("direct", direct), ("runner", runner), ("run_app", run_app))}
        alc.traces.flush()
    print(machine())
    print(f"{args.steps} generate steps, {args.runs} runs each, median ms per run")
    base = results["direct"]
    for name, ms in results.items():
        over = (ms - base) / args.steps
        extra = "" if name == "direct" else (
            f"  overhead {over:.3f} ms/step  ({over / TARGET_MS:.2f} of the {TARGET_MS} ms "
            "target)")
        print(f"  {name:<8} {ms:8.3f} ms/run  {ms / args.steps:7.3f} ms/step{extra}")


if __name__ == "__main__":
    main()
