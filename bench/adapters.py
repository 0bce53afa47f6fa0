"""Many LoRA adapters on one llama.cpp base (issue 21): memory, throughput, switching, hot swap.

    python bench/adapters.py [--model qwen-0.5b] [--parts memory,throughput,switch,swap]

The adapters are random LoRAs (rank 16 on q/k/v/o, the usual shape), made once with PEFT and
converted like trained ones; their values do not change their cost.

- memory: peak RSS of a process serving the base with N = 0, 1, 4, 8 adapters attached (one
  short request per adapter, so every adapter's tensors are touched), each in its own
  process. The alternative, N merged models, is N copies of a base-sized model: N x the
  N=0 process (a merged model is exactly its base's size). Target: each extra adapter costs
  at most 5% of the base's memory.
- throughput: 4 clients at once (llm_parallel 4), 3 requests each, 48 tokens greedy: all on
  the base, then each on its own adapter, then all on one adapter. Target: adapters >= 0.8x
  the base. `--backend transformers` measures it on the transformers backend (the same GGUF
  dequantised), where requests for different adapters share a batch; only this part runs
  there.
- switch: time to first token of a request for the same adapter as the one before, and of
  one that switches adapter (same prompt, streamed), with the prompt tokens llama.cpp reused.
- swap: 2 clients stream without pause while an adapter is registered 3 times by another
  home object (as the CLI would); the time from registering to the swap being done and to
  the first answer with it (new requests wait for the old instance's to finish), requests
  lost (target 0), and the clients' time to first token meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine

from alicerce import Alicerce, Settings
from alicerce.generate.models import BUNDLED, model_identity
from alicerce.generate.params import DecodingParams
from alicerce.testing.lora import random_loras
from alicerce.tune.registry import Lineage
from alicerce.types import Message

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
PROMPT = [Message("user", "Escreva um parágrafo sobre o mar e os navegadores portugueses.")]


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process."""
    status = Path("/proc/self/status").read_text()
    field = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
             if line.startswith(("VmRSS", "VmHWM"))}
    return int(field["VmRSS"]) / 1024, int(field["VmHWM"]) / 1024


def open_home(home: Path, model: str, **overrides: object) -> Alicerce:
    return Alicerce(Settings.load(home=home, embedder="hashing", guards={}, generator=model,
                                  **overrides))


def register(alc: Alicerce, name: str, folder: Path, model: str) -> str:
    lineage = Lineage(model, model_identity(model, alc.settings), "lora", "bench", "", {}, {})
    return alc.adapters.register(name, folder, lineage).ref


def child_memory(home: Path, model: str, n: int) -> None:
    """In its own process: the base with `n` adapters, one request on each (and the base)."""
    alc = open_home(home, model, llm_parallel=4)
    refs = [a.ref for a in alc.adapters.list()]
    assert len(refs) == n
    params = DecodingParams.build(max_tokens=4, temperature=0.0)
    for ref in [None, *refs]:
        alc.generator(model, ref).complete(PROMPT, params)
    now, peak = rss_mb()
    print(json.dumps({"n": n, "rss_mb": now, "peak_mb": peak}))


