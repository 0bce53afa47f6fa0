"""Adapters in apps: `adapter:` is pinned at deploy (to NAME@N and its hash), refused for an
adapter of another caller, one llama.cpp cannot run or one trained on other weights; a real
LoRA on SmolLM2-135M, converted, changes llama.cpp's output the same way it changes
PyTorch's, and an app answers with it, its version in the trace's lineage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings
from alicerce.errors import InputError, NotFoundError
from alicerce.generate.models import model_identity
from alicerce.testing.lora import random_lora
from alicerce.tune.registry import GGUF_FILE, Lineage

APP = """
name: rh
collections: [kb]
model: smollm2-135m
adapter: {adapter}
retrieval: {{abstain_below: 0.0}}
decoding: {{max_tokens: 16, temperature: 0.0}}
"""


def adapter_folder(folder: Path, gguf: bytes | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(b"w" + (gguf or b""))
    if gguf is not None:
        (folder / GGUF_FILE).write_bytes(b"GGUF" + gguf)  # the magic; never loaded here
    return folder


def lineage(settings: Settings, base_identity: str | None = None,
            method: str = "lora") -> Lineage:
    return Lineage("smollm2-135m", base_identity or model_identity("smollm2-135m", settings),
                   method, "tune-1", "v1", {}, {})


def test_deploy_pins_the_adapter_and_refuses_what_cannot_serve(
        alc: Alicerce, settings: Settings, docs: Path, tmp_path: Path) -> None:
    alc.ingest([docs], "kb", sync=True)
    alc.adapters.register("rh-style", adapter_folder(tmp_path / "a", b"g1"),
                          lineage(settings), "ana")
    two = alc.adapters.register("rh-style", adapter_folder(tmp_path / "b", b"g2"),
                                lineage(settings), "ana")
    alc.adapters.label("rh-style@1", "production", "ana")
    version, _ = alc.deploy_app(APP.format(adapter="rh-style@production"), actor="ana")
    assert version.spec["model"]["adapter"] == "rh-style@1"
    assert version.spec["model"]["adapter_identity"].startswith("sha256:")
    # the label moved: deploying the same YAML again pins the new version (a new app version)
    alc.adapters.label("rh-style@2", "production", "ana")
    again, created = alc.deploy_app(APP.format(adapter="rh-style@production"), actor="ana")
    assert created and again.spec["model"]["adapter"] == two.ref
    # another caller cannot name it
    with pytest.raises(NotFoundError, match="no adapter 'rh-style@production'"):
        alc.deploy_app(APP.format(adapter="rh-style@production"), actor="bruno")
    # trained on other weights
    alc.adapters.register("other", adapter_folder(tmp_path / "c", b"g3"),
                          lineage(settings, "sha256:" + "0" * 64), "ana")
    with pytest.raises(InputError, match="was trained on smollm2-135m") as err:
        alc.deploy_app(APP.format(adapter="other"), actor="ana")
    assert "app 'rh': adapter" in err.value.message
    # (IA)3: no llama.cpp form
    alc.adapters.register("ia3", adapter_folder(tmp_path / "d", None),
                          lineage(settings, method="ia3"), "ana")
    with pytest.raises(InputError, match=r"ia3@1 \(ia3\) does not run on llama.cpp"):
        alc.deploy_app(APP.format(adapter="ia3"), actor="ana")
    # a chain step names one the same way
    chain = """
name: summary
inputs: {text: string}
outputs: {summary: $s.text}
steps:
  - {id: s, kind: generate, prompt: summarise, model: smollm2-135m, adapter: other,
     inputs: {text: $inputs.text}}
