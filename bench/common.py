"""Shared helpers for the benchmarks: argument for the data path, timing, printing ratios."""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_dir(arg: str | None, sub: str) -> Path:
    base = Path(arg) if arg else DEFAULT_DATA
    path = base / sub
    if not path.exists():
        print(f"SKIP: benchmark data not found at {path}; pass --data PATH/TO/shared/data")
        sys.exit(0)
    return path


def machine() -> str:
    import os

    return (f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d}")


def ratio(value: float, anchor: float) -> str:
    return f"{value:.3f} ({value / anchor:.3f}x of {anchor})"


@contextlib.contextmanager
def ray_cluster(cpus: int = 2) -> Iterator[str]:
    """A one-node Ray cluster on this machine for the length of a benchmark; its address."""
    import subprocess

    from alicerce.testing.procs import free_port

    port = free_port()
    subprocess.run(["ray", "start", "--head", f"--port={port}", f"--num-cpus={cpus}",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True,
                   capture_output=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()  # leave the cluster before stopping it
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
