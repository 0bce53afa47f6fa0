"""The CLI through a real subprocess: exit codes, JSON output, error lines."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing"}
    return subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_ingest_search_collections_eval(tmp_path: Path, docs: Path) -> None:
    home = tmp_path / "h"
    r = run("ingest", str(docs), "--collection", "kb", home=home)
    assert r.returncode == 0, r.stderr
    assert "4 added" in r.stdout
    r = run("search", "guest code", "-c", "kb", "--json", "-k", "1", home=home)
    assert json.loads(r.stdout)[0]["doc_key"] == "q1"
    r = run("search", "almoço", "-c", "kb", "--filter", "area=rh", "--mode", "sparse",
            home=home)
    assert r.returncode == 0 and "Horário" in r.stdout
    r = run("collections", "--json", home=home)
    assert json.loads(r.stdout)[0]["documents"] == 4
    ds = tmp_path / "q.csv"
    ds.write_text("question,document\nguest wifi code,q1\nrefund receipts,docs/refund.md\n")
    r = run("eval", "retrieval", "--collection", "kb", "--dataset", str(ds), "--k", "5",
            "--json", home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["hit_rate"] == 1.0
    r = run("versions", "-c", "kb", home=home)
    assert r.stdout.startswith("#1")


def test_failures_give_exit_status_and_lines(tmp_path: Path, docs: Path) -> None:
    (docs / "bad.pdf").write_bytes(b"%PDF garbage")
    r = run("ingest", str(docs), "-c", "kb", home=tmp_path / "h")
    assert r.returncode == 1
    assert "FAILED" in r.stderr and "bad.pdf" in r.stderr and "4 added" in r.stdout


def test_user_errors_are_one_clear_line(tmp_path: Path, docs: Path) -> None:
    home = tmp_path / "h"
    r = run("search", "x", "-c", "nope", home=home)
    assert r.returncode == 2 and r.stderr.startswith("error: no collection named 'nope'")
    assert "Traceback" not in r.stderr
    run("ingest", str(docs), "-c", "kb", home=home)
    r = run("search", "x", "-c", "kb", "--alpha", "3", home=home)
    assert r.returncode == 2 and "alpha" in r.stderr and "hint:" in r.stderr
    r = run("search", "x", "-c", "kb", "--filter", "novalue", home=home)
    assert r.returncode == 2 and "key=value" in r.stderr
