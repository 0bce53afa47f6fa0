"""Invented details: does the output check (the grounding rail) catch an answer that adds a
page, a figure or a name its sources do not have, and leave a correct answer alone?

    python bench/invented.py [--min 0.5]

The set is built from the sample handbook's 21 golden questions: the sources are the chunks
of the golden source document (as ingested, with its pages, if any); the grounded answer is
the golden reference (8 of 21 are English answers from Portuguese documents); each invented
variant changes one detail of it:
- page: a page the source does not have ("(página 10)" / "(see page 10)"; the HTML, Markdown
  and FAQ sources have no pages at all);
- number: the reference's first figure moved by 7 (or a deadline added when it has none);
- name: a policy, committee or system the documents never mention, named in the sentence.
Reported: the share caught per kind (the rail fires: score under `--min`) and the share of
grounded answers wrongly flagged, with the default rail settings.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from common import machine

from alicerce import Alicerce
from alicerce.guard.base import Context
from alicerce.guard.grounding import GroundingGuard

ROOT = Path(__file__).resolve().parent.parent
_NUMBER = re.compile(r"\d+")
NAMES = {"pt": ("conforme a Política de Viagens Corporativas", "pelo Comitê de Benefícios",
                "no sistema SAP Concur"),
         "en": ("under the Corporate Travel Policy", "as set by the Benefits Committee",
                "in the SAP Concur system")}


def english(question: str) -> bool:
    return question.split()[0] in ("How", "What", "Which", "When", "Who", "Where")


def variants(reference: str, lang: str, i: int) -> dict[str, str]:
    body = reference.rstrip(".")
    page = f"{body} (página 10)." if lang == "pt" else f"{body} (see page 10)."
    m = _NUMBER.search(reference)
    if m:
        number = reference[: m.start()] + str(int(m.group()) + 7) + reference[m.end():]
    else:
        number = f"{body}, em até 12 dias." if lang == "pt" else f"{body}, within 12 days."
    name = f"{body}, {NAMES[lang][i % 3]}."
    return {"page": page, "number": number, "name": name}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--min", type=float, default=0.5)
    a = ap.parse_args()
    alc = Alicerce.open(tempfile.mkdtemp(prefix="alicerce-invented-"))
    alc.ingest([ROOT / "examples/handbook"], "handbook")
    golden = [json.loads(x) for x in (ROOT / "examples/handbook-golden.jsonl")
              .read_text(encoding="utf-8").splitlines() if x.strip()]
    guard = GroundingGuard(min=a.min)
    caught: dict[str, list[bool]] = {"grounded": [], "page": [], "number": [], "name": []}
    misses = []
    for i, item in enumerate(golden):
        lang = "en" if english(item["question"]) else "pt"
        hits = [h for h in alc.search(item["reference"], "handbook", k=60)
                if any(h.doc_key == s or h.doc_key.endswith("/" + s) for s in item["sources"])]
        ctx = Context(item["question"], lang, tuple(h.text for h in hits), "", "",
                      [h.page for h in hits if h.page is not None])
        for kind, text in {"grounded": item["reference"],
                           **variants(item["reference"], lang, i)}.items():
            v = guard.check(text, ctx)
            fired = v.action != "allow"
            caught[kind].append(fired)
            if fired == (kind == "grounded"):
                misses.append(f"  {kind:<8} {v.score:.2f} {text[:90]}  {v.details['unsupported']}")
    print(f"{machine()}; grounding rail min {a.min}; {len(golden)} golden answers")
    for kind, got in caught.items():
        label = "wrongly flagged" if kind == "grounded" else "caught"
        print(f"{kind:<9} {label} {sum(got)}/{len(got)} ({sum(got) / len(got):.2f})")
    print("misses (grounded flagged, invented passed):")
    print("\n".join(misses) or "  none")
    alc.close()


if __name__ == "__main__":
    main()
