"""Tuning where it clearly helps a small model: ToLD-Br toxicity (Brazilian Portuguese
tweets) as a generative label ("tóxico" / "não tóxico"), for each model: zero-shot and
k-shot prompting against LoRA, (IA)3 and prompt tuning trained by `alicerce tune run`.

    python bench/tune.py --data ../shared/data [--models smollm2-135m,qwen-0.5b]
                         [--train 320] [--test 200] [--methods lora,ia3,prompt]

Per row: macro-F1 on a random sample of the paper's test split (1-annotator labels: toxic
when any annotator flagged it), unparseable answers counted wrong, trainable parameters,
training seconds per epoch and peak memory (each training is its own `alicerce tune run`
process, so its peak RSS is its own), and decode speed through llama.cpp with the LoRA
adapter against the plain base (same prompt, greedy, 64 tokens). LoRA is scored through
llama.cpp (the served path, quantised base); (IA)3 and prompt tuning have no llama.cpp form
and are scored with transformers on the dequantised base. Anchor: the paper's fine-tuned
BERT, macro-F1 0.76 on the binary task.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sklearn.metrics import f1_score

from alicerce import Alicerce, Settings
from alicerce.generate.params import DecodingParams
from alicerce.types import Message

ANCHOR = 0.76  # Leite et al. 2020, BERT macro-F1 on ToLD-Br binary
SYSTEM = ("Você classifica tweets em português. Responda apenas 'tóxico' ou 'não tóxico'.")
LABELS = {1: "tóxico", 0: "não tóxico"}
LR = {"lora": 1e-3, "ia3": 3e-3, "prompt": 3e-2}


def rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [{"text": r["text"], "toxic": int(float(r["toxic"]))} for r in csv.DictReader(f)]


def question(text: str) -> str:
    return f"Tweet: {text}\nEste tweet é tóxico?"


def parse(answer: str) -> int:
    a = answer.strip().lower().strip("'\".:!* ")
    if a.startswith(("não", "nao")):
        return 0
    if a.startswith(("tóxico", "toxico", "sim")):
        return 1
    return -1  # neither: counted wrong


def macro_f1(gold: list[int], pred: list[int]) -> float:
    return float(f1_score(gold, pred, labels=[0, 1], average="macro", zero_division=0))


def sample(data: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[list[Any], list[Any]]:
    split = data / "toxicity" / "told-br" / "splits"
    train = rows(split / "ptbr_train_1annotator.csv")
    test = rows(split / "ptbr_test_1annotator.csv")
    rng = random.Random(seed)
    rng.shuffle(train)
    toxic = [r for r in train if r["toxic"]][: n_train // 2]
    clean = [r for r in train if not r["toxic"]][: n_train - len(toxic)]
    chosen = toxic + clean
    rng.shuffle(chosen)
    rng.shuffle(test)
    return chosen, test[:n_test]


def write_sft(train: list[Any], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in train:
            f.write(json.dumps({"messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question(r["text"])},
                {"role": "assistant", "content": LABELS[r["toxic"]]}]},
                ensure_ascii=False) + "\n")


def shots(train: list[Any], k: int) -> list[Message]:
    pos = [r for r in train if r["toxic"]][: k // 2]
    neg = [r for r in train if not r["toxic"]][: k - k // 2]
    out: list[Message] = []
    for r in [x for pair in zip(pos, neg, strict=False) for x in pair]:
        out += [Message("user", question(r["text"])), Message("assistant", LABELS[r["toxic"]])]
    return out


def score_llama(gen: Any, test: list[Any], examples: list[Message]) -> tuple[float, float, float]:
    """(macro-F1, share unparseable, seconds per row) through llama.cpp."""
    params = DecodingParams.build(max_tokens=6, temperature=0.0)
    preds, t0 = [], time.perf_counter()
    for r in test:
        msgs = [Message("system", SYSTEM), *examples, Message("user", question(r["text"]))]
        preds.append(parse(gen.complete(msgs, params).text))
    per = (time.perf_counter() - t0) / len(test)
    return (macro_f1([r["toxic"] for r in test], preds),
            sum(p < 0 for p in preds) / len(preds), per)


def score_torch(base: Path, adapter: Path, test: list[Any]) -> tuple[float, float, float]:
    """Greedy decoding by hand (a forward pass per token, no cache): PEFT 0.21's
    `generate()` with a prompt-tuned model on transformers 5 ignores the soft prompt's
    effect (it answered "t" and newlines where the same model's forward pass says
    "tóxico"), so every torch-scored method decodes this way."""
    import torch
    from peft import PeftModel

    from alicerce.generate.hf import load_base

    tok, model = load_base(base)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    preds, t0 = [], time.perf_counter()
    for r in test:
        x = tok.apply_chat_template(
            [{"role": "system", "content": SYSTEM},
             {"role": "user", "content": question(r["text"])}],
            add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        start = x.shape[1]
        for _ in range(6):
            with torch.no_grad():
                nxt = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, -1:]
            x = torch.cat([x, nxt.argmax(-1)], dim=1)
            if int(x[0, -1]) == tok.eos_token_id:
                break
        preds.append(parse(tok.decode(x[0, start:], skip_special_tokens=True)))
    per = (time.perf_counter() - t0) / len(test)
    return (macro_f1([r["toxic"] for r in test], preds),
            sum(p < 0 for p in preds) / len(preds), per)


def decode_speeds(alc: Alicerce, model: str, adapter: str, reps: int = 3) -> tuple[float, float]:
    """Decode tokens/s (median of `reps`, alternated) of the loaded base without and with
    the adapter: the same llama.cpp instance, only the request's adapter scale differs."""
    tuned = alc.generator(model, adapter)
    plain = tuned.adapted(None, model)  # type: ignore[attr-defined]
    params = DecodingParams.build(max_tokens=64, temperature=0.0)
    msgs = [Message("user", "Escreva um parágrafo sobre a história de São Paulo.")]
    speeds: dict[str, list[float]] = {"plain": [], "tuned": []}
    for _ in range(reps):
        for key, gen in (("plain", plain), ("tuned", tuned)):
            speeds[key].append(gen.complete(msgs, params).timings.get("decode_tok_s", 0.0))
    return statistics.median(speeds["plain"]), statistics.median(speeds["tuned"])


