"""Answer explanations on a real model (SmolLM2 on llama.cpp): the answer's likelihood scored
under the grammar-forced reply, and the planted sentence that holds the answer ranked first,
from the command line as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

DECISIVE = "The guest Wi-Fi password is ZEBRA-7741."
DOC = ("# Office guide\n\nThe office opens at 8 in the morning and closes at 7 in the evening. "
       "Visitors sign in at the reception desk on the ground floor. "
       f"{DECISIVE} Printers are on every floor next to the kitchen. "
       "Lost badges are replaced by the security team within one day.\n")


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing",
           "ALICERCE_GENERATOR": "smollm2-135m", "ALICERCE_ABSTAIN_BELOW": "0",
           "ALICERCE_LLM_CONTEXT": "2048", "ALICERCE_TEMPERATURE": "0"}
    return subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                          text=True, env=env, timeout=600, cwd=home.parent)


def test_the_sentence_holding_the_answer_is_ranked_first(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(DOC, encoding="utf-8")
    home = tmp_path / "h"
    assert run("ingest", "docs", "-c", "kb", home=home).returncode == 0
    r = run("ask", "What is the guest Wi-Fi password?", "-c", "kb", "--json", home=home)
    assert r.returncode == 0, r.stderr
    asked = json.loads(r.stdout)
    assert "7741" in asked["text"], asked["text"]  # the model copied the fact
    r = run("explain", asked["trace_id"], "--budget", "12", "--json", home=home)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["sentences"][0]["text"] == DECISIVE, e["sentences"]
    assert e["sentences"][0]["score"] > 1.0  # nats: the answer is far likelier with it
    assert e["full_logprob"] > e["empty_logprob"]
    assert e["calls"] <= 12 and e["model"] == "smollm2-135m"
    assert e["model_identity"].startswith("sha256:")
    assert e["sources"][0]["relied"]
    # the text a user reads
    r = run("explain", asked["trace_id"], "--budget", "12", home=home)
    assert r.returncode == 0 and "The sentences it rests on most:" in r.stdout
    assert DECISIVE in r.stdout.split("The sentences it rests on most:")[1].splitlines()[1]
    # counterfactuals: without the source the password is gone; an edited question is asked
    r = run("explain", asked["trace_id"], "--counterfactual", "sem a fonte 1", "--json",
            home=home)
    assert r.returncode == 0, r.stderr
    cf = json.loads(r.stdout)
    assert "7741" not in cf["new_answer"] and cf["new_trace_id"] != asked["trace_id"]
    assert any(s["op"] == "delete" and "7741" in s["text"] for s in cf["diff"])
    r = run("explain", asked["trace_id"], "--counterfactual",
            "replace 'guest Wi-Fi password' with 'staff Wi-Fi password'", home=home)
    assert r.returncode == 0, r.stderr
    assert "New question: What is the staff Wi-Fi password?" in r.stdout
    assert "Differences:" in r.stdout
