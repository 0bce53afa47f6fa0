"""Helpers for tests that start real servers (alicerce serve, mlflow server) as processes."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


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
