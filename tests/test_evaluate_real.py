"""The evaluation loop from the command line on a real model (SmolLM2 answers and judges,
grammar-forced JSON): synthesise, run, rerun from the memo, compare, gate, report, pairwise,
models compare, MLflow; and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

GOLDEN = [
    {"question": "How many days do I have to send receipts?", "sources": ["refund.md"],
     "reference": "Send receipts to the finance team within 30 days."},
    {"question": "How many vacation days do employees have?", "sources": ["vacation.md"],
     "reference": "Employees have 25 vacation days per year."},
    {"question": "How far ahead must vacation be requested?", "sources": ["vacation.md"],
     "reference": "45 days in advance, through the HR portal."},
]
SPEC = """name: hr
collections: [kb]
model: smollm2-135m
decoding: {{max_tokens: {tokens}, temperature: 0}}
"""


def run(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing",
            "ALICERCE_GENERATOR": "smollm2-135m", "ALICERCE_ABSTAIN_BELOW": "0",
            "ALICERCE_LLM_CONTEXT": "2048", **env}
    return subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                          text=True, env=full, timeout=600, cwd=home.parent)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("evalreal")
    docs = base / "docs"
    docs.mkdir()
    (docs / "refund.md").write_text(
        "# Refund policy\n\nSend receipts to the finance team within 30 days of the expense. "
        "Taxi and hotel costs are refunded; meals up to 50 euros per day.\n")
    (docs / "vacation.md").write_text(
        "# Vacation\n\nEmployees have 25 vacation days per year. Requests must be made 45 "
        "days in advance through the HR portal.\n")
    (base / "golden.jsonl").write_text("\n".join(json.dumps(r) for r in GOLDEN) + "\n")
    h = base / "h"
    assert run("ingest", "docs", "-c", "kb", home=h).returncode == 0
    for tokens in (48, 6):
        (base / "hr.yaml").write_text(SPEC.format(tokens=tokens))
        r = run("apps", "deploy", "hr.yaml", home=h)
        assert r.returncode == 0, r.stderr
    return h


def test_synthetic_questions_name_their_source_and_generator(home: Path) -> None:
    r = run("eval", "synth", "-c", "kb", "--per-doc", "3", "--to", "synth.jsonl", "--json",
            home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rows"] + len(out["dropped"]) >= 3 and not out["failed"]
    for _question, reason in out["dropped"]:
        assert reason  # every drop says why
    rows = [json.loads(x) for x in (home.parent / "synth.jsonl").read_text().splitlines()]
    assert len(rows) == out["rows"]
    for row in rows:
        assert row["sources"][0] in ("docs/refund.md", "docs/vacation.md")
        assert row["origin"]["generator"] == "smollm2-135m"
        assert row["origin"]["prompt"] == "synth-question@1"
        assert row["origin"]["model_identity"].startswith("sha256:")


def test_run_rerun_compare_gate_report(home: Path) -> None:
    r = run("eval", "run", "--app", "hr@1", "--dataset", "golden.jsonl", "--metrics",
            "retrieval,answer,triad,judge", "--json", home=home, ALICERCE_MLFLOW="true")
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)
    assert a["rows"] == 3 and a["app_version"] == 1 and a["mlflow_run"]
    for metric in ("retrieval.hit_rate", "answer.rougeL", "answer.cosine",
                   "triad.groundedness", "triad.context_relevance", "judge.correctness"):
        assert metric in a["summary"], (metric, a["summary"])
    assert a["summary"]["retrieval.hit_rate"]["mean"] == 1.0  # two tiny documents
    shown = json.loads(run("eval", "show", a["id"], "--json", home=home).stdout)
    for row in shown["results"]:
        assert row["details"]["judge"]["label"] in ("RELEVANT", "PARTLY_RELEVANT",
                                                    "NON_RELEVANT"), row
        assert run("traces", "show", row["trace_id"], home=home).returncode == 0
    traces = len(json.loads(run("traces", "list", "--json", home=home).stdout))

    again = json.loads(run("eval", "run", "--app", "hr@1", "--dataset", "golden.jsonl",
                           "--metrics", "retrieval,answer,triad,judge", "--json",
                           home=home).stdout)
    assert again["summary"] == a["summary"]
    assert len(json.loads(run("traces", "list", "--json", home=home).stdout)) == traces

    r = run("eval", "run", "--app", "hr@2", "--dataset", "golden.jsonl", "--metrics",
            "retrieval,answer", "--json", home=home)
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    cmp = json.loads(run("eval", "compare", a["id"], b["id"], "--json", home=home).stdout)
    assert {m["metric"] for m in cmp["metrics"]} >= {"answer.rougeL", "retrieval.mrr"}
    assert "judge.correctness" in cmp["only_a"]

    ok = run("eval", "gate", b["id"], "--baseline", "production", "--max-drop",
             "retrieval.mrr=0.0,answer.rougeL=1", home=home)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"against {again['id']}" in ok.stdout  # production is hr@1: its newest run
    bad = run("eval", "gate", b["id"], "--baseline", "production", "--max-drop",
              "answer.rougeL=1", "--min", "answer.rougeL=1.01", home=home)
    assert bad.returncode == 1 and "FAIL answer.rougeL is" in bad.stdout, bad.stdout

    r = run("eval", "report", b["id"], "--vs", a["id"], "--html", "report.html", home=home)
    assert r.returncode == 0, r.stderr
    page = (home.parent / "report.html").read_text()
    assert page.count("<svg") >= 3 and a["id"] in page and "How many vacation days" in page


def test_pairwise_and_models_compare(home: Path) -> None:
    r = run("eval", "pairwise", "--app", "hr@1", "--vs", "hr@2", "--dataset", "golden.jsonl",
            "--limit", "2", "--json", home=home)
    assert r.returncode == 0, r.stderr
    pw = json.loads(r.stdout)
    assert pw["kind"] == "pairwise" and pw["rows"] == 2
    for row in pw["results"]:
        assert row["details"]["winner"] in ("A", "B", "TIE")
        assert len(row["details"]["orders"]) == 2 and row["details"]["explanation"]
    r = run("models", "compare", "--dataset", "golden.jsonl", "--models", "smollm2-135m",
            "-c", "kb", "--limit", "2", "--json", home=home)
    assert r.returncode == 0, r.stderr
    (report,) = json.loads(r.stdout)
    assert report["model"] == "smollm2-135m" and report["latency_p50_ms"] > 0
    assert report["tokens_per_s"] > 0 and report["cpu_s_per_1k"] > 0
    assert "answer.rougeL" in report["quality"] and report["price_per_1k"] is None


@pytest.mark.parametrize(("args", "says"), [
    (("eval", "run", "-a", "hr", "--dataset", "nope.jsonl"), "dataset nope.jsonl not found"),
    (("eval", "run", "-a", "hr", "--dataset", "golden.jsonl", "--metrics", "vibes"),
     "unknown metric group(s): vibes"),
    (("eval", "run", "-a", "ghost@1", "--dataset", "golden.jsonl"), "no app named 'ghost'"),
    (("eval", "gate", "ev-nope", "--min", "answer.f1=0.1"), "no evaluation run 'ev-nope'"),
    (("eval", "gate", "ev-nope", "--max-drop", "answer.f1"), "bad limit 'answer.f1'"),
    (("models", "compare", "--dataset", "golden.jsonl", "--models", "gpt-9", "-c", "kb"),
     "unknown model"),
])
def test_bad_input_exits_2_with_a_hint(home: Path, args: tuple[str, ...], says: str) -> None:
    r = run(*args, home=home)
    assert r.returncode == 2 and says in r.stderr and "hint:" in r.stderr, r.stderr
