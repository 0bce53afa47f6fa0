"""App cards: an app version's documentation, generated from what the platform recorded
about it (not written by hand, so it cannot drift from what is served).

A card says what the app is for (the spec's `use_case`), what answers (models with their
licences and weight hashes, the adapter, prompt versions, collections and their versions,
the rails), how it measured (the latest evaluation, red-team, fairness and drift results with
their dates), its known limits (the abstention rate in traffic and in evaluation, the languages of
the latest evaluation's questions), and who deployed it when. Markdown and HTML, with a
stable section order so two versions' cards diff line by line.
"""

from __future__ import annotations

import difflib
import html
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alicerce.generate.models import BUNDLED
from alicerce.language import detect
from alicerce.observe.drift_runs import NOT_TRAFFIC

if TYPE_CHECKING:
    from alicerce.platform import Alicerce

# Licences of what Alicerce ships (their model cards); anything else is the owner's to state.
LICENCES = {"qwen-1.5b": "Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct)",
            "qwen-0.5b": "Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct)",
            "smollm2-135m": "Apache-2.0 (SmolLM2-135M-Instruct)",
            "e5-small": "MIT (multilingual-e5-small)",
            "minilm": "Apache-2.0 (all-MiniLM-L6-v2)",
            "hashing": "none (feature hashing, no weights)"}
UNKNOWN = "not recorded: see the model's own card"


@dataclass(frozen=True)
class Card:
    ref: str
    description: str
    use_case: dict[str, Any]
    deployed: str  # when and by whom
    labels: list[str]
    models: list[dict[str, str]]  # name, role, identity, licence
    prompts: list[str]
    collections: list[dict[str, Any]]
    rails: list[str]
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    limits: dict[str, Any] = field(default_factory=dict)


def _licence(name: str) -> str:
    """`hashing-256` is `hashing`: a name with its size is still the shipped model."""
    return LICENCES.get(name) or LICENCES.get(name.rsplit("-", 1)[0]) or UNKNOWN


def _identity(model: str, recorded: str) -> str:
    """The weights' sha256: recorded at compile time when the model was loaded, else the
    bundled file's (known without loading it)."""
    if recorded:
        return recorded
    bundled = BUNDLED.get(model)
    return f"sha256:{bundled.sha256}" if bundled else "not recorded"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


FAIRNESS_SHOWN = ("changed", "changed_over_control", "abstention_diff", "refusal_diff")


def _shown(kind: str, metric: str) -> bool:
    """A fairness run's headline figures per attribute; its per-group rates stay in its
    report."""
    return kind != "fairness" or (metric.rsplit(".", 1)[-1] in FAIRNESS_SHOWN and \
        metric.count(".") <= 1)


def build(alc: Alicerce, ref: str) -> Card:
    """The card of the version `ref` names (`NAME`, `NAME@N`, `NAME@LABEL`)."""
    v = alc.apps.get(ref)
    plan = alc.chains.plan(v)
    lineage = alc.chains.lineage(v, plan)
    models = [{"name": str(s["model"]), "role": f"step {sid} ({s['kind']})",
               "identity": _identity(str(s["model"]), str(s.get("model_identity") or "")),
               "licence": _licence(str(s["model"]))}
              for sid, s in lineage.get("steps", {}).items() if s.get("model")]
    prompts = sorted({str(s["prompt"]) for s in lineage.get("steps", {}).values()
                      if s.get("prompt")})
    infos = {c.name: c for c in alc.collections()}
    collections = []
    for name in alc.app_collections(v.ref):
        c = infos.get(name)
        collections.append({"name": name, "version": c.version if c else "missing",
                            "documents": c.documents if c else 0,
                            "embedder": c.embedder if c else "-",
                            "embedder_licence": _licence(c.embedder if c else "")})
    runs = alc.evals.runs.list(v.name, app_version=v.version, limit=200)
    latest: dict[str, Any] = {}
    for r in runs:  # newest first: keep the first of each kind
        latest.setdefault(r.kind, r)
    evaluations = [{"kind": k, "id": r.id, "when": _when(r.at),
                    "dataset": f"{r.dataset}@{r.dataset_version}", "rows": r.rows,
                    "metrics": {m: f"{e.mean:.3f} [{e.low:.3f}, {e.high:.3f}]"
                                for m, e in sorted(r.summary.items()) if _shown(r.kind, m)}}
                   for k, r in sorted(latest.items())]
    drifts = alc.drift_runs.history(v.name, 1)
    drift = ({"id": drifts[0].id, "when": _when(drifts[0].at), "baseline": drifts[0].baseline,
              "window": drifts[0].window, "drifted": drifts[0].drifted} if drifts else None)
    live, abstained = alc.traces.abstentions(v.name, v.version, NOT_TRAFFIC)
    ev = latest.get("run")
    # the latest evaluation's questions only: loading every run's rows cost a read per run
    measured = sorted({detect(x.question)
                       for x in (alc.evals.runs.get(ev.id).results[:200] if ev else [])})
    limits = {"abstention_in_traffic": (f"{abstained / live:.1%} of {live} answers"
                                        if live else "no traffic recorded"),
              "abstention_in_evaluation": (ev.summary["answer.abstained"].mean
                                           if ev and "answer.abstained" in ev.summary
                                           else None),
              "languages_evaluated": measured or ["none: not evaluated"]}
    guards = v.spec.get("guards", {})
    rails = [f"{stage}: {r['rail']} ({r['action']})" for stage in ("input", "context", "output")
             for r in guards.get(stage, []) if isinstance(r, dict)]
    return Card(v.ref, str(v.spec.get("description", "")), dict(v.spec.get("use_case", {})),
                f"{v.created_at} by {v.created_by}", list(v.labels), models, prompts,
                collections, rails, evaluations, drift, limits)


