"""End-to-end answer latency on the sample handbook with the default model and settings, its
breakdown per stage, and the physical floor measured side by side.

    python bench/latency.py [--home DIR] [--model qwen-1.5b] [--limit 21] [--set key=value]

What a user of README's first command waits for: `ask_stream` on the `handbook` collection
(default retrieval, rails, prompt, decoding) over the 21 golden questions, after one warm-up
question (the model loaded, the system prompt's KV prefix cached). Per answer: time to the
first visible text, total time, prompt tokens, prefill and decode time from the trace.

The floor, alternating with each answer: the same model answering the same question from the
gold passage alone (the chunk of the golden source document that shares most words with the
reference), with the shortest prompt, no retrieval and no rails, same decoding. Our answer
can approach it only by passing the model as little as the gold passage.

Quality on the same run: token F1 against the reference, "facts" (the share of the
reference's numbers and names found in the answer) and whether the gold document is cited.

Then the 18 on-topic questions the handbook does not answer (bench/data/
handbook-unanswerable.jsonl; `--no-unanswerable` skips them): how many are abstained on, and
how long each kind of reply took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine

from alicerce import Alicerce
from alicerce.evaluate.text import f1
from alicerce.generate.params import DecodingParams
from alicerce.metrics.grounding import facts, fold
from alicerce.types import Answer, Hit, Message

ROOT = Path(__file__).resolve().parent.parent
FLOOR_SYSTEM = {"pt": "Responda à pergunta com base no trecho, em poucas frases.",
                "en": "Answer the question from the passage, in a few sentences."}


def golden(limit: int) -> list[dict[str, Any]]:
    lines = (ROOT / "examples/handbook-golden.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if x.strip()][:limit]


def gold_passage(alc: Alicerce, item: dict[str, Any]) -> Hit:
    """The golden source's chunk sharing most words with the reference."""
    hits = alc.search(item["question"] + " " + item["reference"], "handbook", k=40)
    own = [h for h in hits if gold(h.doc_key, item)] or hits
    ref = set(fold(item["reference"]).split())
    return max(own, key=lambda h: len(ref & set(fold(h.text).split())))


def gold(doc_key: str, item: dict[str, Any]) -> bool:
    """Whether a document is the golden source ("reembolso.md" is "handbook/reembolso.md")."""
    return any(doc_key == s or doc_key.endswith("/" + s) for s in item["sources"])


def fact_recall(answer: str, reference: str) -> float:
    numbers, names = facts(reference)
    wanted = [fold(x) for x in (*numbers, *names)]
    got = fold(answer)
    return sum(w in got for w in wanted) / len(wanted) if wanted else 1.0


def timed_ask(alc: Alicerce, question: str) -> tuple[Answer, float, float]:
    t0 = time.perf_counter()
    first = None
    answer = None
    for item in alc.ask_stream(question, "handbook"):
        if isinstance(item, Answer):
            answer = item
        elif item.strip() and first is None:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    assert answer is not None
    return answer, first if first is not None else total, total


def floor(alc: Alicerce, model: str, item: dict[str, Any], passage: Hit,
          params: DecodingParams) -> tuple[str, float, float, int]:
    lang = "en" if (item["question"].isascii() and " the " in f" {item['question']} ") or \
        item["question"].split()[0] in ("How", "What", "Which", "When") else "pt"
    gen = alc.generator(model)
    messages = [Message("system", FLOOR_SYSTEM[lang]),
                Message("user", f"{passage.text}\n\n{item['question']}")]
    t0 = time.perf_counter()
    first, pieces, prompt_tokens = None, [], 0
    for d in gen.stream(messages, params):
        if d.text and first is None:
            first = time.perf_counter() - t0
        pieces.append(d.text)
        if d.usage:
            prompt_tokens = d.usage.prompt_tokens
    total = time.perf_counter() - t0
    return "".join(pieces), first or total, total, prompt_tokens


def stages(alc: Alicerce, trace_id: str) -> dict[str, float]:
    """ms per span of the answer's trace, and the generate span's token counts."""
    alc.traces.flush()
    spans = alc.traces.get(trace_id).spans
    out: dict[str, float] = {}
    for s in spans:
        out[s["name"]] = out.get(s["name"], 0.0) + float(s["ms"])
        if s["name"] == "generate":
            for k in ("prompt_tokens", "cached_tokens", "completion_tokens",
                      "time_to_first_token_ms"):
                out[k] = float(s["attrs"].get(k) or 0)
    return out


