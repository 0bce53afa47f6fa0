import pytest

from alicerce.errors import InputError
from alicerce.generate.base import request_body, with_format
from alicerce.generate.params import DecodingParams, require
from alicerce.types import Message


@pytest.mark.parametrize(("values", "needle"), [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"min_p": 1.0}, "min_p"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"presence_penalty": 3.0}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": [""]}, "stop"),
    ({"seed": -1}, "seed"),
    ({"n": 0}, "n (candidates)"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"format": "yaml"}, "format"),
    ({"num_beams": 0}, "num_beams"),
    ({"format": "json", "json_schema": {"type": "objekt"}}, "invalid JSON schema"),
    ({"json_schema": {"type": "object"}}, "needs format 'json'"),
    ({"temprature": 0.5}, "unknown decoding parameter"),
    ({"max_tokens": "many"}, "max_tokens"),
])
def test_bad_values_are_clear_errors(values: dict[str, object], needle: str) -> None:
    with pytest.raises(InputError) as exc:
        DecodingParams.build(**values)
    assert needle in exc.value.message
    assert exc.value.hint


def test_defaults_are_valid_everywhere_and_use_no_extras() -> None:
    p = DecodingParams()
    assert p.used() == frozenset()
    for backend in ("llama.cpp", "openai"):
        require(p, backend, "m")


def test_used_knobs_and_beam_search_refusal() -> None:
    p = DecodingParams.build(top_k=5, min_p=0.1, seed=3, stop="###", logprobs=True, n=2)
    assert p.used() == {"top_k", "min_p", "seed", "stop", "logprobs", "n"}
    assert p.stop == ("###",)
    with pytest.raises(InputError) as exc:
        require(DecodingParams(num_beams=4), "llama.cpp", "qwen")
    assert "beam search" in exc.value.message and "transformers" in exc.value.hint


def test_request_body_maps_every_knob() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    p = DecodingParams.build(max_tokens=9, temperature=0.3, top_p=0.8, top_k=7, min_p=0.02,
                             repetition_penalty=1.2, presence_penalty=0.5,
                             frequency_penalty=0.25, stop=["x"], seed=11, n=2, top_logprobs=3,
                             format="json", json_schema=schema)
    body = request_body([Message("user", "hi")], p, "m", extras=True)
    assert body["max_tokens"] == 9 and body["temperature"] == 0.3 and body["top_p"] == 0.8
    assert body["top_k"] == 7 and body["min_p"] == 0.02 and body["repetition_penalty"] == 1.2
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.25
    assert body["stop"] == ["x"] and body["seed"] == 11 and body["n"] == 2
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["messages"][0]["role"] == "system" and '"a"' in body["messages"][0]["content"]
    plain = request_body([Message("user", "hi")], DecodingParams(), "m", extras=False)
    assert set(plain) == {"model", "messages", "max_tokens", "temperature", "top_p", "n"}


def test_format_instruction_joins_an_existing_system_message() -> None:
    out = with_format([Message("system", "Be brief."), Message("user", "x")],
                      DecodingParams(format="bullets"))
    assert len(out) == 2 and out[0].content.startswith("Be brief.") and "'- '" in out[0].content
