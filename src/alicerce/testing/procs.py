"""Helpers for tests that start real servers (alicerce serve, mlflow server) as processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A local port nobody listens on (also what an 'unreachable' endpoint test needs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    """Poll `url` until it answers 200; fail early if the process exits."""
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:  # not listening yet, or busy loading
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server behind {url} exited with {proc.returncode}")
        if time.time() > deadline:
            raise TimeoutError(f"{url} did not answer in {timeout_s:.0f} s")
        time.sleep(0.5)


@contextmanager
def serving(env: dict[str, str], log: Path,
            *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A live `alicerce serve` on a free loopback port: (base URL, process), ready."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "alicerce", "serve", "--port", str(port),
                                 "--log-level", "warning", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_up(base + "/readyz", proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(log.read_text()) from exc
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
