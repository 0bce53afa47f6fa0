"""Calibrate the answerability check (chains/answerable.py): P(the sources answer) for
questions the documents answer and questions they do not, and the abstention rates per
threshold.

    python bench/answerability.py [--data ../shared/data] [--n 40] [--model qwen-1.5b]

Data built for calibration, disjoint from the evaluation samples of bench/answers.py:
- Pirá 2.0 validation split: its machine-translated abstracts as the collection; the
  questions annotated answerable from the abstract (at_labels 1, `--n` sampled) and all those
  annotated not answerable (at_labels 0).
- FaQuAD dev split: its paragraphs as the collection, except the paragraphs of half the
  sampled questions, which are left out: those questions stay on the collection's topics
  (their article's other paragraphs are there) but the documents no longer hold the answer.

Each question runs through the product path (`Alicerce.ask`, the default retrieval, windows
and prompt) with a threshold that never abstains and one token to generate; P(yes) is read
from the trace's `answerable` span. Prints the scores' spread and, per threshold, the share
of answerable questions abstained on (false abstention) and of unanswerable ones caught.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from common import data_dir, machine

from alicerce import Alicerce

THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def pira(base: Path, n: int, work: Path) -> tuple[Path, list[tuple[str, bool]]]:
    with (base / "validation.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["at_labels"] and r["question_pt_origin"]]
    docs = {r["abstract_translated_pt"].strip(): f"pira-val-{i}" for i, r in enumerate(rows)}
    corpus = work / "pira-val.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": k, "text": t}, ensure_ascii=False)
                                for t, k in docs.items()))
    yes = [(r["question_pt_origin"], True) for r in rows if float(r["at_labels"]) == 1.0]
    no = [(r["question_pt_origin"], False) for r in rows if float(r["at_labels"]) == 0.0]
    return corpus, random.Random(1).sample(yes, min(n, len(yes))) + no


def faquad(base: Path, n: int, work: Path) -> tuple[Path, list[tuple[str, bool]]]:
    data = json.loads((base / "dev.json").read_text(encoding="utf-8"))["data"]
    paras = [(art["title"], p) for art in data for p in art["paragraphs"]]
    rng = random.Random(1)
    picked = rng.sample(range(len(paras)), min(n, len(paras) * 3 // 4))  # dev has 38
    removed = set(picked[: len(picked) // 2])
    corpus = work / "faquad-dev.jsonl"
    corpus.write_text("\n".join(
        json.dumps({"id": f"dev-{i}", "title": t, "text": p["context"]}, ensure_ascii=False)
        for i, (t, p) in enumerate(paras) if i not in removed))
    items = [(rng.choice(paras[i][1]["qas"])["question"], i not in removed) for i in picked]
    return corpus, items


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--model", default="qwen-1.5b")
    ap.add_argument("--home", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alicerce-answerability-"))
    alc = Alicerce.open(a.home or work / "home", answerable_min=1e-9, generator=a.model)
    print(f"{machine()}; model {a.model}")
    sets = [("pira-val", *pira(data_dir(a.data, "pt-pira"), a.n, work)),
            ("faquad-dev", *faquad(data_dir(a.data, "pt-faquad"), a.n, work))]
    rows = []
    for name, corpus, items in sets:
        alc.ingest([corpus], name, id_field="id", title_field="title")
        t0 = time.perf_counter()
        for question, ok in items:
            ans = alc.ask(question, name, params={"temperature": 0, "max_tokens": 1})
            alc.traces.flush()
            span = next((s for s in alc.traces.get(ans.trace_id).spans
                         if s["name"] == "answerable"), None)
            p = float(span["attrs"]["p_yes"]) if span else 0.0  # no span: retrieval abstained
            rows.append({"set": name, "question": question, "answerable": ok, "p_yes": p})
        print(f"{name}: {len(items)} questions in {time.perf_counter() - t0:.0f} s", flush=True)
    for group in (True, False):
        ps = [r["p_yes"] for r in rows if r["answerable"] is group]
        print(f"{'answerable' if group else 'unanswerable':<13} n={len(ps):<3} P(yes) median "
              f"{statistics.median(ps):.3f}, quartiles "
              f"{' / '.join(f'{q:.3f}' for q in statistics.quantiles(ps, n=4))}")
    print(f"\n{'threshold':>9} {'false abstention':>17} {'unanswerable caught':>20}")
    for t in THRESHOLDS:
        line = f"{t:>9.2f}"
        for group in (True, False):
            sel = [r for r in rows if r["answerable"] is group]
            line += f" {sum(r['p_yes'] < t for r in sel) / len(sel):>17.3f}" if group else \
                f" {sum(r['p_yes'] < t for r in sel) / len(sel):>20.3f}"
        by_set = "  ".join(
            f"{s}: {sum(r['p_yes'] < t for r in rows if r['set'] == s and r['answerable'])}/"
            f"{sum(1 for r in rows if r['set'] == s and r['answerable'])} false, "
            f"{sum(r['p_yes'] < t for r in rows if r['set'] == s and not r['answerable'])}/"
            f"{sum(1 for r in rows if r['set'] == s and not r['answerable'])} caught"
            for s, _, _ in sets)
        print(f"{line}   ({by_set})")
    if a.out:
        Path(a.out).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    alc.close()


if __name__ == "__main__":
    main()
