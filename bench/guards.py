"""Guard rail benchmarks: injection detectors compared on the deepset test split, XSTest
false refusals, toxicity on ToLD-Br and Davidson, PII precision/recall on a generated
labelled set, and the latency of each rail.

    python bench/guards.py --data ../shared/data [--parts injection,xstest,toxicity,pii,latency]

The packaged injection detectors (metatronnanoguard, prompt-guardrail) are optional: a part
reports them only when installed (`pip install metatronnanoguard prompt-guardrail`).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from alicerce import Alicerce, Settings
from alicerce.embed import get_embedder
from alicerce.guard.base import Context
from alicerce.guard.classify import ClassifierGuard
from alicerce.guard.pii import find

HERE = Path(__file__).resolve().parent


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def binary(y: list[int], p: list[int]) -> dict[str, float]:
    tp = sum(a == b == 1 for a, b in zip(y, p, strict=True))
    fp = sum(a == 0 and b == 1 for a, b in zip(y, p, strict=True))
    fn = sum(a == 1 and b == 0 for a, b in zip(y, p, strict=True))
    tn = len(y) - tp - fp - fn
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    prec0 = tn / (tn + fn) if tn + fn else 0.0
    rec0 = tn / (tn + fp) if tn + fp else 0.0
    f1_0 = 2 * prec0 * rec0 / (prec0 + rec0) if prec0 + rec0 else 0.0
    return {"accuracy": (tp + tn) / len(y), "precision": prec, "recall": rec, "f1": f1,
            "macro_f1": (f1 + f1_0) / 2}


def timed(fn: Callable[[str], int], texts: list[str]) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    out = [fn(t) for t in texts]
    return out, (time.perf_counter() - t0) * 1000 / len(texts)


def injection(data: Path, settings: Settings) -> None:
    test = jsonl(data / "prompt-injection" / "deepset" / "test.jsonl")
    pt = [r for r in jsonl(HERE / "data" / "injection-pt.jsonl") if r["split"] == "test"]
    guard = ClassifierGuard("injection", get_embedder("e5-small", settings))
    guard.check("warm up", Context())
    detectors: dict[str, Callable[[str], int]] = {
        "alicerce injection head (e5-small + LogReg)":
            lambda t: int(guard.check(t, Context()).action == "block")}
    try:
        from nanoguard import NanoGuard

        ng = NanoGuard(device="cpu")
        detectors["metatronnanoguard 0.1.0"] = lambda t: int(ng.scan(t).is_injection)
    except ImportError:
        print("  (metatronnanoguard not installed: skipped)")
    try:
        from guardify.guardrails.logistic_regression import LogisticRegressionGuardrail

        pg = LogisticRegressionGuardrail()
        detectors["prompt-guardrail 1.0.1 (TF-IDF)"] = \
            lambda t: int(pg.predict(t)["label"] == "injection")
    except ImportError:
        print("  (prompt-guardrail not installed: skipped)")
    print("| detector | deepset acc | F1 | precision | recall | Portuguese acc (50) | ms/text |")
    print("|---|---|---|---|---|---|---|")
    for name, fn in detectors.items():
        pred, ms = timed(fn, [r["text"] for r in test])
        m = binary([r["label"] for r in test], pred)
        pt_pred, _ = timed(fn, [r["text"] for r in pt])
        pm = binary([r["label"] for r in pt], pt_pred)
        print(f"| {name} | {m['accuracy']:.3f} | {m['f1']:.3f} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {pm['accuracy']:.3f} | {ms:.1f} |")
        if name.startswith("alicerce"):
            print(f"  ratio to the mBERT LogReg anchor (0.966): {m['accuracy'] / 0.966:.3f}x; "
                  f"target >= 0.95: {'met' if m['accuracy'] >= 0.95 else 'missed'}")


def xstest(data: Path, settings: Settings) -> None:
    xs = rows(data / "prompt-injection" / "xstest" / "xstest_prompts.csv")
    safe = [r["prompt"] for r in xs if r["label"] != "unsafe"]
    unsafe = [r["prompt"] for r in xs if r["label"] == "unsafe"]
    variants = {
        "default input rails (size, pii, injection)": None,
        "+ harmful": ["size", "pii", "injection", "harmful"],
        "+ topics (deny politics, medical-advice)":
            ["size", "pii", "injection", {"topics": {"deny": ["politics", "medical-advice"]}}]}
    print("| input rails | safe prompts refused | unsafe prompts blocked |")
    print("|---|---|---|")
    for label, rails in variants.items():
        base = settings.model_dump()
        if rails is not None:
            base["guards"] = {"input": rails}
        with Alicerce(Settings.load(**base)) as alc:
            def blocked(t: str, alc: Alicerce = alc) -> bool:
                return alc.check(t).blocked is not None
            frr = sum(map(blocked, safe)) / len(safe)
            block = sum(map(blocked, unsafe)) / len(unsafe)
        print(f"| {label} | {frr:.3f} ({len(safe)}) | {block:.3f} ({len(unsafe)}) |")
    print("  target: false refusals <= 0.05")


def toxicity(data: Path, settings: Settings) -> None:
    guard = ClassifierGuard("toxicity", get_embedder("e5-small", settings))
    t = data / "toxicity"
    told = rows(t / "told-br" / "splits" / "ptbr_test_1annotator.csv")
    dav = rows(t / "davidson-hate-offensive" / "labeled_data.csv")
    random.Random(0).shuffle(dav)
    dav = dav[6000:8000]  # the rows bench/train_guards.py holds out
    print("| set | macro-F1 | F1 (toxic) | precision | recall | n |")
    print("|---|---|---|---|---|---|")
    for name, texts, y in (
            ("ToLD-Br test (PT, 1-annotator labels)", [r["text"] for r in told],
             [int(r["toxic"]) for r in told]),
            ("Davidson held-out 2,000 (EN)", [r["tweet"] for r in dav],
             [int(r["class"] != "2") for r in dav])):
        probs = guard.score(texts)
        m = binary(y, [int(p >= 0.5) for p in probs])
        print(f"| {name} | {m['macro_f1']:.3f} | {m['f1']:.3f} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {len(y)} |")
        if name.startswith("ToLD"):
            print(f"  macro-F1 ratio to the BERT anchor (0.76): {m['macro_f1'] / 0.76:.3f}x")


# -- PII: a generated, labelled set -----------------------------------------------------
FIRST = ["Ana", "João", "Maria", "Pedro", "Luiza", "Carlos", "Fernanda", "Rafael", "Juliana",
         "Marcos", "Emily", "James", "Olivia", "Michael", "Sarah", "David"]
LAST = ["Silva", "Souza", "Oliveira", "Santos", "Pereira", "Costa", "Rodrigues", "Almeida",
        "Smith", "Johnson", "Brown", "Miller", "Davis", "Wilson"]


def cpf(rng: random.Random) -> str:
    d = [rng.randint(0, 9) for _ in range(9)]
    for n in (9, 10):
        s = sum(v * w for v, w in zip(d, range(n + 1, 1, -1), strict=False))
        d.append((s * 10 % 11) % 10)
    s = "".join(map(str, d))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}" if rng.random() < 0.8 else s


def cnpj(rng: random.Random) -> str:
    d = [rng.randint(0, 9) for _ in range(8)] + [0, 0, 0, 1]
    for n in (12, 13):
        w = list(range(n - 7, 1, -1)) + list(range(9, 1, -1))
        c = 11 - sum(a * b for a, b in zip(d, w, strict=False)) % 11
        d.append(0 if c >= 10 else c)
    s = "".join(map(str, d))
    return f"{s[:2]}.{s[2:5]}.{s[5:8]}/{s[8:12]}-{s[12:]}"


def card(rng: random.Random) -> str:
    d = [4] + [rng.randint(0, 9) for _ in range(14)]
    total = 0
    for i, v in enumerate(reversed(d)):
        v = v * 2 if i % 2 == 0 else v
        total += v - 9 if v > 9 else v
    d.append((10 - total % 10) % 10)
    s = "".join(map(str, d))
    return " ".join(s[i:i + 4] for i in range(0, 16, 4))


def pii_set(n: int, seed: int = 0) -> list[tuple[str, list[tuple[str, str]]]]:
    """Documents with their labelled values (entity, value)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        user = name.lower().replace(" ", ".").replace("ã", "a").replace("ç", "c")
        email = f"{user}@{rng.choice(['empresa.com.br', 'example.com', 'mail.org'])}"
        ddd = rng.randint(11, 99)
        phone_br = f"({ddd}) 9{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"
        cep = f"{rng.randint(10000, 99999)}-{rng.randint(100, 999)}"
        ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        iban = rng.choice(["DE89370400440532013000", "GB82WEST12345698765432",
                           "FR1420041010050500013M02606"])
        values = {"CPF": cpf(rng), "CNPJ": cnpj(rng), "EMAIL_ADDRESS": email,
                  "PHONE_NUMBER": phone_br, "CEP": cep, "CREDIT_CARD": card(rng),
                  "IP_ADDRESS": ip, "IBAN_CODE": iban, "PERSON": name}
        kind = rng.choice(["pt_form", "pt_mail", "en_mail", "pt_ticket"])
        if kind == "pt_form":
            text = (f"Cadastro do colaborador {values['PERSON']}: CPF {values['CPF']}, "
                    f"telefone {values['PHONE_NUMBER']}, CEP {values['CEP']}, e-mail "
                    f"{values['EMAIL_ADDRESS']}. Empresa contratante CNPJ {values['CNPJ']}.")
            keys = ["PERSON", "CPF", "PHONE_NUMBER", "CEP", "EMAIL_ADDRESS", "CNPJ"]
        elif kind == "pt_mail":
            text = (f"Olá, equipe. Segue o reembolso de {values['PERSON']}. O pagamento foi "
                    f"feito com o cartão {values['CREDIT_CARD']} e o comprovante vai para "
                    f"{values['EMAIL_ADDRESS']}. Qualquer dúvida, ligue {values['PHONE_NUMBER']}.")
            keys = ["PERSON", "CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER"]
        elif kind == "en_mail":
            text = (f"Hi team, {values['PERSON']} asked for a wire transfer to IBAN "
                    f"{values['IBAN_CODE']}. The request came from IP {values['IP_ADDRESS']} "
                    f"and the confirmation went to {values['EMAIL_ADDRESS']}.")
            keys = ["PERSON", "IBAN_CODE", "IP_ADDRESS", "EMAIL_ADDRESS"]
        else:
            text = (f"Chamado 4821: o usuário com CPF {values['CPF']} não consegue acessar o "
                    f"portal a partir do IP {values['IP_ADDRESS']}. Contato: "
                    f"{values['PHONE_NUMBER']}. Nenhum outro dado foi informado; o prazo de "
                    f"atendimento é de 48 horas.")
            keys = ["CPF", "IP_ADDRESS", "PHONE_NUMBER"]
        out.append((text, [(k, values[k]) for k in keys]))
    return out


