"""The transformers backend against llama.cpp on the same model, and beam search against greedy.

    python bench/backends.py [--data ../shared/data] [--model qwen-0.5b] [--n 20]
                             [--parts speed,beams]

- speed: prefill and decode tokens/s of each backend on the same GGUF (llama.cpp on the
  quantised weights; transformers dequantised to float32), a ~170-token prompt, 64 tokens,
  greedy, 3 runs (median). Decode rate = completion tokens / (total - time to first token).
- beam search: FaQuAD (Portuguese reading comprehension, dev set): the passage and the
  question in the prompt, the answer scored by token F1 against the gold answers (SQuAD
  normalisation, best over golds) and "contains a gold answer"; greedy vs 4 beams on the
  transformers backend, same questions, 48 tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from common import data_dir, machine

from alicerce import Alicerce, Settings
from alicerce.evaluate.text import contains, f1
from alicerce.generate import Generator
from alicerce.generate.models import BUNDLED
from alicerce.generate.params import DecodingParams
from alicerce.types import Message

LONG = ("Resuma em português: A política de reembolso da empresa cobre despesas de viagem a "
        "serviço, incluindo passagens, hospedagem e alimentação, desde que os comprovantes "
        "sejam enviados em até trinta dias após o retorno. Despesas sem comprovante não são "
        "reembolsadas. O limite diário de alimentação é de cem reais por pessoa, e bebidas "
        "alcoólicas não são cobertas. Viagens internacionais precisam de aprovação prévia da "
        "diretoria, e o câmbio usado é o da data da despesa. Táxis e aplicativos de transporte "
        "são reembolsados quando não houver transporte fretado pela empresa. ") * 2
SYSTEM = ("Responda à pergunta usando apenas o texto. Dê só a resposta, em poucas palavras, "
          "copiada do texto.")


def speed(gen: Generator) -> tuple[float, float]:
    params = DecodingParams.build(max_tokens=64, temperature=0.0)
    prefill, decode = [], []
    for run in range(3):  # a new first word each run: no prompt cache to reuse
        started, first, usage = time.perf_counter(), 0.0, None
        for d in gen.stream([Message("user", f"({run + 1}) {LONG}")], params):
            if d.text and not first:
                first = time.perf_counter() - started
            usage = d.usage or usage
        total = time.perf_counter() - started
        assert usage is not None
        prefill.append(usage.prompt_tokens / first)
        decode.append(max(usage.completion_tokens - 1, 1) / (total - first))
    return statistics.median(prefill), statistics.median(decode)


def faquad(base: Path, n: int) -> list[tuple[str, str, list[str]]]:
    data = json.loads((base / "dev.json").read_text(encoding="utf-8"))["data"]
    items = [(p["context"], qa["question"], [a["text"] for a in qa["answers"]])
             for art in data for p in art["paragraphs"] for qa in p["qas"]]
    return random.Random(0).sample(items, n)


def quality(gen: Generator, items: list[tuple[str, str, list[str]]],
            beams: int) -> tuple[float, float, float]:
    params = DecodingParams.build(max_tokens=48, temperature=0.0, num_beams=beams)
    scores, hits, started = [], [], time.perf_counter()
    for context, question, golds in items:
        text = gen.complete([Message("system", SYSTEM),
                             Message("user", f"Texto: {context}\n\nPergunta: {question}")],
                            params).text
        scores.append(max(f1(text, g) for g in golds))
        hits.append(any(contains(text, g) for g in golds))
    return (statistics.mean(scores), sum(hits) / len(hits),
            (time.perf_counter() - started) / len(items))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--model", default="qwen-0.5b", choices=sorted(BUNDLED))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--parts", default="speed,beams")
    args = ap.parse_args()
    parts = args.parts.split(",")
    items = faquad(data_dir(args.data, "pt-faquad"), args.n)
    print(f"# bench/backends.py --model {args.model}: {machine()}")
    hf = f"{args.model}-hf"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        alc = Alicerce(Settings.load(home=Path(tmp), embedder="hashing", guards={},
                                     models={hf: {"path": args.model,
                                                  "backend": "transformers"}}))
        if "speed" in parts:
            cpp_prefill, cpp_decode = speed(alc.generator(args.model))
            print(f"llama.cpp:    prefill {cpp_prefill:.1f} tok/s, decode {cpp_decode:.1f} "
                  "tok/s", flush=True)
        started = time.perf_counter()
        torch_gen = alc.generator(hf)
        print(f"transformers: loaded (dequantised) in {time.perf_counter() - started:.0f} s",
              flush=True)
        if "speed" in parts:
            tf_prefill, tf_decode = speed(torch_gen)
            print(f"transformers: prefill {tf_prefill:.1f} tok/s "
                  f"({tf_prefill / cpp_prefill:.2f}x of llama.cpp), decode {tf_decode:.1f} "
                  f"tok/s ({tf_decode / cpp_decode:.2f}x)", flush=True)
        for beams in (1, 4) if "beams" in parts else ():
            score, hit, per = quality(torch_gen, items, beams)
            print(f"FaQuAD dev x{len(items)}, {'greedy' if beams == 1 else f'{beams} beams'}: "
                  f"F1 {score:.3f}, contains {hit:.2f}, {per:.1f} s/answer", flush=True)
        alc.close()


if __name__ == "__main__":
    main()
