"""The transformers backend (issue 21): beam search returns the sequence transformers' own
`generate` returns, which scores higher than the greedy one; (IA)³ and prompt-tuning adapters,
which llama.cpp cannot run, are served on the same loaded model; knobs it lacks are refused
with the backend that has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_adapter_serving import needs_tune

from alicerce import Alicerce, Settings
from alicerce.errors import InputError
from alicerce.generate.params import DecodingParams
from alicerce.tune.registry import Lineage
from alicerce.types import Message

HF = "smol-hf"  # the bundled SmolLM2 GGUF, dequantised on transformers


@pytest.fixture(scope="module")
def alc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("hf") / "home"
    settings = Settings.load(home=home, embedder="hashing", guards={}, models={
        HF: {"path": "smollm2-135m", "backend": "transformers"}})
    with Alicerce(settings) as opened:
        yield opened


def _ids(tok: Any, question: str) -> Any:
    return tok.apply_chat_template([{"role": "user", "content": question}],
                                   add_generation_prompt=True, return_tensors="pt",
                                   return_dict=True)["input_ids"]


def _logprob(model: Any, ids: Any, new: list[int]) -> float:
    """Sum of the log-probabilities of `new` after `ids`."""
    import torch

    full = torch.cat([ids, torch.tensor([new])], dim=1)
    with torch.no_grad():
        logits = model(input_ids=full).logits[0, ids.shape[1] - 1:-1]
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(new)[:, None]).sum())


@pytest.mark.real
@needs_tune
def test_beam_search_returns_transformers_own_best_sequence(alc: Alicerce) -> None:
    import torch

    gen = alc.generator(HF)
    assert gen.backend == "transformers"
    question = "What is 2+2?"  # greedy and 4 beams part ways here
    msgs = [Message("user", question)]
    greedy = gen.complete(msgs, DecodingParams.build(max_tokens=16, temperature=0.0)).text
    beam = gen.complete(msgs, DecodingParams.build(max_tokens=16, temperature=0.0,
                                                   num_beams=4)).text
    assert beam != greedy
    tok, model = gen._tok, gen._adapters.base  # type: ignore[attr-defined]
    ids = _ids(tok, question)
    with torch.no_grad():
        own = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=16, num_beams=4, do_sample=False, top_k=None,
                             top_p=None, temperature=None)
    assert beam == tok.decode(own[0, ids.shape[1]:], skip_special_tokens=True)
    # beam search's objective: log-probability over length (length_penalty 1), eos included
    eos = [tok.eos_token_id]
    scored = {text: _logprob(model, ids, tok(text)["input_ids"] + eos)
              / (len(tok(text)["input_ids"]) + 1) for text in (beam, greedy)}
    assert scored[beam] > scored[greedy], scored
    # several beams: the best first, as many as asked
    two = gen.complete(msgs, DecodingParams.build(max_tokens=16, temperature=0.0, num_beams=4,
                                                  n=2))
    assert len(two.choices) == 2 and two.choices[0].text == beam


@pytest.mark.real
@needs_tune
def test_both_backends_score_an_answer_alike(alc: Alicerce) -> None:
    """Answer explanations rescore answers: one forward pass on transformers, a reply forced
    by a grammar of its token ids on llama.cpp; the same model gives the same likelihoods
    (Q4_1 weights against their dequantised copy: within a nat)."""
    from alicerce.generate.base import Scorer

    msgs = [Message("user", "What is the capital of France?")]
    hf, cpp = alc.generator(HF), alc.generator("smollm2-135m")
    assert isinstance(hf, Scorer) and isinstance(cpp, Scorer)
    right, wrong = "The capital of France is Paris.", "The capital of France is Berlin."
    for text in (right, wrong, "Paris est la capitale."):
        assert abs(hf.score(msgs, text) - cpp.score(msgs, text)) < 1.0, text
    assert cpp.score(msgs, right) > cpp.score(msgs, wrong) + 5


@pytest.mark.real
@needs_tune
def test_streaming_and_stop_sequences_on_transformers(alc: Alicerce) -> None:
    gen = alc.generator(HF)
    msgs = [Message("user", "What is the capital of France?")]
    whole = gen.complete(msgs, DecodingParams.build(max_tokens=20, temperature=0.0)).text
    assert "Paris." in whole
    cut = gen.complete(msgs, DecodingParams.build(max_tokens=20, temperature=0.0,
                                                  stop=["Paris"])).text
    assert cut == whole[:whole.index("Paris")]
    pieces = list(gen.stream(msgs, DecodingParams.build(max_tokens=20, temperature=0.0,
                                                        stop=["Paris"])))
    assert "".join(p.text for p in pieces) == cut
    assert pieces[-1].finish_reason == "stop" and pieces[-1].usage is not None
    assert len([p for p in pieces if p.text]) > 2  # token by token, not one piece


def test_knobs_a_backend_lacks_are_refused_with_the_one_that_has_them() -> None:
    from alicerce.generate.params import require

    with pytest.raises(InputError, match="presence_penalty not supported by the transformers"):
        require(DecodingParams(presence_penalty=0.5), "transformers", HF)
    with pytest.raises(InputError) as err:
        require(DecodingParams(num_beams=4), "llama.cpp", "qwen-0.5b")
    assert 'backend = "transformers"' in err.value.hint
    with pytest.raises(InputError, match="only apply to beam search"):
        require(DecodingParams(length_penalty=1.5), "transformers", HF)
    with pytest.raises(InputError, match="n must be at most num_beams"):
        require(DecodingParams(num_beams=2, n=3), "transformers", HF)
    require(DecodingParams(num_beams=4, length_penalty=0.8, early_stopping=True, n=2),
            "transformers", HF)


def _peft(alc: Alicerce, folder: Path, method: str) -> None:
    """A random (IA)³ or prompt-tuning adapter on SmolLM2, registered as `method`."""
    import torch
    from peft import IA3Config, PromptTuningConfig, get_peft_model

    from alicerce.generate.hf import load_base
    from alicerce.generate.models import BUNDLED, materialise

    _, model = load_base(materialise(BUNDLED["smollm2-135m"], alc.settings.model_cache))
    torch.manual_seed(5)
    cfg: Any = (IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                          feedforward_modules=["down_proj"], task_type="CAUSAL_LM")
                if method == "ia3" else
                PromptTuningConfig(num_virtual_tokens=8, task_type="CAUSAL_LM"))
    peft = get_peft_model(model, cfg)
    with torch.no_grad():
        for p in peft.parameters():
            if p.requires_grad:  # (IA)3 starts at ones: no change; move it well away
                p.copy_(torch.randn_like(p) * (0.3 if method == "ia3" else 1.0)
                        + (1.0 if method == "ia3" else 0.0))
    peft.save_pretrained(folder)
    alc.adapters.register(method, folder, Lineage(
        "smollm2-135m", f"sha256:{BUNDLED['smollm2-135m'].sha256}", method, "t", "v", {}, {}))


@pytest.mark.real
@needs_tune
def test_ia3_and_prompt_tuning_adapters_are_served_on_one_loaded_model(
        alc: Alicerce, tmp_path: Path) -> None:
    _peft(alc, tmp_path / "ia3", "ia3")
    _peft(alc, tmp_path / "prompt", "prompt")
    msgs = [Message("user", "Say hello.")]  # an open question: adapters show
    greedy = DecodingParams.build(max_tokens=10, temperature=0.0)

    def say(adapter: str | None) -> str:
        return alc.generator(HF, adapter).complete(msgs, greedy).text

    base = say(None)
    first = {a: say(a) for a in ("ia3@1", "prompt@1")}
    assert first["ia3@1"] != base and first["prompt@1"] != base
    assert first["ia3@1"] != first["prompt@1"]
    # switching back and forth (kinds PEFT cannot hold side by side) changes nothing
    assert [say(a) for a in (None, "prompt@1", "ia3@1", None)] == \
        [base, first["prompt@1"], first["ia3@1"], base]
    # the prompt-tuned answer is what the PEFT model's own forward pass decodes
    import torch
    from peft import PeftModel

    from alicerce.generate.hf import load_base
    from alicerce.generate.models import BUNDLED, materialise

    tok, model = load_base(materialise(BUNDLED["smollm2-135m"], alc.settings.model_cache))
    peft = PeftModel.from_pretrained(model, str(tmp_path / "prompt")).eval()
    x = _ids(tok, "Say hello.")
    start = x.shape[1]
    for _ in range(10):
        with torch.no_grad():
            nxt = peft(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, -1:]
        x = torch.cat([x, nxt.argmax(-1)], dim=1)
        if int(x[0, -1]) == tok.eos_token_id:
            break
    assert first["prompt@1"] == tok.decode(x[0, start:], skip_special_tokens=True)
    # llama.cpp cannot run them, and says where they run
    with pytest.raises(InputError, match=r'does not run on llama.cpp') as err:
        alc.generator("smollm2-135m", "ia3@1")
    assert "transformers" in err.value.hint


@pytest.mark.real
@needs_tune
def test_the_openai_api_serves_beams_and_peft_adapters_on_transformers(
        alc: Alicerce, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from alicerce.server import create_app

    if not any(a.ref == "ia3@1" for a in alc.adapters.list()):
        _peft(alc, tmp_path / "ia3", "ia3")
    _, key = alc.keys.create("analyst", ["ask", "models", "unguarded"])
    auth = {"Authorization": f"Bearer {key}"}
    body = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16,
            "temperature": 0.0}
    with TestClient(create_app(alc.settings, alc)) as client:
        listed = {m["id"]: m for m in client.get("/v1/models", headers=auth).json()["data"]}
        assert listed[f"{HF}:ia3@1"]["parent"] == HF
        assert "smollm2-135m:ia3@1" not in listed  # llama.cpp cannot run (IA)3
        beams = client.post("/v1/chat/completions", headers=auth,
                            json={**body, "model": HF, "num_beams": 4, "n": 2})
        assert beams.status_code == 200, beams.text
        assert len(beams.json()["choices"]) == 2
        tuned = client.post("/v1/chat/completions", headers=auth,
                            json={**body, "model": f"{HF}:ia3@1"})
        assert tuned.status_code == 200, tuned.text
        refused = client.post("/v1/chat/completions", headers=auth,
                              json={**body, "model": "smollm2-135m", "num_beams": 4})
        assert refused.status_code == 400
        assert "transformers" in refused.json()["error"]["message"]


@pytest.mark.real
@needs_tune
def test_a_hugging_face_folder_is_a_model_with_its_own_identity(tmp_path: Path) -> None:
    """A folder saved with save_pretrained (here a tiny random llama with SmolLM2's
    tokenizer) is served on transformers; its identity hashes its weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alicerce.generate.hf import load_base
    from alicerce.generate.models import BUNDLED, materialise, model_identity

    folder = tmp_path / "tiny"
    settings = Settings.load(home=tmp_path / "h", embedder="hashing", guards={}, models={
        "tiny": {"path": str(folder), "backend": "transformers"}})
    tok, _ = load_base(materialise(BUNDLED["smollm2-135m"], settings.model_cache))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=512))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    with Alicerce(settings) as alc:
        gen = alc.generator("tiny")
        assert gen.backend == "transformers" and gen.context_size == 512
        done = gen.complete([Message("user", "hi")], DecodingParams.build(max_tokens=5,
                                                                          temperature=0.0))
        assert done.usage.completion_tokens > 0 and done.usage.prompt_tokens > 0
    first = model_identity("tiny", settings)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    model.save_pretrained(str(folder))
    assert first.startswith("sha256:") and model_identity("tiny", settings) != first
    broken = Settings.load(home=tmp_path / "h", models={
        "empty": {"path": str(tmp_path), "backend": "transformers"}})
    from alicerce.errors import GeneratorError

    with pytest.raises(GeneratorError, match=r"no config\.json"):
        model_identity("empty", broken)