"""
    with pytest.raises(InputError, match="step 's', adapter: adapter other@1 was trained"):
        alc.deploy_app(chain, actor="ana")


needs_tune = pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                                reason="the tune extra: pip install 'alicerce[tune]'")


@pytest.mark.real
@needs_tune
def test_a_converted_lora_changes_llama_cpp_as_it_changes_pytorch(
        alc: Alicerce, settings: Settings, docs: Path, tmp_path: Path) -> None:
    import torch

    folder = tmp_path / "lora"
    _, tok, peft = random_lora(settings, folder, ["q_proj", "k_proj", "v_proj", "o_proj"])
    question = "What is the capital of France?"
    ids = tok.apply_chat_template([{"role": "user", "content": question}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)

    def greedy() -> str:
        with torch.no_grad():
            out = peft.generate(**ids, max_new_tokens=12, do_sample=False)
        return str(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))

    torch_lora = greedy()
    with peft.disable_adapter():
        torch_base = greedy()
    assert torch_lora != torch_base
    adapter = alc.adapters.register("rand", folder, lineage(settings))
    plain = alc.generate(question, model="smollm2-135m", params={"max_tokens": 12,
                                                                  "temperature": 0.0})
    adapted = alc.generator("smollm2-135m", adapter.ref)
    assert adapted.name == "smollm2-135m:rand@1"
    from alicerce.generate.params import DecodingParams
    from alicerce.types import Message

    cpp_lora = adapted.complete([Message("user", question)],
                                DecodingParams.build(max_tokens=12, temperature=0.0)).text
    # the same first words as PyTorch with the adapter (later tokens may split on numeric
    # ties: llama.cpp computes on the quantised weights), and not the base's
    assert cpp_lora.split()[:4] == torch_lora.split()[:4], (cpp_lora, torch_lora)
    assert cpp_lora.strip() != plain.text.strip()
    # an app answers with it, the adapter's version in the trace
    alc.ingest([docs], "kb", sync=True)
    alc.deploy_app(APP.format(adapter="rand"))
    answer = alc.ask("How many days to send receipts?", "rh")
    trace = alc.traces.get(answer.trace_id)
    assert trace.lineage["adapter"] == "rand@1"
    assert trace.lineage["adapter_identity"] == f"sha256:{adapter.hash}"
    assert trace.lineage["model"] == "smollm2-135m:rand@1"
    generate = next(s for s in trace.spans if s["name"] == "generate")
    assert generate["attrs"]["model"] == "smollm2-135m:rand@1"


@pytest.mark.real
@needs_tune
def test_the_openai_api_serves_an_adapter_named_after_its_base(
        settings: Settings, tmp_path: Path) -> None:
    """vLLM's convention: `model="BASE:ADAPTER"`, listed by /v1/models with its parent; a
    key is served its own adapters and the operator's; an unknown one is a 404 that leaves
    no metric series behind."""
    from fastapi.testclient import TestClient

    from alicerce.server import create_app

    folder = tmp_path / "lora"
    random_lora(settings, folder, ["q_proj", "v_proj"])
    served = Settings.load(home=settings.home, embedder="hashing", guards={})
    alc = Alicerce(served)
    alc.adapters.register("rand", folder, lineage(served))  # the operator's (CLI) adapter
    _, analyst = alc.keys.create("analyst", ["ask", "models", "unguarded"])
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 12, "temperature": 0.0}
    with TestClient(create_app(served, alc)) as client:
        auth = {"Authorization": f"Bearer {analyst}"}
        listed = {m["id"]: m for m in client.get("/v1/models", headers=auth).json()["data"]}
        assert listed["smollm2-135m:rand"]["parent"] == "smollm2-135m"
        assert listed["smollm2-135m:rand@1"]["kind"] == "adapter"

        def ask(model: str) -> str:
            r = client.post("/v1/chat/completions", headers=auth, json={**body, "model": model})
            assert r.status_code == 200, r.text
            assert r.json()["model"].startswith(model.split("@")[0])
            return str(r.json()["choices"][0]["message"]["content"])

        plain, tuned = ask("smollm2-135m"), ask("smollm2-135m:rand")
        assert tuned != plain and ask("smollm2-135m:rand@1") == tuned
        assert ask("smollm2-135m") == plain  # the base again, same slots
        missing = client.post("/v1/chat/completions", headers=auth,
                              json={**body, "model": "smollm2-135m:nope"})
        assert missing.status_code == 404 and "no adapter" in missing.json()["error"]["message"]
        metrics = client.get("/metrics").text
        assert "smollm2-135m:nope" not in metrics
    trace = next(t for t in alc.traces.find(limit=20) if t.app == "smollm2-135m:rand@1")
    assert alc.traces.get(trace.id).lineage["adapter"] == "rand@1"
    alc.close()
