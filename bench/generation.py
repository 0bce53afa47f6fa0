"""Generation speed: Alicerce's runtime overhead over raw xllamacpp, and prefix (KV) reuse.

    python bench/generation.py overhead [--model qwen-0.5b] [--rounds 5] [--tokens 128]
    python bench/generation.py prefix [--model qwen-0.5b] [--questions 6]
    python bench/generation.py speed [--models qwen-1.5b,qwen-0.5b,smollm2-135m]

`overhead` streams the same chat request (model, prompt, parameters, threads) through
`Generator.stream` and through `xllamacpp.Server.handle_chat_completions` directly, rounds
alternating, each round with a prompt new to both servers. Targets: decode tokens/s ratio
>= 0.95, time to first token (TTFT) <= 20 ms added.
`prefix` asks several questions behind one long shared system prompt (a RAG prompt with its
sources) and compares TTFT with a control whose prefix differs every time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from common import machine

from alicerce import Settings
from alicerce.generate import DecodingParams, get_generator
from alicerce.generate.models import model_path, resolve
from alicerce.types import Message

TOPICS = ["o mar", "as florestas", "a cidade", "os rios", "a montanha", "o deserto",
          "a chuva", "as estrelas", "o inverno", "a primavera"]


def direct_server(path: str, threads: int) -> Any:
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = path
    p.n_ctx, p.n_parallel, p.kv_unified, p.verbosity, p.warmup = 4096, 4, True, -1, False
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    return xlc.Server(p)


def direct(server: Any, prompt: str, tokens: int) -> tuple[float, float]:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0,
            "n": 1, "stream": True, "stream_options": {"include_usage": True},
            "cache_prompt": True}
    marks: list[float] = []
    n = [0]

    def on_chunk(chunk: dict[str, Any]) -> bool:
        choices = chunk.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            marks.append(time.perf_counter())
        if chunk.get("usage"):
            n[0] = chunk["usage"]["completion_tokens"]
        return False

    t0 = time.perf_counter()
    server.handle_chat_completions(body, on_chunk)
    return marks[0] - t0, (n[0] - 1) / (marks[-1] - marks[0])


def ours(gen: Any, prompt: str, tokens: int) -> tuple[float, float]:
    params = DecodingParams(max_tokens=tokens, temperature=0.0)
    marks: list[float] = []
    n = 0
    t0 = time.perf_counter()
    for delta in gen.stream([Message("user", prompt)], params):
        if delta.text:
            marks.append(time.perf_counter())
        if delta.usage:
            n = delta.usage.completion_tokens
    return marks[0] - t0, (n - 1) / (marks[-1] - marks[0])


def overhead(args: argparse.Namespace) -> None:
    threads = os.cpu_count() or 1
    settings = Settings.load(llm_threads=threads, llm_context=4096, llm_parallel=4)
    path = model_path(resolve(args.model, settings), settings)
    gen = get_generator(args.model, settings)
    server = direct_server(str(path), threads)
    print(f"machine: {machine()}; model {args.model}; {args.tokens} tokens, temperature 0, "
          f"{threads} threads, {args.rounds} rounds")
    ttft: dict[str, list[float]] = {"direct": [], "alicerce": []}
    tps: dict[str, list[float]] = {"direct": [], "alicerce": []}
    for r in range(args.rounds):
        prompt = f"Escreva um texto longo sobre {TOPICS[r % len(TOPICS)]} (versão {r})."
        order = [("direct", lambda p: direct(server, p, args.tokens)),
                 ("alicerce", lambda p: ours(gen, p, args.tokens))]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            first, speed = fn(prompt)
            ttft[name].append(first * 1000)
            tps[name].append(speed)
    d_tps, a_tps = statistics.median(tps["direct"]), statistics.median(tps["alicerce"])
    d_ttft, a_ttft = statistics.median(ttft["direct"]), statistics.median(ttft["alicerce"])
    print(f"decode tok/s  direct {d_tps:.2f}  alicerce {a_tps:.2f}  ratio {a_tps / d_tps:.3f} "
          "(target >= 0.95)")
    print(f"TTFT ms       direct {d_ttft:.1f}  alicerce {a_ttft:.1f}  added "
          f"{a_ttft - d_ttft:+.1f} ms (target <= 20)")


def prefix(args: argparse.Namespace) -> None:
    settings = Settings.load(llm_context=4096)
    gen = get_generator(args.model, settings)
    passage = ("O reembolso de despesas de viagem exige comprovantes originais enviados em até "
               "30 dias corridos após a data da despesa, pelo sistema de RH. ") * 40
    system = f"Responda usando apenas as fontes.\n\nFontes:\n[1] Reembolso\n{passage}"
    questions = [f"Pergunta {i}: qual o prazo para {TOPICS[i % len(TOPICS)]}?"
                 for i in range(args.questions)]
    params = DecodingParams(max_tokens=8, temperature=0.0)

    def first_token(messages: list[Message]) -> float:
        t0 = time.perf_counter()
        for delta in gen.stream(messages, params):
            if delta.text:
                return (time.perf_counter() - t0) * 1000
        return (time.perf_counter() - t0) * 1000

    tokens = gen.count_tokens(system)
    print(f"machine: {machine()}; model {args.model}; shared system prompt {tokens} tokens")
    shared = [first_token([Message("system", system), Message("user", q)]) for q in questions]
    control = [first_token([Message("system", f"Sessão {i}. {system}"), Message("user", q)])
               for i, q in enumerate(questions)]
    print(f"TTFT ms, same system prompt: first {shared[0]:.0f}, then median "
          f"{statistics.median(shared[1:]):.0f}")
    print(f"TTFT ms, a different prefix each time (no reuse): median "
          f"{statistics.median(control):.0f}")
    gain = statistics.median(control) / statistics.median(shared[1:])
    print(f"speed-up from prefix reuse: {gain:.1f}x")


def speed(args: argparse.Namespace) -> None:
    """Decode and prompt speed of each model: the figure `alicerce models` shows."""
    settings = Settings.load(llm_context=4096)
    print(f"machine: {machine()}; {args.tokens} tokens at temperature 0, 3 rounds")
    for name in args.models.split(","):
        gen = get_generator(name, settings)
        decode, prompt = [], []
        for r in range(3):
            text = f"Escreva um texto longo sobre {TOPICS[r]} (rodada {r}). " + "Contexto. " * 150
            done = gen.complete([Message("user", text)],
                                DecodingParams(max_tokens=args.tokens, temperature=0.0))
            decode.append(done.timings["decode_tok_s"])
            prompt.append(done.timings["prompt_tok_s"])
        print(f"{name:<14} decode {statistics.median(decode):6.1f} tok/s   prompt "
              f"{statistics.median(prompt):6.1f} tok/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["overhead", "prefix", "speed"])
    ap.add_argument("--models", default="qwen-1.5b,qwen-0.5b,smollm2-135m")
    ap.add_argument("--model", default="qwen-0.5b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--questions", type=int, default=6)
    args = ap.parse_args()
    {"overhead": overhead, "prefix": prefix, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
