"""The OpenAI-compatible backend against a real llama.cpp server, through the real client."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings
from alicerce.errors import GeneratorError
from alicerce.generate import DecodingParams, get_generator
from alicerce.generate.models import BUNDLED, materialise
from alicerce.types import Message

pytestmark = pytest.mark.real
KEY = "test-key-123"
Q = [Message("user", "Write a short story about a cat who lives in a library.")]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = materialise(BUNDLED["smollm2-135m"], tmp_path_factory.mktemp("cache"))
    proc = subprocess.Popen([sys.executable, "-m", "alicerce.testing.llm_server", str(path),
                             KEY], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("http://127.0.0.1:"), line
    yield line
    proc.kill()
    proc.wait()


def settings(home: Path, url: str, key_env: str = "ALICERCE_TEST_LLM_KEY") -> Settings:
    return Settings.load(home=home, embedder="hashing", abstain_below=0.0,
                         models={"local": {"url": url, "model": "served-model",
                                           "api_key_env": key_env}})


@pytest.fixture
def gen(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALICERCE_TEST_LLM_KEY", KEY)
    return get_generator("local", settings(tmp_path, url))


def test_complete_stream_and_usage(gen) -> None:  # type: ignore[no-untyped-def]
    p = DecodingParams(max_tokens=10, temperature=0)
    out = gen.complete(Q, p)
    assert gen.backend == "openai" and out.usage.completion_tokens == 10
    assert out.finish_reason == "length"
    deltas = list(gen.stream(Q, p))
    assert "".join(d.text for d in deltas) == out.text
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 10


def test_sampling_extras_travel_and_work(gen) -> None:  # type: ignore[no-untyped-def]
    greedy = gen.complete(Q, DecodingParams(max_tokens=16, temperature=0)).text
    top1 = gen.complete(Q, DecodingParams(max_tokens=16, temperature=1.5, top_k=1, seed=4))
    assert top1.text == greedy
    seeded = [gen.complete(Q, DecodingParams(max_tokens=16, temperature=1.5, seed=9)).text
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    out = gen.complete(Q, DecodingParams(max_tokens=8, temperature=1.0, n=2, logprobs=True,
                                         top_logprobs=2, repetition_penalty=1.3, min_p=0.05))
    assert len(out.choices) == 2 and len(out.choices[0].logprobs) == 8
    assert len(out.choices[0].logprobs[0].top) == 2


def test_json_schema_and_bullets(gen) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
              "required": ["city"], "additionalProperties": False}
    out = gen.complete([Message("user", "Name a city.")],
                       DecodingParams(max_tokens=30, temperature=0, format="json",
                                      json_schema=schema))
    assert set(json.loads(out.text)) == {"city"}
    bullets = gen.complete([Message("user", "Name three fruits.")],
                           DecodingParams(max_tokens=40, temperature=0, format="bullets"))
    assert all(ln.startswith("- ") for ln in bullets.text.splitlines())


def test_wrong_key_and_dead_server_are_generator_errors(url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICERCE_BAD_KEY", "wrong")
    bad = get_generator("local", settings(tmp_path, url, "ALICERCE_BAD_KEY"))
    with pytest.raises(GeneratorError, match="failed"):
        bad.complete(Q, DecodingParams(max_tokens=2))
    dead = get_generator("local", settings(tmp_path, "http://127.0.0.1:9/v1"))
    with pytest.raises(GeneratorError) as exc:
        dead.complete(Q, DecodingParams(max_tokens=2))
    assert "server is running" in exc.value.hint


def test_ask_through_the_remote_model(url: str, tmp_path: Path, docs: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICERCE_TEST_LLM_KEY", KEY)
    with Alicerce(settings(tmp_path / "h", url)) as alc:
        alc.ingest([docs], "kb")
        a = alc.ask("How long do I have to send receipts?", "kb", model="local",
                    params={"max_tokens": 40, "temperature": 0})
        assert a.versions["backend"] == "openai" and a.versions["model"] == "local"
        assert a.text and a.chunks


def test_a_remote_servers_adapter_is_passed_through_as_the_model(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM serves a LoRA under its own model name (--lora-modules NAME=PATH): Alicerce
    sends NAME as the request's model; only the adapters the configuration lists are asked
    for, so a client cannot make up names (or metric labels)."""
    from fastapi.testclient import TestClient

    from alicerce.errors import NotFoundError
    from alicerce.server import create_app

    monkeypatch.setenv("ALICERCE_TEST_LLM_KEY", KEY)
    s = Settings.load(home=tmp_path / "h", embedder="hashing", guards={}, auth=False,
                      models={"local": {"url": url, "model": "served-model",
                                        "api_key_env": "ALICERCE_TEST_LLM_KEY",
                                        "adapters": ["sql-lora"]}})
    with Alicerce(s) as alc:
        gen = alc.generator("local", "sql-lora")
        assert gen.name == "local:sql-lora" and gen.remote_model == "sql-lora"  # type: ignore[attr-defined]
        assert alc.generator("local").remote_model == "served-model"  # type: ignore[attr-defined]
        with pytest.raises(NotFoundError, match="serves no adapter 'other'"):
            alc.generator("local", "other")
        with TestClient(create_app(s, alc)) as client:
            listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
            assert listed["local:sql-lora"]["parent"] == "local"
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            ok = client.post("/v1/chat/completions", json={**body, "model": "local:sql-lora"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["model"] == "local:sql-lora"
            bad = client.post("/v1/chat/completions", json={**body, "model": "local:made-up"})
            assert bad.status_code == 404 and "made-up" not in client.get("/metrics").text
