"""Every decoding parameter on the real llama.cpp runtime, with the small bundled model."""

import json
import math
from pathlib import Path

import jsonschema
import pytest

from alicerce import Settings
from alicerce.errors import GeneratorError, InputError
from alicerce.generate import DecodingParams, get_generator
from alicerce.generate.llamacpp import LlamaCppGenerator
from alicerce.types import Message

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"
Q = [Message("user", "Write a short story about a cat who lives in a library.")]


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> LlamaCppGenerator:
    settings = Settings.load(home=tmp_path_factory.mktemp("h"), llm_context=2048,
                             llm_parallel=4)
    g = get_generator(MODEL, settings)
    assert isinstance(g, LlamaCppGenerator)
    return g


def run(gen: LlamaCppGenerator, **kw: object) -> str:
    return gen.complete(Q, DecodingParams.build(**{"max_tokens": 24, **kw})).text


def test_loaded_once_per_process(gen: LlamaCppGenerator, tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path, llm_context=2048, llm_parallel=4)
    assert get_generator(MODEL, settings) is gen


def test_max_tokens_usage_and_finish_reason(gen: LlamaCppGenerator) -> None:
    out = gen.complete(Q, DecodingParams(max_tokens=7, temperature=0))
    assert out.usage.completion_tokens == 7 and out.finish_reason == "length"
    assert out.usage.prompt_tokens > 10 and out.timings["decode_tok_s"] > 0


def test_temperature_zero_is_deterministic(gen: LlamaCppGenerator) -> None:
    assert run(gen, temperature=0) == run(gen, temperature=0)


def test_seed_makes_sampling_repeatable(gen: LlamaCppGenerator) -> None:
    a = run(gen, temperature=1.5, seed=7)
    assert a == run(gen, temperature=1.5, seed=7)
    others = {run(gen, temperature=1.5, seed=s) for s in (8, 9, 10)}
    assert others - {a}  # some other seed samples something else


def test_truncation_filters_reduce_to_greedy(gen: LlamaCppGenerator) -> None:
    greedy = run(gen, temperature=0)
    assert run(gen, temperature=1.5, top_k=1, seed=1) == greedy
    assert run(gen, temperature=1.5, top_p=0.01, seed=2) == greedy
    assert run(gen, temperature=1.5, min_p=0.999, seed=3) == greedy


def test_penalties_change_the_output(gen: LlamaCppGenerator) -> None:
    q = [Message("user", "Repeat the word 'cat' twenty times.")]
    base = gen.complete(q, DecodingParams(max_tokens=30, temperature=0)).text
    for knob in ({"repetition_penalty": 1.8}, {"presence_penalty": 2.0},
                 {"frequency_penalty": 2.0}):
        other = gen.complete(q, DecodingParams.build(max_tokens=30, temperature=0, **knob)).text
        assert other != base, knob


def test_stop_sequences_end_the_text(gen: LlamaCppGenerator) -> None:
    full = run(gen, temperature=0, max_tokens=40)
    word = full.split()[3]
    cut = gen.complete(Q, DecodingParams(max_tokens=40, temperature=0, stop=(word,)))
    assert word not in cut.text and full.startswith(cut.text.rstrip())
    assert cut.finish_reason == "stop"


def test_several_candidates(gen: LlamaCppGenerator) -> None:
    out = gen.complete(Q, DecodingParams(max_tokens=12, temperature=1.2, n=3, seed=5))
    assert len(out.choices) == 3 and all(c.text for c in out.choices)
    with pytest.raises(InputError, match="llm_parallel"):
        gen.complete(Q, DecodingParams(n=5))


def test_logprobs_with_alternatives(gen: LlamaCppGenerator) -> None:
    out = gen.complete(Q, DecodingParams(max_tokens=6, temperature=0, logprobs=True,
                                         top_logprobs=3))
    probs = out.choices[0].logprobs
    assert len(probs) == 6 and "".join(t.token for t in probs) == out.text
    for t in probs:
        assert len(t.top) == 3 and t.logprob <= 0
        assert t.top[0][0] == t.token  # greedy picks the likeliest
        assert sum(math.exp(lp) for _, lp in t.top) <= 1.0 + 1e-4


def test_bullet_list_is_enforced(gen: LlamaCppGenerator) -> None:
    out = gen.complete([Message("user", "Name three fruits.")],
                       DecodingParams(max_tokens=40, temperature=0, format="bullets"))
    lines = out.text.strip().splitlines()
    assert lines and all(ln.startswith("- ") for ln in lines)


def test_json_follows_the_schema(gen: LlamaCppGenerator) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    out = gen.complete([Message("user", "Invent a person.")],
                       DecodingParams(max_tokens=60, temperature=0.7, seed=1, format="json",
                                      json_schema=schema))
    jsonschema.validate(json.loads(out.text), schema)


def test_streaming_matches_and_can_stop_early(gen: LlamaCppGenerator) -> None:
    p = DecodingParams(max_tokens=16, temperature=0)
    deltas = list(gen.stream(Q, p))
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 16
    assert any(d.finish_reason == "length" for d in deltas)
    assert "".join(d.text for d in deltas) == gen.complete(Q, p).text
    it = gen.stream(Q, DecodingParams(max_tokens=200, temperature=0))
    next(it)
    it.close()  # the decoding thread is told to stop; the model stays usable
    assert gen.complete(Q, p).text


def test_system_prompt_goes_through_the_model_chat_template(gen: LlamaCppGenerator) -> None:
    system = "You are a pirate. Always talk like a pirate, with arr and matey."
    user = [Message("user", "What colour is the sky?")]
    p = DecodingParams(max_tokens=12, temperature=0)
    plain, styled = gen.complete(user, p), gen.complete([Message("system", system), *user], p)
    assert styled.text != plain.text
    # The template wraps each message in role markers: more than the bare texts' tokens.
    bare = gen.count_tokens(system) + gen.count_tokens(user[0].content)
    assert styled.usage.prompt_tokens > bare


def test_prompt_too_long_is_an_input_error(gen: LlamaCppGenerator) -> None:
    with pytest.raises(InputError, match="does not fit") as exc:
        gen.complete([Message("user", "word " * 3000)], DecodingParams(max_tokens=4))
    assert "llm_context" in exc.value.hint


def test_count_tokens_uses_the_model_tokenizer(gen: LlamaCppGenerator) -> None:
    assert gen.count_tokens("hello") == 1 and gen.count_tokens("hello " * 50) >= 50


def test_missing_and_corrupt_gguf(tmp_path: Path, gen: LlamaCppGenerator) -> None:
    settings = Settings.load(home=tmp_path)
    with pytest.raises(GeneratorError, match="does not exist"):
        get_generator(str(tmp_path / "nope.gguf"), settings)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(GeneratorError, match="not a GGUF"):
        get_generator(str(junk), settings)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gen.path.read_bytes()[: 5_000_000])
    with pytest.raises(GeneratorError, match="could not load"):
        get_generator(str(truncated), settings)
