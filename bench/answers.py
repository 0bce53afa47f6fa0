"""Answer quality per bundled model on real data, and what it cost in time.

    python bench/answers.py [--data ../shared/data] [--models qwen-1.5b,qwen-0.5b]
                            [--n 30] [--datasets faquad,pira,zoomcamp]
                            [--fusion prompt,sequence,token] [--documents 3] [--removed]

`--fusion` compares how the answer uses the passages, side by side on the same questions:
all in one prompt (the default), RAG-Sequence or RAG-Token over the best `--documents`
(chains/fusion.py).

- FaQuAD (PT): 249 passages as the collection; questions sampled from train.json (natural
  case). Token F1 (SQuAD normalisation, best over the gold answers) and "contains a gold
  answer".
- Pirá 2.0 test (PT): the machine-translated abstracts as the collection; answerable questions
  (token F1 against the two human answers) and the unanswerable ones (at_labels = 0): the
  abstention rate on each group.
- LLM Zoomcamp FAQ (EN): questions of the 2025 gpt-4o-mini run (machine-learning-zoomcamp),
  the 948 FAQ documents as the collection (course filter, as in that run). Cosine of our
  answer to `answer_orig` with all-MiniLM-L6-v2, and of gpt-4o-mini's stored answer to the same
  references with the same model: the published 0.680 used multi-qa-MiniLM-L6-cos-v1, which
  cannot be had offline, so the like-for-like comparison is the stored answers re-scored.
- `--removed`: the answerable questions again, over a copy of the collection without their
  own passages/documents (the topic stays, the answer is gone): the share abstained on is
  "abstained, source removed".
- Citation precision everywhere: the share of cited sources that are the question's own
  passage/document or contain a gold answer.
- `--route`: with two models (the first the default, the second the faster one), routing per
  question by the answerability head's probability, which every answer computes before the
  model runs: questions at or above a threshold go to the faster model. For each threshold,
  the share routed, the quality (F1 and contains; cosine for Zoomcamp) and the mean seconds per
  answer, read from the two models' answers to the same questions.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import data_dir, machine

from alicerce import Alicerce
from alicerce.evaluate.text import contains, f1
from alicerce.prompts.builtin import BUILTINS
from alicerce.types import Answer


@dataclass
class Item:
    question: str
    golds: list[str]
    doc: str
    answerable: bool = True
    filters: dict[str, str] = field(default_factory=dict)
    reference_llm: str = ""


@dataclass
class Row:
    item: Item
    answer: Answer
    seconds: float
    head: float | None = None  # the answerability head's probability, when it judged


def faquad(base: Path, n: int, work: Path) -> tuple[Path, dict[str, str], list[Item]]:
    data = json.loads((base / "dataset.json").read_text(encoding="utf-8"))["data"]
    records, by_context = [], {}
    for art in data:
        for i, para in enumerate(art["paragraphs"]):
            key = f"{art['title']}-{i}"
            records.append({"id": key, "title": art["title"], "text": para["context"]})
            by_context[para["context"].strip()] = key
    corpus = work / "faquad.jsonl"
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records))
    train = json.loads((base / "train.json").read_text(encoding="utf-8"))["data"]
    items = [Item(qa["question"], [a["text"] for a in qa["answers"]],
                  by_context.get(p["context"].strip(), ""))
             for art in train for p in art["paragraphs"] for qa in p["qas"]]
    items = [it for it in items if it.doc]
    return corpus, {"id_field": "id", "title_field": "title"}, random.Random(0).sample(items, n)


def pira(base: Path, n: int, work: Path) -> tuple[Path, dict[str, str], list[Item]]:
    with (base / "test.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    docs: dict[str, str] = {}
    for r in rows:
        docs.setdefault(r["abstract_translated_pt"].strip(), f"pira-{len(docs)}")
    corpus = work / "pira.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": k, "text": t}, ensure_ascii=False)
                                for t, k in docs.items()))
    items = [Item(r["question_pt_origin"],
                  [a for a in (r["answer_pt_origin"], r["answer_pt_validate"]) if a],
                  docs[r["abstract_translated_pt"].strip()], float(r["at_labels"]) == 1.0)
             for r in rows if r["at_labels"] and r["question_pt_origin"]]
    rng = random.Random(0)
    unanswerable = [it for it in items if not it.answerable]
    answerable = rng.sample([it for it in items if it.answerable], n)
    return corpus, {"id_field": "id"}, answerable + rng.sample(unanswerable,
                                                               min(len(unanswerable), n // 3))


def zoomcamp(base: Path, n: int) -> tuple[Path, dict[str, str], list[Item]]:
    faq = base / "llm-zoomcamp-faq/search_evaluation/documents-with-ids.json"
    with (base / "llm-zoomcamp-rag-answers/2025/results-gpt4o-mini.csv").open(
            encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    items = [Item(r["question"], [r["answer_orig"]], r["document"], True,
                  {"course": r["course"]}, r["answer_llm"]) for r in rows]
    return faq, {"id_field": "id", "title_field": "question",
                 "metadata_fields": "course,section"}, random.Random(0).sample(items, n)


def cited_ok(answer: Answer, item: Item) -> list[bool]:
    by_id = {h.chunk_id: h for h in answer.chunks}
    return [c.doc_key == item.doc or any(contains(by_id[c.chunk_id].text, g)
                                         for g in item.golds) for c in answer.citations]


def shipped_prompt(alc: Alicerce) -> str:
    """The ref of the rag-answer text this Alicerce ships, whatever `production` points at in
    a reused bench home (a label set by hand there must not change what is measured)."""
    ship = next(p for p in BUILTINS if p.name == "rag-answer")
    return alc.prompts.create(ship.name, ship.template, ship.system, ship.description).ref


def run(alc: Alicerce, coll: str, items: list[Item], model: str, fusion: str = "prompt",
        documents: int = 3) -> list[Row]:
    prompt = shipped_prompt(alc)
    rows = []
    for it in items:
        t = time.perf_counter()
        a = alc.ask(it.question, coll, model=model, filters=it.filters or None, prompt=prompt,
                    params={"temperature": 0, "max_tokens": 200},
                    fusion=None if fusion == "prompt" else {"mode": fusion,
                                                            "documents": documents})
        rows.append(Row(it, a, time.perf_counter() - t))
    alc.traces.flush()
    for r in rows:
        ctx = [s for s in alc.traces.get(r.answer.trace_id).spans if s["name"] == "context"]
        p = ctx[0]["attrs"].get("answerable_head") if ctx else None
        r.head = p if isinstance(p, float) else None
    return rows


def quality(rows: list[Row], cosine: list[float] | None) -> list[float]:
    """Per answerable question: token F1, or the cosine to the reference where given."""
    if cosine is not None:
        return [c for r, c in zip(rows, cosine, strict=True) if r.item.answerable]
    return [max(f1(r.answer.text, g) for g in r.item.golds) for r in rows if r.item.answerable]


def route(name: str, models: list[str], runs: dict[str, list[Row]],
          scores: dict[str, list[float]]) -> None:
    """Quality and time if questions whose head probability reaches a threshold went to the
    faster model (`models[1]`) and the rest to the default (`models[0]`)."""
    big, small = runs[models[0]], runs[models[1]]
    ans = [i for i, r in enumerate(big) if r.item.answerable]
    for cut in (None, 0.95, 0.9, 0.8, 0.7, 0.5, 0.0):
        pick = [cut is not None and big[i].head is not None and big[i].head >= cut for i in ans]
        q = [scores[models[1] if s else models[0]][k] for k, s in enumerate(pick)]
        cont = [any(contains((small if s else big)[i].answer.text, g) for g in big[i].item.golds)
                for i, s in zip(ans, pick, strict=True)]
        secs = [(small if s else big)[i].seconds for i, s in zip(ans, pick, strict=True)]
        label = "never" if cut is None else ("every judged" if cut == 0 else f"head >= {cut}")
        print(f"{name:<9}route {label:<12} to {models[1]}: {sum(pick)}/{len(ans)}  "
              f"{'cosine' if name == 'zoomcamp' else 'F1'} {statistics.mean(q):.3f}  "
              + ("" if name == "zoomcamp" else f"contains {statistics.mean(cont):.3f}  ")
              + f"mean {statistics.mean(secs):.1f}s/answer", flush=True)


def report(name: str, model: str, rows: list[Row], cosine: list[float] | None = None,
           llm_cosine: list[float] | None = None) -> None:
    ans = [r for r in rows if r.item.answerable]
    una = [r for r in rows if not r.item.answerable]
    given = [r for r in ans if not r.answer.abstained]
    f1s = [max(f1(r.answer.text, g) for g in r.item.golds) for r in ans]
    cont = [any(contains(r.answer.text, g) for g in r.item.golds) for r in ans]
    cites = [ok for r in rows for ok in cited_ok(r.answer, r.item)]
    secs = statistics.median(r.seconds for r in rows)
    toks = statistics.mean(r.answer.usage.prompt_tokens for r in given) if given else 0
    line = (f"{name:<9}{model:<14}n={len(ans):<4}F1 {statistics.mean(f1s):.3f}  "
            f"contains {statistics.mean(cont):.3f}  abstained {1 - len(given) / len(ans):.3f}")
    if una:
        line += f"  abstained-unanswerable {sum(r.answer.abstained for r in una) / len(una):.3f}"
        line += f" (n={len(una)})"
    if cosine:
        line += f"  cosine {statistics.mean(cosine):.3f}"
    if llm_cosine:
        line += f" (gpt-4o-mini stored answers, same scorer: {statistics.mean(llm_cosine):.3f})"
    cited = sum(bool(r.answer.citations) for r in given)
    line += (f"  citation precision {sum(cites) / len(cites) if cites else 0:.3f} "
             f"({len(cites)} cites; {cited}/{len(given)} answers cite)"
             f"  median {secs:.1f}s/answer, {toks:.0f} prompt tokens")
    print(line, flush=True)


def without_sources(corpus: Path, items: list[Item], work: Path) -> Path:
    """A copy of `corpus` (JSONL or a JSON list, `id` fields) without the items' own
    documents."""
    gone = {it.doc for it in items if it.answerable}
    text = corpus.read_text(encoding="utf-8")
    records = (json.loads(text) if corpus.suffix == ".json"
               else [json.loads(line) for line in text.splitlines() if line.strip()])
    out = work / f"{corpus.stem}-removed.jsonl"
    out.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records
                             if r["id"] not in gone))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--models", default="qwen-1.5b,qwen-0.5b")
    ap.add_argument("--datasets", default="faquad,pira,zoomcamp")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--fusion", default="prompt", help="prompt,sequence,token")
    ap.add_argument("--documents", type=int, default=3)
    ap.add_argument("--home", default="/tmp/alicerce-bench-answers")
    ap.add_argument("--zoomcamp-home", default="/tmp/alicerce-bench-zoomcamp")
    ap.add_argument("--removed", action="store_true",
                    help="also ask the answerable questions with their own sources removed")
    ap.add_argument("--route", action="store_true",
                    help="route by the answerability head from the first model to the second")
    args = ap.parse_args()
    print(f"machine: {machine()}; n={args.n} per dataset, temperature 0, max_tokens 200")
    work = Path(tempfile.mkdtemp())
    sets = []
    wanted = args.datasets.split(",")
    if "faquad" in wanted:
        sets.append(("faquad", args.home, *faquad(data_dir(args.data, "pt-faquad"), args.n,
                                                  work)))
    if "pira" in wanted:
        sets.append(("pira", args.home, *pira(data_dir(args.data, "pt-pira"), args.n, work)))
    if "zoomcamp" in wanted:
        root = data_dir(args.data, "llm-zoomcamp-faq").parent
        sets.append(("zoomcamp", args.zoomcamp_home, *zoomcamp(root, args.n)))
    scorer = None
    for name, home, corpus, mapping, items in sets:
        alc = Alicerce.open(home)
        t = time.perf_counter()
        alc.ingest([corpus], name, **mapping)  # type: ignore[arg-type]
        print(f"{name}: collection ready in {time.perf_counter() - t:.0f}s; {len(items)} "
              "questions", flush=True)
        runs: dict[str, list[Row]] = {}
        scores: dict[str, list[float]] = {}
        for model, fusion in [(m, f) for m in args.models.split(",")
                              for f in args.fusion.split(",")]:
            rows = runs[model] = run(alc, name, items, model, fusion, args.documents)
            cos = ref = None
            if name == "zoomcamp":
                from alicerce.embed.minilm import MiniLMEmbedder

                scorer = scorer or MiniLMEmbedder()
                a = scorer.embed_queries([r.answer.text for r in rows])
                o = scorer.embed_queries([r.item.golds[0] for r in rows])
                g = scorer.embed_queries([r.item.reference_llm for r in rows])
                cos = [float(x @ y) for x, y in zip(a, o, strict=True)]
                ref = [float(x @ y) for x, y in zip(g, o, strict=True)]
            print(f"prompt {shipped_prompt(alc)} fusion {fusion}", end="  ")
            report(name, model, rows, cos, ref)
            scores[model] = quality(rows, cos)
            out = work / f"{name}-{model}-{fusion}.jsonl"
            out.write_text("\n".join(json.dumps({"q": r.item.question, "gold": r.item.golds,
                                                 "answer": r.answer.text,
                                                 "abstained": r.answer.abstained,
                                                 "cites": [c.doc_key for c in r.answer.citations],
                                                 "doc": r.item.doc, "head": r.head},
                                                ensure_ascii=False)
                                     for r in rows))
            if args.removed:
                gone = f"{name}-removed"
                alc.ingest([without_sources(Path(corpus), items, work)], gone,
                           **mapping)  # type: ignore[arg-type]
                asked = [it for it in items if it.answerable]
                held = run(alc, gone, asked, model, fusion, args.documents)
                print(f"{name:<9}{model:<14}abstained, source removed "
                      f"{sum(r.answer.abstained for r in held) / len(held):.3f} "
                      f"(n={len(held)}; median {statistics.median(r.seconds for r in held):.1f}"
                      "s/answer)", flush=True)
        if args.route and len(runs) == 2:
            route(name, args.models.split(","), runs, scores)
        alc.close()
    print(f"answers kept in {work}")


if __name__ == "__main__":
    main()
