"""Chains on the real bundled models: the shipped two-model example end to end through the
CLI, an LLM rerank step scored from log-probabilities, and a batch job killed with
SIGKILL half-way and resumed (no row lost, none run or written twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[1]
REVIEW = ("Comprei a cafeteira há dois meses. Depois de três semanas começou a vazar água pela "
          "base e o café sai morno. O suporte demorou dez dias para responder e só ofereceu "
          "troca se eu pagasse o frete. Não recomendo, foi dinheiro jogado fora.")
TINY_CHAIN = """\
name: tiny
inputs: {text: string}
outputs: {summary: $s.text}
steps:
  - id: s
    kind: generate
    model: smollm2-135m
    prompt: summarise
    inputs: {text: $inputs.text}
    decoding: {temperature: 0, max_tokens: 24}
"""


def test_the_shipped_review_sentiment_chain_end_to_end(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    runner = CliRunner()
    deployed = runner.invoke(cli, ["apps", "deploy", str(ROOT / "examples/chains/"
                                                          "review-sentiment.yaml"),
                                   "--home", home])
    assert deployed.exit_code == 0, deployed.output
    out = runner.invoke(cli, ["apps", "run", "review-sentiment", "--input",
                              json.dumps({"text": REVIEW}), "--json", "--home", home])
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert body["outputs"]["label"] in ("positive", "negative", "neutral")
    assert body["outputs"]["label"] == "negative"  # an unambiguous complaint
    assert 0 <= body["outputs"]["confidence"] <= 1 and body["outputs"]["summary"]
    assert [(s["id"], s["model"]) for s in body["steps"]] == [
        ("summarise", "qwen-1.5b"), ("classify", "qwen-0.5b")]


def test_an_llm_rerank_step_scores_passages_from_log_probabilities(tmp_path: Path) -> None:
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing")) as alc:
        alc.ingest([ROOT / "examples/handbook"], "handbook")
        alc.deploy_app("""\
name: rr
inputs: {question: string}
outputs: {passages: $rerank.passages}
steps:
  - {id: find, kind: retrieve, collections: [handbook], k: 6, inputs: {query: $inputs.question}}
  - id: rerank
    kind: rerank
    reranker: llm
    model: qwen-0.5b
    k: 3
    inputs: {query: $inputs.question, passages: $find.passages}
""")
        r = alc.run_app("rr", {"question": "Quantos dias de férias por ano?"})
        scores = [p["score"] for p in r.outputs["passages"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert any(0.0 < s < 1.0 for s in scores)  # probabilities, not a parsed yes/no
        assert "férias" in r.outputs["passages"][0]["text"].lower()


def test_a_batch_killed_half_way_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    env = {**os.environ, "ALICERCE_HOME": str(tmp_path / "h"), "ALICERCE_EMBEDDER": "hashing"}
    cmd = [sys.executable, "-m", "alicerce"]
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_CHAIN)
    subprocess.run([*cmd, "apps", "deploy", str(spec)], env=env, check=True, timeout=120,
                   capture_output=True)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"text": f"Avaliação {i}: o produto chegou no prazo e "
                                               "funciona bem."}) + "\n" for i in range(14)))
    proc = subprocess.Popen([*cmd, "batch", "run", "--app", "tiny", "--input", str(src),
                             "--output", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (
            not out.exists() or out.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cut = out.read_text().count("\n")
    assert 4 <= cut < 14, "the job should be killed half-way"
    listed = subprocess.run([*cmd, "batch", "list", "--json"], env=env, check=True,
                            capture_output=True, text=True, timeout=60)
    job = json.loads(listed.stdout)[0]
    assert job["status"] == "interrupted"
    resumed = subprocess.run([*cmd, "batch", "resume", job["id"], "--json"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    rows = [json.loads(x)["row"] for x in out.read_text().splitlines()]
    assert sorted(rows) == list(range(1, 15)), "every row exactly once"
    assert final["status"] == "done" and final["request_counts"]["completed"] == 14
    assert final["runs"] == 2


@pytest.mark.minilm
def test_a_cross_encoder_rerank_step_loads_local_weights(tmp_path: Path) -> None:
    """A tiny BERT cross-encoder built here (random weights, our own vocabulary): the step
    loads it from its folder, never from a hub, and orders passages by its scores."""
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = ["férias", "dias", "ano", "reembolso", "comprovantes", "prazo", "horário",
             "quantos", "de", "por", "o", "a"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    folder = tmp_path / "ce"
    BertForSequenceClassification(BertConfig(
        vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=1)).save_pretrained(folder)
    BertTokenizer(str(vocab)).save_pretrained(folder)
    expected = CrossEncoder(str(folder), device="cpu")
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing")) as alc:
        alc.ingest([ROOT / "examples/handbook"], "handbook")
        alc.deploy_app(f"""\
name: ce
inputs: {{question: string}}
outputs: {{passages: $rerank.passages}}
steps:
  - {{id: find, kind: retrieve, collections: [handbook], k: 5,
     inputs: {{query: $inputs.question}}}}
  - {{id: rerank, kind: rerank, reranker: cross-encoder, path: {folder}, k: 5,
     inputs: {{query: $inputs.question, passages: $find.passages}}}}
""")
        question = "Quantos dias de férias por ano?"
        r = alc.run_app("ce", {"question": question})
        got = r.outputs["passages"]
        want = expected.predict([(question, p["text"]) for p in got])
        assert [p["score"] for p in got] == sorted((p["score"] for p in got), reverse=True)
        assert [round(p["score"], 4) for p in got] == [round(float(x), 4) for x in want]
        assert alc.apps.get("ce").spec["chain"]["steps"][1]["model_identity"].startswith(
            "sha256:")
