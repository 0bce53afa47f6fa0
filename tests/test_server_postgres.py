"""The server on a PostgreSQL store: answers from it, and a database that goes away
mid-run makes requests fail fast with 503 and /readyz false, then recover by themselves."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from alicerce import Alicerce, Settings
from alicerce.server import create_app
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.testing.postgres import fresh_database, outage, start_server

REPLY = "Envie os comprovantes em até 30 dias [1]."


def test_a_database_outage_is_503_and_the_server_recovers(tmp_path: Path, docs: Path) -> None:
    data = tmp_path / "pg"
    url = fresh_database(start_server(data))
    settings = Settings.load(home=tmp_path / "srv", embedder="hashing", abstain_below=0.0,
                             generator="fake", guards={}, store=url, auth=False)
    alc = Alicerce(settings)
    alc.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    alc.ingest([docs], "kb")
    question = "How many days to send refund receipts?"
    body = {"model": "kb", "messages": [{"role": "user", "content": question}]}
    with TestClient(create_app(settings, alc)) as client:
        ok = client.post("/v1/chat/completions", json=body)
        assert ok.status_code == 200, ok.text
        cited = ok.json()["alicerce"]["citations"]
        assert cited[0]["source"] == "docs/refund.md"
        assert client.get("/readyz").status_code == 200
        outage(data)
        start = time.monotonic()
        down = client.post("/v1/chat/completions", json=body)
        took = time.monotonic() - start
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "store_unavailable"
        assert down.headers["Retry-After"] == "5"
        assert "PostgreSQL" in down.json()["error"]["message"] and took < 10
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "unreachable" in ready.text
        start_server(data)
        deadline = time.monotonic() + 30
        while (back := client.post("/v1/chat/completions", json=body)).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.5)
        assert back.json()["alicerce"]["citations"] == cited
        assert client.get("/readyz").status_code == 200
    alc.close()
