"""The tracing benchmark at CI size: overhead against a live server's cached answer, growth,
and every `traces list` filter on a filled table."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
BENCH = Path(__file__).resolve().parents[1] / "bench" / "traces.py"


def test_trace_benchmark_runs(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(BENCH), "--rows", "80000", "--home",
                        str(tmp_path / "h")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "overhead, answer trace: record()" in r.stdout and "cached answer p50" in r.stdout
    assert "overhead, cache hit trace" in r.stdout
    assert "MB per 10,000 traces" in r.stdout
    assert "filled to 80,000 traces" in r.stdout and "slowest filter" in r.stdout
    finds = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("find ")]
    assert len(finds) == 8 and "(50 rows)" in finds[0], r.stdout
