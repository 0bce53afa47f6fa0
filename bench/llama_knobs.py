"""llama.cpp's own knobs on this CPU: prompt processing (prefill) and decode speed of one
GGUF file under each configuration, and what speculative decoding by prompt lookup gives a
grounded answer.

    python bench/llama_knobs.py [--model qwen-1.5b] [--prompt-tokens 600] [--reps 2]
                                [--configs default,fa-on,...]

Each configuration loads the model in a fresh process (xllamacpp.Server directly, not
Alicerce's generator) and sends a RAG-shaped prompt of about `--prompt-tokens` tokens (the
handbook's text with a nonce first, so nothing is reused from the prompt cache), temperature
0, 96 tokens to generate. Prefill and decode tokens/s are llama.cpp's own timings, median
over `--reps`. "spec-ngram" adds llama.cpp's n-gram speculative decoding (drafts copied from
the prompt, no draft model): RAG answers repeat their sources' words.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import machine

ROOT = Path(__file__).resolve().parent.parent
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},  # what Alicerce sets today (n_batch 2048, n_ubatch 512, flash auto)
    "fa-on": {"flash_attn_type": 1},
    "fa-off": {"flash_attn_type": 0},
    "ubatch-128": {"n_ubatch": 128},
    "ubatch-256": {"n_ubatch": 256},
    "ubatch-1024": {"n_ubatch": 1024, "n_batch": 2048},
    "kv-q8": {"flash_attn_type": 1, "cache_type_k": "GGML_TYPE_Q8_0",
              "cache_type_v": "GGML_TYPE_Q8_0"},
    "no-repack": {"no_extra_bufts": True},
    "threads-1": {"threads": 1},
    "no-mmap": {"load_mode": "LLAMA_LOAD_MODE_NONE"},
    "spec-ngram": {"spec": "COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE"},
    "spec-ngram-mapk": {"spec": "COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K"},
}


def handbook_text() -> str:
    parts = []
    for p in sorted((ROOT / "examples/handbook").iterdir()):
        if p.suffix in (".md", ".txt"):
            parts.append(p.read_text(encoding="utf-8"))
    return "\n\n".join(parts)


def child(model: str, config: str, prompt_tokens: int, reps: int) -> None:
    """Runs in its own process: load with `config`, time `reps` requests, print JSON."""
    import xllamacpp as xlc

    from alicerce import Settings
    from alicerce.generate.models import model_path, resolve

    knobs = dict(CONFIGS[config])
    path = model_path(resolve(model, Settings()), Settings())
    p = xlc.CommonParams()
    p.model.path = str(path)
    p.n_ctx, p.n_parallel, p.kv_unified, p.verbosity, p.warmup = 4096, 4, True, -1, False
    threads = knobs.pop("threads", os.cpu_count() or 1)
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    spec = knobs.pop("spec", None)
    if spec:
        p.speculative.types = [getattr(xlc.common_speculative_type, spec)]
    for key, value in knobs.items():
        if isinstance(value, str) and value.startswith("GGML_TYPE"):
            value = getattr(xlc.ggml_type, value)
        elif isinstance(value, str) and value.startswith("LLAMA_LOAD"):
            value = getattr(xlc.llama_load_mode, value)
        setattr(p, key, value)
    t0 = time.perf_counter()
    server = xlc.Server(p)
    load_s = time.perf_counter() - t0
    text = handbook_text()
    words = text.split()
    rows = []
    for rep in range(reps + 1):  # the first request warms up and is not counted
        n_words = int(prompt_tokens * 0.55)
        start = (rep * 97) % max(1, len(words) - n_words)
        sources = " ".join(words[start:start + n_words])
        body = {"messages": [
            {"role": "system", "content": "Você responde usando apenas as fontes numeradas."},
            {"role": "user", "content": f"[{time.time_ns()}]\nFontes:\n[1] {sources}\n\n"
                                        "Pergunta: Quais são as regras de reembolso e de "
                                        "senha? Responda citando as fontes."}],
            "max_tokens": 96, "temperature": 0.0, "top_k": 1, "cache_prompt": False}
        t1 = time.perf_counter()
        data = server.handle_chat_completions(body)
        wall = time.perf_counter() - t1
        t = data.get("timings") or {}
        if rep:
            rows.append({"prompt_n": t.get("prompt_n"), "prefill": t.get("prompt_per_second"),
                         "decode": t.get("predicted_per_second"), "wall_s": wall,
                         "predicted_n": t.get("predicted_n"),
                         "draft_n": t.get("draft_n"), "accepted": t.get("draft_n_accepted")})
    print(json.dumps({"config": config, "load_s": load_s, "rows": rows}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen-1.5b")
    ap.add_argument("--prompt-tokens", type=int, default=600)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--child", default="")
    a = ap.parse_args()
    if a.child:
        child(a.model, a.child, a.prompt_tokens, a.reps)
        return
    print(machine())
    print(f"model {a.model}, ~{a.prompt_tokens}-token prompt, 96 tokens, median of {a.reps}")
    print(f"{'config':<16} {'load s':>7} {'prompt n':>8} {'prefill t/s':>11} {'decode t/s':>10} "
          f"{'wall s':>7} {'drafts acc.':>11}")
    base = None
    for name in a.configs.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--model", a.model,
                              "--prompt-tokens", str(a.prompt_tokens), "--reps", str(a.reps)],
                             capture_output=True, text=True, check=False)
        line = next((x for x in out.stdout.splitlines() if x.startswith("{")), "")
        if not line:
            print(f"{name:<16} failed: {out.stderr.strip()[-300:]}")
            continue
        r = json.loads(line)
        med = {k: statistics.median(float(x[k] or 0) for x in r["rows"])
               for k in ("prompt_n", "prefill", "decode", "wall_s", "draft_n", "accepted")}
        base = base or med
        drafts = f"{med['accepted']:.0f}/{med['draft_n']:.0f}" if med["draft_n"] else ""
        print(f"{name:<16} {r['load_s']:>7.1f} {med['prompt_n']:>8.0f} {med['prefill']:>11.1f} "
              f"{med['decode']:>10.2f} {med['wall_s']:>7.1f} {drafts:>11}   "
              f"(prefill x{med['prefill'] / base['prefill']:.2f}, "
              f"decode x{med['decode'] / base['decode']:.2f})", flush=True)


if __name__ == "__main__":
    main()
