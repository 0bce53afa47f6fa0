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


@contextmanager
def nginx(site: Path, upstreams: list[str], folder: Path) -> Iterator[str]:
    """A real nginx on a free loopback port running `site` (deploy/nginx/alicerce.conf) with
    its replicas (127.0.0.1:8001, :8002) replaced by `upstreams`; yields its base URL."""
    import shutil

    port = free_port()
    conf = site.read_text().replace("127.0.0.1:8000;", f"127.0.0.1:{port};")
    servers = "".join(f"    server {u} max_fails=2 fail_timeout=10s;\n" for u in upstreams)
    conf = conf.replace("    server 127.0.0.1:8001 max_fails=2 fail_timeout=10s;\n"
                        "    server 127.0.0.1:8002 max_fails=2 fail_timeout=10s;\n", servers)
    assert servers in conf, "deploy/nginx/alicerce.conf no longer lists 8001 and 8002"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.conf").write_text(conf)
    (folder / "nginx.conf").write_text(
        f"worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; client_body_temp_path {folder}/body;\n"
        f"  proxy_temp_path {folder}/proxy; include {folder}/site.conf; }}\n")
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with (folder / "out.log").open("w") as out:
        proc = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                                 "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/healthz", proc, 30)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
