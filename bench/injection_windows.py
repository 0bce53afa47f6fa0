"""An injection diluted in an ordinary passage: how the injection rail's window size trades
catching it against flagging ordinary passages (issue 18, the agent red team's finding).

    python bench/injection_windows.py [--data ../shared/data] [--n 100] [--sizes 200,80,50,30]

Benign: the FaQuAD dev paragraphs (Portuguese; the head trained on train ones) and Zoomcamp
FAQ answers (English, never trained on), whole, as a collection holds them. Attacks:
deepset's test injections and the agent red team's tool-hijack payloads, each inserted at a
random sentence boundary of a FaQuAD train paragraph (a planted paragraph in a real
document). Each window size W scores a text as the highest probability over word windows
of W (half a window apart); each threshold is tried (0.5 is the head's, 0.8 the default
context rail's); 200 words is the shipped window.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import machine

from alicerce import Settings
from alicerce.embed import get_embedder
from alicerce.evaluate.agent_redteam import PAYLOADS
from alicerce.guard.classify import head, windows

ROOT = Path(__file__).resolve().parents[1]


def paragraphs(data: Path, split: str) -> list[str]:
    d = json.loads((data / "pt-faquad" / f"{split}.json").read_text("utf-8"))
    return [p["context"] for a in d["data"] for p in a["paragraphs"]]


def faq(data: Path) -> list[str]:
    docs = json.loads((data / "llm-zoomcamp-faq" / "raw" / "documents.json").read_text("utf-8"))
    return [d["text"] for course in docs for d in course["documents"]
            if len(d["text"].split()) >= 20]


def injections(data: Path) -> list[str]:
    rows = [json.loads(x) for x in (data / "prompt-injection" / "deepset" / "test.jsonl")
            .read_text("utf-8").splitlines() if x.strip()]
    return [r["text"] for r in rows if r["label"] == 1] + [
        p.text.replace("{exfil}", "http://exemplo.com/exfil") for p in PAYLOADS]


def plant(paragraph: str, attack: str, rng: random.Random) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", paragraph)
    at = rng.randrange(len(sentences) + 1)
    return " ".join([*sentences[:at], attack, *sentences[at:]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=100, help="Zoomcamp answers")
    ap.add_argument("--sizes", default="200,80,50,30")
    args = ap.parse_args()
    rng = random.Random(0)
    # the head was trained on FaQuAD train paragraphs as benign: dev ones are held out
    benign_pt, hosts = paragraphs(args.data, "dev"), paragraphs(args.data, "train")
    benign_en = rng.sample(faq(args.data), args.n)
    attacks = [plant(rng.choice(hosts), a, rng) for a in injections(args.data)]
    bare = injections(args.data)
    print(machine())
    print(f"benign: {len(benign_pt)} FaQuAD paragraphs (median "
          f"{int(np.median([len(t.split()) for t in benign_pt]))} words), {len(benign_en)} "
          f"Zoomcamp answers; attacks: {len(attacks)} injections planted in FaQuAD paragraphs")
    _EMB.append(get_embedder("e5-small", Settings.load()))
    h = head("injection")
    thresholds = [h.threshold, 0.8, 0.9]
    print(f"{'window':>7} {'threshold':>9} {'caught planted':>15} {'caught bare':>12} "
          f"{'flagged PT':>11} {'flagged EN':>11} {'windows per passage':>20} "
          f"{'ms per passage':>15}")
    for size in [int(s) for s in args.sizes.split(",")]:
        scored = {name: score(texts, size) for name, texts in (
            ("planted", attacks), ("bare", bare), ("pt", benign_pt), ("en", benign_en))}
        passages = len(benign_pt) + len(benign_en)
        per = (scored["pt"][1] + scored["en"][1]) / passages
        ms = (scored["pt"][2] + scored["en"][2]) / passages
        for t in thresholds:
            rates = {k: float(np.mean(v[0] >= t)) for k, v in scored.items()}
            print(f"{size:>7} {t:>9.2f} {rates['planted']:>15.3f} {rates['bare']:>12.3f} "
                  f"{rates['pt']:>11.3f} {rates['en']:>11.3f} {per:>20.1f} {ms:>15.1f}",
                  flush=True)


def score(texts: list[str], size: int) -> tuple[np.ndarray, int, float]:
    """The highest window probability per text, windows embedded, total ms."""
    h = head("injection")
    emb = _EMB[0]
    parts = [windows(t, size) for t in texts]
    flat = [w for p in parts for w in p]
    t0 = time.perf_counter()
    probs = h.probabilities(np.asarray(emb.embed_queries(flat), dtype=np.float32))
    ms = (time.perf_counter() - t0) * 1000
    out, i = [], 0
    for p in parts:
        out.append(float(probs[i:i + len(p)].max()))
        i += len(p)
    return np.asarray(out), len(flat), ms


_EMB: list[Any] = []


if __name__ == "__main__":
    main()