def memory(home: Path, model: str, folders: list[Path]) -> dict[int, float]:
    out = {}
    for n in (0, 1, 4, 8):
        with tempfile.TemporaryDirectory() as tmp:
            h = Path(tmp) / "home"
            alc = open_home(h, model)
            for i, f in enumerate(folders[:n]):
                register(alc, f"m{i}", f, model)
            alc.close()
            done = subprocess.run([sys.executable, __file__, "--child-memory", str(n),
                                   "--home", str(h), "--model", model],
                                  capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
        out[n] = row["rss_mb"]
        print(f"  N={n}: RSS {row['rss_mb']:.0f} MB (peak {row['peak_mb']:.0f} MB)", flush=True)
    base = out[0]
    per = (out[8] - out[1]) / 7
    print(f"memory: base alone {base:.0f} MB; each extra adapter {per:.1f} MB = "
          f"{100 * per / base:.2f}% of the base (target <= 5%)")
    for n in (1, 4, 8):
        print(f"  N={n}: one base + {n} adapters {out[n]:.0f} MB vs {n} merged models "
              f"{n * base:.0f} MB -> {out[n] / (n * base):.2f}x")
    return out


def throughput(alc: Alicerce, model: str, refs: list[str]) -> float:
    params = DecodingParams.build(max_tokens=48, temperature=0.0)

    def client(ref: str | None) -> int:
        got = 0
        for _ in range(3):
            got += alc.generator(model, ref).complete(PROMPT, params).usage.completion_tokens
        return got

    rates = {}
    for label, who in (("base", [None] * 4), ("adapters", refs[:4]),
                       ("one adapter", [refs[0]] * 4)):
        client(who[0])  # warm
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            tokens = sum(pool.map(client, who))
        rates[label] = tokens / (time.perf_counter() - started)
        print(f"  4 clients on {label}: {rates[label]:.1f} tokens/s", flush=True)
    ratio = rates["adapters"] / rates["base"]
    print(f"throughput: adapters {rates['adapters']:.1f} vs base {rates['base']:.1f} tokens/s "
          f"-> {ratio:.2f}x (target >= 0.8x); all 4 on one adapter "
          f"{rates['one adapter'] / rates['base']:.2f}x")
    return ratio


def ttft(alc: Alicerce, model: str, ref: str | None) -> tuple[float, int]:
    params = DecodingParams.build(max_tokens=2, temperature=0.0)
    started, first, cached = time.perf_counter(), 0.0, 0
    for delta in alc.generator(model, ref).stream(PROMPT, params):
        if delta.text and not first:
            first = time.perf_counter() - started
        if delta.usage is not None:
            cached = delta.usage.cached_tokens
    return first * 1000, cached


def switch(alc: Alicerce, model: str, refs: list[str]) -> None:
    same, other = [], []
    for i in range(4):
        ttft(alc, model, refs[0])
        same.append(ttft(alc, model, refs[0]))
        other.append(ttft(alc, model, refs[1 + i % 3]))
    for label, rows in (("same adapter", same), ("switching adapter", other)):
        print(f"switch: TTFT {label}: median {statistics.median(r[0] for r in rows):.0f} ms "
              f"(prompt tokens reused: {[r[1] for r in rows]})")


def swap(alc: Alicerce, model: str, refs: list[str], extra: list[Path]) -> None:
    stop, lost, done = threading.Event(), [], [0]
    params = DecodingParams.build(max_tokens=24, temperature=0.0)

    waits: list[float] = []

    def client(ref: str | None) -> None:
        while not stop.is_set():
            try:
                started, pieces = time.perf_counter(), []
                for piece in alc.generator(model, ref).stream(PROMPT, params):
                    if not pieces:
                        waits.append(time.perf_counter() - started)
                    pieces.append(piece)
                if not any(p.finish_reason for p in pieces) or not any(p.text for p in pieces):
                    lost.append("stream ended without text or a finish reason")
                done[0] += 1
            except Exception as exc:  # counted: a lost request is what this measures
                lost.append(repr(exc))

    workers = [threading.Thread(target=client, args=(r,)) for r in (None, refs[0])]
    for w in workers:
        w.start()
    times = []
    for i, folder in enumerate(extra):
        time.sleep(2)
        with Alicerce(alc.settings) as cli:
            started = time.perf_counter()
            ref = register(cli, f"new{i}", folder, model)
        alc.refresh_adapters()  # what the server's adapter_poll_s thread calls
        swapped = time.perf_counter() - started
        alc.generator(model, ref).complete(PROMPT, DecodingParams.build(max_tokens=1))
        served = time.perf_counter() - started
        times.append((swapped, served))
        print(f"  swap {i + 1}: loaded in {swapped:.2f} s, first answer at {served:.2f} s "
              f"after registering", flush=True)
    time.sleep(2)
    stop.set()
    for w in workers:
        w.join()
    print(f"swap: median {statistics.median(t[0] for t in times):.2f} s to swap, "
          f"{statistics.median(t[1] for t in times):.2f} s to the first answer; "
          f"{done[0]} requests during the swaps, {len(lost)} lost (target 0) {lost[:3]}; "
          f"their time to first token: median {statistics.median(waits):.2f} s, "
          f"longest {max(waits):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen-0.5b", choices=sorted(BUNDLED))
    ap.add_argument("--parts", default="memory,throughput,switch,swap")
    ap.add_argument("--backend", default="llama.cpp", choices=["llama.cpp", "transformers"])
    ap.add_argument("--child-memory", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory >= 0:
        child_memory(args.home, args.model, args.child_memory)
        return
    parts = args.parts.split(",")
    served, extra = args.model, {}
    if args.backend == "transformers":
        if parts != ["throughput"]:
            ap.error("--backend transformers runs only --parts throughput")
        served = f"{args.model}-hf"
        extra = {"models": {served: {"path": args.model, "backend": "transformers"}}}
    print(f"# bench/adapters.py --model {args.model} --backend {args.backend}: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = [root / f"lora{i}" for i in range(11)]
        made = time.perf_counter()
        random_loras(Settings.load(home=root / "h0"), folders, TARGETS, args.model, rank=16)
        size = sum(p.stat().st_size for p in folders[0].glob("adapter.gguf")) / 2**20
        print(f"made {len(folders)} random rank-16 LoRAs in {time.perf_counter() - made:.0f} s "
              f"({size:.1f} MB each as GGUF)", flush=True)
        if "memory" in parts:
            memory(root, args.model, folders)
        alc = open_home(root / "home", served, llm_parallel=4, **extra)
        refs = [register(alc, f"a{i}", f, args.model) for i, f in enumerate(folders[:4])]
        if "throughput" in parts:
            throughput(alc, served, refs)
        if "switch" in parts:
            switch(alc, args.model, refs)
        if "swap" in parts:
            swap(alc, args.model, refs, folders[8:11])
        alc.close()


if __name__ == "__main__":
    main()