def train(home: Path, model: str, method: str, data: Path, epochs: float) -> dict[str, Any]:
    name = f"told-{method}-{model}".replace(".", "")
    cmd = [sys.executable, "-m", "alicerce", "tune", "run", "--home", str(home),
           "--data", str(data), "--name", name, "--base", model, "--method", method,
           "--epochs", str(epochs), "--batch-size", "8", "--lr", str(LR[method]),
           "--eval-split", "0.1", "--log-every", "10", "--early-stopping-patience", "0",
           "--max-seq-len", "192", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"training failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--models", default="smollm2-135m,qwen-0.5b")
    ap.add_argument("--methods", default="lora,ia3,prompt")
    ap.add_argument("--train", type=int, default=320)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--decode", type=Path, default=None,
                    help="a home an earlier run left: decode speed with and without each "
                         "LoRA adapter of --models; give one model, so the process loads "
                         "nothing else (a second llama.cpp model loaded in the same process "
                         "halves the first's decode speed on 2 cores)")
    ap.add_argument("--rescore", type=Path, default=None,
                    help="a home an earlier run left: score its prompt-tuned adapters again "
                         "(without training)")
    a = ap.parse_args()
    train_rows, test = sample(a.data, a.train, a.test)
    if a.rescore:
        rescore(a.rescore, test)
        return
    if a.decode:
        with Alicerce(Settings.load(home=a.decode)) as alc:
            for ad in alc.adapters.list():  # one base per process: see --decode's help
                if ad.gguf is not None and ad.base in a.models.split(","):
                    plain, tuned = decode_speeds(alc, ad.base, ad.ref, reps=5)
                    print(f"{ad.base:<13} {ad.ref}: decode {plain:.1f} -> {tuned:.1f} tokens/s "
                          f"with the adapter, ratio {tuned / plain:.3f}", flush=True)
        return
    home = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    sft = home / "told-sft.jsonl"
    write_sft(train_rows, sft)
    print(f"ToLD-Br: {len(train_rows)} training rows (balanced), {len(test)} test rows "
          f"({sum(r['toxic'] for r in test)} toxic); anchor BERT macro-F1 {ANCHOR}", flush=True)
    out: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        out.append(row)
        print(f"{row['model']:<13} {row['method']:<10} macro-F1 {row['f1']:.3f} "
              f"(x{row['f1'] / ANCHOR:.2f} of BERT)  unparseable {row['bad']:.2f}  "
              + "  ".join(f"{k} {row[k]}" for k in ("trainable", "s_per_epoch", "peak_mb",
                                                    "decode_ratio", "s_per_row")
                          if row.get(k) is not None), flush=True)

    settings = Settings.load(home=home)
    for model in a.models.split(","):
        with Alicerce(settings) as alc:
            base = alc.generator(model)
            for method, examples in (("zero-shot", []), (f"{a.k}-shot", shots(train_rows, a.k))):
                f1, bad, per = score_llama(base, test, examples)
                report({"model": model, "method": method, "f1": f1, "bad": bad,
                        "s_per_row": round(per, 2)})
        for method in a.methods.split(","):
            run = train(home, model, method, sft, a.epochs)
            res = run["result"]
            row = {"model": model, "method": method, "trainable": res["trainable_params"],
                   "s_per_epoch": round(res["seconds"] / a.epochs, 1),
                   "peak_mb": res["peak_rss_mb"], "final_eval_loss": res["best_eval_loss"]}
            with Alicerce(settings) as alc:
                adapter = alc.adapters.get(res["adapter"])
                if adapter.gguf is not None:
                    f1, bad, per = score_llama(alc.generator(model, adapter.ref), test, [])
                    plain, tuned = decode_speeds(alc, model, adapter.ref)
                    row.update(decode_ratio=round(tuned / plain, 3),
                               decode_tok_s=(round(plain, 1), round(tuned, 1)))
                else:
                    from alicerce.generate.models import model_path, resolve

                    f1, bad, per = score_torch(model_path(resolve(model, settings), settings),
                                               adapter.path, test)
            row.update(f1=f1, bad=bad, s_per_row=round(per, 2))
            report(row)
    if a.out:
        a.out.write_text(json.dumps(out, indent=1, ensure_ascii=False))


def rescore(home: Path, test: list[Any]) -> None:
    from alicerce.generate.models import model_path, resolve

    settings = Settings.load(home=home)
    with Alicerce(settings) as alc:
        found = [a for a in alc.adapters.list() if a.method == "prompt"]
    for a in found:
        f1, bad, per = score_torch(model_path(resolve(a.base, settings), settings), a.path, test)
        print(f"{a.base:<13} {a.method:<10} macro-F1 {f1:.3f} (x{f1 / ANCHOR:.2f} of BERT)  "
              f"unparseable {bad:.2f}  s_per_row {per:.2f}", flush=True)


if __name__ == "__main__":
    main()