def markdown(c: Card) -> str:
    out = [f"# App card: {c.ref}", "", c.description or "(no description)", "",
           f"Deployed {c.deployed}; labels: {', '.join(c.labels) or '-'}.", "",
           "## Use case"]
    uc = c.use_case
    out += [f"- Actors: {', '.join(uc.get('actors', [])) or '-'}",
            f"- Main flow: {'; '.join(uc.get('main_flow', [])) or '-'}",
            f"- Constraints: {'; '.join(uc.get('constraints', [])) or '-'}",
            f"- Latency budget: {uc.get('latency_budget_ms') or '-'} ms",
            "- Non-functional: " + (", ".join(f"{k}={v}" for k, v in
                                              uc.get("non_functional", {}).items()) or "-"),
            "", "## Models"]
    out += [f"- {m['name']} ({m['role']}): licence {m['licence']}; weights {m['identity']}"
            for m in c.models] or ["- none"]
    out += ["", "## Prompts"] + [f"- {p}" for p in c.prompts] + ["", "## Collections"]
    out += [f"- {x['name']} version {x['version']}: {x['documents']} documents, embedder "
            f"{x['embedder']} (licence {x['embedder_licence']})" for x in c.collections]
    out += ["", "## Rails", "- " + (", ".join(c.rails) or "none configured"), "",
            "## Measured"]
    for e in c.evaluations:
        out.append(f"- {e['kind']} {e['id']} on {e['dataset']} ({e['rows']} rows), "
                   f"{e['when']}:")
        out += [f"  - {m}: {v}" for m, v in e["metrics"].items()]
    if not c.evaluations:
        out.append("- not evaluated yet (`alicerce eval run --app " + c.ref + "`)")
    d = c.drift
    out.append(f"- drift {d['id']} ({d['baseline']}, window {d['window']}), {d['when']}: "
               + ("drifted" if d["drifted"] else "stable") if d else "- no drift run yet")
    lim = c.limits
    out += ["", "## Known limits",
            f"- Abstention in traffic: {lim['abstention_in_traffic']}",
            "- Abstention in evaluation: " + (f"{lim['abstention_in_evaluation']:.1%}"
                                               if lim["abstention_in_evaluation"] is not None
                                               else "not measured"),
            f"- Languages evaluated: {', '.join(lim['languages_evaluated'])}", ""]
    return "\n".join(out)


def to_html(c: Card) -> str:
    """The Markdown's lines as escaped HTML (headings, lists, paragraphs): no library,
    since the card's Markdown uses only these three forms."""
    body = []
    for line in markdown(c).splitlines():
        text = html.escape(line.lstrip("#- ").strip())
        if line.startswith("## "):
            body.append(f"<h2>{text}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{text}</h1>")
        elif line.startswith("  - "):
            body.append(f"<li class='sub'>{text}</li>")
        elif line.startswith("- "):
            body.append(f"<li>{text}</li>")
        elif line.strip():
            body.append(f"<p>{text}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(c.ref)}</title><style>body{{font-family:system-ui;max-width:52em;"
            "margin:2em auto}} li.sub{{margin-left:2em}}</style></head><body>"
            + "\n".join(body) + "</body></html>")


def diff(a: Card, b: Card) -> str:
    return "".join(difflib.unified_diff(markdown(a).splitlines(keepends=True),
                                        markdown(b).splitlines(keepends=True),
                                        fromfile=a.ref, tofile=b.ref))
