"""Two `alicerce serve` replicas on one PostgreSQL, each with its own home folder, behind a
real nginx running deploy/nginx/alicerce.conf: they behave as one server. A key revoked on
one is refused by the other; a key's rate limit counts requests to both; a trace written by
one is read from the other; an app deployed on one is served by the other; a document
ingested through one is searched on the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from alicerce.testing.procs import nginx, serving

pytestmark = pytest.mark.real
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "alicerce.conf"


def env_for(home: Path, store: str) -> dict[str, str]:
    return {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_STORE": store,
            "ALICERCE_EMBEDDER": "hashing", "ALICERCE_GENERATOR": "smollm2-135m",
            "ALICERCE_ABSTAIN_BELOW": "0", "ALICERCE_LLM_CONTEXT": "2048",
            "ALICERCE_LLM_PARALLEL": "1", "ALICERCE_MAX_TOKENS": "16", "ALICERCE_GUARDS": "{}"}


def cli(env: dict[str, str], *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def call(base: str, path: str, key: str, body: dict[str, Any] | None = None,
         **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    r = (httpx.get(base + path, headers=headers, timeout=300) if body is None and not kw else
         httpx.post(base + path, headers=headers, json=body, timeout=300, **kw))
    return r.status_code, r.json()


def test_two_replicas_behind_nginx_behave_as_one(tmp_path: Path, docs: Path,
                                                pg_url: str) -> None:
    one_env, two_env = (env_for(tmp_path / name, pg_url) for name in ("one", "two"))
    cli(one_env, "ingest", str(docs / "refund.md"), "-c", "kb")
    admin = cli(one_env, "keys", "create", "--name", "admin", "--scopes", "ask,ingest,admin",
                "--rpm", "1000").strip()
    limited = cli(two_env, "keys", "create", "--name", "few", "--rpm", "3").strip()
    doomed = json.loads(cli(one_env, "keys", "create", "--name", "doomed", "--json"))
    with ExitStack() as stack:
        one, _ = stack.enter_context(serving(one_env, tmp_path / "one.log"))
        two, _ = stack.enter_context(serving(two_env, tmp_path / "two.log"))
        proxy = stack.enter_context(nginx(DEPLOY, [one[7:], two[7:]], tmp_path / "nginx"))
        # A key revoked through one replica's database is refused by the other at once.
        assert call(two, "/v1/apps", doomed["key"])[0] == 200
        cli(one_env, "keys", "revoke", doomed["id"])
        status, body = call(two, "/v1/apps", doomed["key"])
        assert status == 401 and "revoked" in body["error"]["message"]
        # One key's limit counts requests to both replicas (3 per minute).
        ask = {"question": "When do I send receipts?"}
        assert call(one, "/v1/apps/kb/ask", limited, ask)[0] == 200
        assert call(two, "/v1/apps/kb/ask", limited, ask)[0] == 200
        assert call(proxy, "/v1/apps/kb/ask", limited, ask)[0] == 200
        status, body = call(proxy, "/v1/apps/kb/ask", limited, ask)
        assert status == 429 and "3 requests per minute" in body["error"]["message"]
        # An app deployed on one is served by the other; its trace is read from the first.
        spec = "name: faq\ncollections: [kb]\ndecoding: {max_tokens: 16}\n"
        assert call(one, "/v1/apps", admin, {"spec": spec})[0] == 201
        status, answer = call(two, "/v1/apps/faq/ask", admin,
                              {"question": "When do I send receipts?"})
        assert status == 200, answer
        deadline = time.monotonic() + 30
        while (got := call(one, f"/v1/traces/{answer['trace_id']}", admin))[0] != 200:
            assert time.monotonic() < deadline, got  # traces are written in the background
            time.sleep(0.3)
        assert (got[1]["app"], got[1]["app_version"]) == ("faq", 1)
        assert got[1]["question"] == "When do I send receipts?"
        # A document ingested through the proxy (either replica) is found by both.
        status, job = call(proxy, "/v1/collections/kb/documents", admin, files={
            "files": ("ferias.txt", (docs / "ferias.txt").read_bytes(), "text/plain")})
        assert status == 202, job
        deadline = time.monotonic() + 60
        while (state := call(proxy, f"/v1/collections/kb/jobs/{job['id']}", admin)[1])[
                "state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        assert state["state"] == "done", state
        for base in (one, two):
            status, listed = call(base, "/v1/collections", admin)
            assert [c["documents"] for c in listed["data"] if c["name"] == "kb"] == [2]