def unanswerable(alc: Alicerce) -> None:
    """The on-topic questions the handbook does not answer: abstained on, and how fast."""
    path = ROOT / "bench/data/handbook-unanswerable.jsonl"
    asked = [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines()]
    done = [(q, *timed_ask(alc, q)) for q in asked]
    for q, ans, _, total in done:
        print(f"  {'abstained' if ans.abstained else 'answered '} {total:5.1f}s  {q}")
    held = [total for _, ans, _, total in done if ans.abstained]
    given = [total for _, ans, _, total in done if not ans.abstained]
    print(f"unanswerable: abstained {len(held)}/{len(done)}"
          + (f", p50 {statistics.median(held):.2f} s" if held else "")
          + (f"; answered anyway {len(given)}, p50 {statistics.median(given):.1f} s"
             if given else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="")
    ap.add_argument("--limit", type=int, default=21)
    ap.add_argument("--set", action="append", default=[], help="a setting, key=value")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--no-unanswerable", action="store_true")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    home = a.home or tempfile.mkdtemp(prefix="alicerce-latency-")
    overrides = dict(kv.split("=", 1) for kv in a.set)
    alc = Alicerce.open(home, **overrides)
    model = alc.settings.generator
    print(f"{machine()}; model {model}; settings {overrides or 'default'}")
    alc.ingest([ROOT / "examples/handbook"], "handbook")  # unchanged files are skipped
    params = DecodingParams.build(temperature=alc.settings.temperature,
                                  max_tokens=alc.settings.max_tokens)
    items = golden(a.limit)
    timed_ask(alc, "Como funciona o crachá de acesso?")  # warm-up, not a golden question
    rows = []
    for it in items:
        ans, first, total = timed_ask(alc, it["question"])
        st = stages(alc, ans.trace_id)
        row = {"id": it["id"], "first_s": first, "total_s": total,
               "f1": f1(ans.text, it["reference"]), "facts": fact_recall(ans.text, it["reference"]),
               "cites_gold": any(gold(c.doc_key, it) for c in ans.citations),
               "abstained": ans.abstained, "answer": ans.text,
               "flagged": [g["rail"] for g in ans.guards if g.get("action") != "allow"], **st}
        if not a.no_floor:
            passage = gold_passage(alc, it)
            text, ffirst, ftotal, ftok = floor(alc, model, it, passage, params)
            row.update(floor_first_s=ffirst, floor_total_s=ftotal, floor_prompt_tokens=ftok,
                       floor_f1=f1(text, it["reference"]),
                       floor_facts=fact_recall(text, it["reference"]))
        rows.append(row)
        print(f"{it['id']:<28} first {first:5.1f}s total {total:5.1f}s "
              f"prompt {row.get('prompt_tokens', 0):5.0f} tok "
              f"(cached {row.get('cached_tokens', 0):4.0f}) "
              + (f"| floor {row['floor_total_s']:5.1f}s {row['floor_prompt_tokens']:4d} tok "
                 if not a.no_floor else "")
              + f"| facts {row['facts']:.2f} {'abstained' if ans.abstained else ''}", flush=True)
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    mean = lambda k: statistics.mean(float(r[k]) for r in rows)  # noqa: E731
    print(f"\nanswer p50 {med('total_s'):.1f} s (target <= 12), first text p50 "
          f"{med('first_s'):.1f} s (target <= 5), prompt tokens p50 {med('prompt_tokens'):.0f}")
    print("stage ms p50: " + ", ".join(
        f"{k} {med(k):.0f}" for k in ("retrieve", "context_guards", "input_guards", "prompt",
                                       "generate", "output_guards", "citations")
        if all(k in r for r in rows)))
    print(f"quality: F1 {mean('f1'):.3f}, facts {mean('facts'):.3f}, cites gold "
          f"{mean('cites_gold'):.3f}, abstained {mean('abstained'):.3f}; rails that fired on "
          f"answers: {[g for r in rows for g in r['flagged']]}")
    if not a.no_floor:
        ratios = [r["total_s"] / r["floor_total_s"] for r in rows]
        print(f"floor: p50 {med('floor_total_s'):.1f} s, first text {med('floor_first_s'):.1f} s,"
              f" prompt tokens {med('floor_prompt_tokens'):.0f}; F1 {mean('floor_f1'):.3f}, "
              f"facts {mean('floor_facts'):.3f}; ours / floor: p50 of per-question ratios "
              f"{statistics.median(ratios):.2f}x, of p50s "
              f"{med('total_s') / med('floor_total_s'):.2f}x (target <= 1.3)")
    if not a.no_unanswerable:
        unanswerable(alc)
    if a.out:
        Path(a.out).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    alc.close()


if __name__ == "__main__":
    main()
