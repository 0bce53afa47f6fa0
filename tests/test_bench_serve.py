"""The load benchmark at CI size: a live server, concurrent streams, cache and embeddings."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve.py"


def test_load_benchmark_runs_without_errors() -> None:
    r = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("clients")]
    assert len(lines) == 2 and all("errors 0" in ln for ln in lines), r.stdout
    assert "cached answer: p50" in r.stdout and "embeddings, one text" in r.stdout
