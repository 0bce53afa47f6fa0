"""ask, chat, generate, prompts and models through a real subprocess, on the small model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real


def run(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing",
           "ALICERCE_GENERATOR": "smollm2-135m", "ALICERCE_ABSTAIN_BELOW": "0",
           "ALICERCE_LLM_CONTEXT": "2048"}
    return subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                          text=True, env=env, timeout=300, input=stdin)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("cli") / "h"
    docs = h.parent / "docs"
    docs.mkdir()
    (docs / "refund.md").write_text("# Refund policy\n\nSend receipts within 30 days.\n")
    assert run("ingest", str(docs), "-c", "kb", home=h).returncode == 0
    return h


def test_ask_json_and_stream(home: Path) -> None:
    r = run("ask", "How long do I have to send receipts?", "-c", "kb", "--json",
            "--max-tokens", "30", "-t", "0", "--seed", "1", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"] and out["versions"]["model"] == "smollm2-135m"
    assert out["versions"]["decoding"]["max_tokens"] == 30 and out["language"] == "en"
    assert out["chunks"][0]["doc_key"] == "docs/refund.md"
    r = run("ask", "How long do I have to send receipts?", "-c", "kb", "--stream",
            "--max-tokens", "30", "-t", "0", "--logprobs", "--top-logprobs", "2", home=home)
    assert r.returncode == 0, r.stderr
    assert "Token likelihood:" in r.stdout


def test_bad_input_exits_2_with_a_hint(home: Path) -> None:
    for args, needle in [
        (("ask", "x", "-c", "kb", "--temperature", "-1"), "temperature must be"),
        (("ask", "x", "-c", "kb", "--top-p", "1.5"), "top_p must be"),
        (("ask", "x", "-c", "kb", "--model", "gpt-9"), "unknown model"),
        (("ask", "x", "-c", "kb", "--prompt", "rag-answer@9"), "no prompt rag-answer@9"),
        (("ask", "", "-c", "kb"), "question is empty"),
        (("ask", "x", "-c", "kb", "--num-beams", "2"), "beam search"),
        (("generate", "x", "--format", "json", "--schema", "/nonexistent.json"), "cannot read"),
    ]:
        r = run(*args, home=home)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr and "hint:" in r.stderr, (args, r.stderr)


def test_generate_with_schema_and_examples(home: Path, tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"answer": {
        "type": "string", "maxLength": 40}}, "required": ["answer"]}))
    r = run("generate", "What is 2+2?", "--schema", str(schema), "--max-tokens", "40",
            "-t", "0", home=home)
    assert r.returncode == 0, r.stderr
    assert "answer" in json.loads(r.stdout)
    ex = tmp_path / "ex.jsonl"
    ex.write_text('{"input": "Bom dia", "output": "Good morning"}\n'
                  '{"input": "Obrigado", "output": "Thank you"}\n')
    r = run("generate", "Boa noite", "--technique", "k-shot", "--examples", str(ex), "-k", "1",
            "--max-tokens", "8", "-t", "0", "--n", "2", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["technique"] == "k-shot" and len(out["candidates"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x"}\n')
    r = run("generate", "x", "--technique", "k-shot", "--examples", str(bad), home=home)
    assert r.returncode == 2 and "'input' and 'output'" in r.stderr


def test_chat_keeps_the_conversation(home: Path) -> None:
    r = run("chat", "-c", "kb", "--max-tokens", "20", "-t", "0", home=home,
            stdin="What should I send?\nWithin how many days?\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert "conversation" in r.stderr
    cid = r.stderr.strip().splitlines()[-1].split()[-1].rstrip(")")
    r = run("chat", "-c", "kb", "--conversation", cid, "--message", "And for taxis?", "--json",
            "--max-tokens", "20", "-t", "0", home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["standalone_question"]


def test_prompts_lifecycle(home: Path, tmp_path: Path) -> None:
    t = tmp_path / "t.j2"
    t.write_text("Responda: {{ question }}")
    r = run("prompts", "create", "mine", "--file", str(t), "--label", "staging", home=home)
    assert r.returncode == 0 and r.stdout.startswith("mine@1"), r.stderr
    t.write_text("Responda em uma frase: {{ question }}")
    assert run("prompts", "create", "mine", "--file", str(t), home=home).stdout.startswith(
        "mine@2")
    assert run("prompts", "label", "mine@2", "production", home=home).returncode == 0
    r = run("prompts", "show", "mine", "--json", home=home)
    assert json.loads(r.stdout)["version"] == 2 and json.loads(r.stdout)["variables"] == [
        "question"]
    r = run("prompts", "diff", "mine@1", "mine@production", home=home)
    assert "+Responda em uma frase" in r.stdout
    r = run("prompts", "list", home=home)
    assert "mine" in r.stdout and "rag-answer" in r.stdout
    r = run("prompts", "history", "mine", home=home)
    assert "staging: - -> @1" in r.stdout and "production: - -> @2" in r.stdout
    t.write_text("{% if %}")
    r = run("prompts", "create", "mine", "--file", str(t), home=home)
    assert r.returncode == 2 and "line 1" in r.stderr


def test_models_lists_the_bundled_ones(home: Path) -> None:
    r = run("models", "--json", home=home)
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"qwen-1.5b", "qwen-0.5b", "smollm2-135m"} <= set(rows)
    assert rows["smollm2-135m"]["installed"] and rows["smollm2-135m"]["default"]


def test_waiting_shows_progress_on_a_terminal_only(home: Path) -> None:
    """Issue 16 item 12: the first ask was silent for ~80 s. On a terminal, a spinner names
    each stage; into a pipe nothing is drawn."""
    import pty
    import select

    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing",
           "ALICERCE_GENERATOR": "smollm2-135m", "ALICERCE_ABSTAIN_BELOW": "0",
           "ALICERCE_LLM_CONTEXT": "2048", "TERM": "xterm", "COLUMNS": "120"}
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "alicerce", "ask", "How long for receipts?",
                             "-c", "kb", "--max-tokens", "20"], env=env,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        seen += data
    proc.wait(timeout=120)
    os.close(master)
    shown = seen.decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "loading the model smollm2-135m" in shown
    assert "searching the documents" in shown
    piped = run("ask", "How long for receipts?", "-c", "kb", "--max-tokens", "20", home=home)
    assert piped.returncode == 0 and "loading the model" not in piped.stderr
