"""Shared helpers for the benchmarks: argument for the data path, timing, printing ratios."""

from __future__ import annotations

import platform
import sys
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