def pii(n: int) -> None:
    docs = pii_set(n)
    stats: dict[str, list[int]] = {}  # entity -> [tp, fp, fn]
    for text, gold in docs:
        found = [(f.entity, f.value.strip()) for f in find(text)]
        for ent, val in gold:
            s = stats.setdefault(ent, [0, 0, 0])
            hit = any(e == ent and (v in val or val in v) for e, v in found)
            s[0 if hit else 2] += 1
        for ent, val in found:
            if not any(e == ent and (v in val or val in v) for e, v in gold):
                stats.setdefault(ent, [0, 0, 0])[1] += 1
    print("| entity | precision | recall | n |")
    print("|---|---|---|---|")
    total = [0, 0, 0]
    for ent, (tp, fp, fn) in sorted(stats.items()):
        total = [a + b for a, b in zip(total, (tp, fp, fn), strict=True)]
        print(f"| {ent} | {tp / (tp + fp) if tp + fp else 0:.3f} | "
              f"{tp / (tp + fn) if tp + fn else 0:.3f} | {tp + fn} |")
    tp, fp, fn = total
    print(f"| all | {tp / (tp + fp):.3f} | {tp / (tp + fn):.3f} | {tp + fn} |")


def latency(data: Path, settings: Settings) -> None:
    xs = [r["prompt"] for r in rows(data / "prompt-injection" / "xstest" /
                                    "xstest_prompts.csv")][:200]
    answer = ("O prazo para enviar os comprovantes é de 30 dias corridos após a despesa [1]. "
              "Envie pelo portal de reembolso com a nota fiscal anexada [2].")
    source = "Os comprovantes devem ser enviados em até 30 dias corridos após a despesa."
    spec = {"input": ["size", "pii", "injection", "harmful",
                      {"topics": {"deny": ["politics", "medical-advice"]}}],
            "output": ["pii", "toxicity", "grounding", "canary"]}
    with Alicerce(Settings.load(**{**settings.model_dump(), "guards": spec})) as alc:
        alc.warm_guards()
        guards = alc.guards()
        times: dict[str, list[float]] = {}
        for text in xs:
            for v in guards.input.run(text, Context(text), stop=False).verdicts:
                times.setdefault(v.rail, []).append(v.latency_ms)
        ctx = Context("q", "pt", [source], "You answer questions.", alc.canary)
        for _ in range(200):
            for v in guards.output.run(answer, ctx, stop=False).verdicts:
                times.setdefault("out:" + v.rail, []).append(v.latency_ms)
    print("| rail | p50 ms | p99 ms | n |")
    print("|---|---|---|---|")
    for rail, values in times.items():
        q = statistics.quantiles(values, n=100)
        print(f"| {rail} | {statistics.median(values):.2f} | {q[98]:.2f} | {len(values)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--parts", default="injection,xstest,toxicity,pii,latency")
    ap.add_argument("--pii-docs", type=int, default=400)
    ap.add_argument("--home", type=Path, default=Path("/tmp/alicerce-bench-guards"))
    args = ap.parse_args()
    if not (args.data / "prompt-injection").is_dir():
        sys.exit(f"no benchmark data under {args.data}; pass --data ../shared/data")
    settings = Settings.load(home=args.home)
    for part in args.parts.split(","):
        print(f"\n## {part}")
        t0 = time.perf_counter()
        if part == "pii":
            pii(args.pii_docs)
        else:
            {"injection": injection, "xstest": xstest, "toxicity": toxicity,
             "latency": latency}[part](args.data, settings)
        print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
