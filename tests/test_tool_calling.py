"""OpenAI tool calling on raw models: the reply schema per tool_choice, the history of
calls and results, and the server's answers through the real openai SDK (on a scripted
model; tests/test_tool_calling_real.py runs the real one)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from fastapi.testclient import TestClient

from alicerce import Alicerce, Settings
from alicerce.errors import InputError
from alicerce.generate.tool_calls import Function, ToolRequest, history, parse
from alicerce.server import create_app
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message

WEATHER = Function("get_weather", "Current weather in a city.", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = Function("get_time", "Current time in a time zone.", {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]})
TOOLS = [{"type": "function", "function": {"name": f.name, "description": f.description,
                                           "parameters": f.parameters}}
         for f in (WEATHER, TIME)]


def test_the_reply_schema_follows_tool_choice() -> None:
    call = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Recife"}}]}
    two = {"tool_calls": [call["tool_calls"][0], {"name": "get_time",
                                                   "arguments": {"zone": "UTC"}}]}
    text = {"content": "Olá"}
    auto = ToolRequest((WEATHER, TIME), "auto").schema()
    for ok in (call, two, text):
        jsonschema.validate(ok, auto)
    for bad in ({"tool_calls": [{"name": "rm_rf", "arguments": {}}]},
                {"tool_calls": [{"name": "get_weather", "arguments": {}}]}, {"x": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, auto)
    required = ToolRequest((WEATHER, TIME), "required").schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(text, required)
    named = ToolRequest((WEATHER, TIME), "get_time").schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(call, named)
    single = ToolRequest((WEATHER, TIME), "auto", parallel=False).schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(two, single)
    assert ToolRequest((WEATHER,), "none").schema() is None
    with pytest.raises(InputError, match="not in tools"):
        ToolRequest((WEATHER,), "get_time")


def test_replies_parse_into_calls_or_content_and_history_reads_back() -> None:
    content, calls = parse('{"tool_calls": [{"name": "get_weather", "arguments": '
                           '{"city": "Recife"}}]}')
    assert content is None and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Recife"}
    assert calls[0].id.startswith("call_")
    assert parse('{"content": "Olá"}') == ("Olá", [])
    assert parse("texto livre") == ("texto livre", [])
    msgs = history([
        {"role": "user", "content": "Tempo em Recife?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Recife"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "31 °C, sol"}])
    assert msgs[1] == Message("assistant", '{"tool_calls": [{"name": "get_weather", '
                                           '"arguments": {"city": "Recife"}}]}')
    assert msgs[2] == Message("user", "Result of get_weather: 31 °C, sol")
    with pytest.raises(InputError, match="no earlier assistant message called"):
        history([{"role": "tool", "tool_call_id": "zz", "content": "x"}])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ScriptedGenerator, openai.OpenAI, TestClient]]:
    seen: list[Sequence[Message]] = []

    def reply(messages: Sequence[Message]) -> str:
        seen.append(messages)
        if messages[-1].content.startswith("Result of get_weather"):
            return '{"content": "Faz 31 °C em Recife."}'
        return '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Recife"}}]}'
    gen = ScriptedGenerator(reply, name="fake")
    settings = Settings.load(home=tmp_path / "h", embedder="hashing", generator="fake",
                             guards={}, auth=False)
    alc = Alicerce(settings)
    alc.use_generator("fake", gen)
    with TestClient(create_app(settings, alc)) as http:
        yield gen, openai.OpenAI(base_url="http://testserver/v1", api_key="x",
                                 http_client=http, max_retries=0), http
    alc.close()


def test_the_openai_sdk_gets_tool_calls_and_sends_results_back(
        server: tuple[ScriptedGenerator, openai.OpenAI, TestClient]) -> None:
    gen, client, _ = server
    messages: list[Any] = [{"role": "user", "content": "Como está o tempo em Recife?"}]
    first = client.chat.completions.create(model="fake", messages=messages, tools=TOOLS,
                                           tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Recife"}
    assert "get_weather" in gen.calls[-1][0].content  # the tools were described to it
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "31 °C, sol"}]
    second = client.chat.completions.create(model="fake", messages=messages, tools=TOOLS,
                                            stop=["Recife"])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Faz 31 °C em "  # stop applied to the text
    assert not second.choices[0].message.tool_calls


def test_text_content_parts_are_read_as_text(
        server: tuple[ScriptedGenerator, openai.OpenAI, TestClient]) -> None:
    gen, client, _ = server
    client.chat.completions.create(model="fake", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Tempo"}, {"type": "text", "text": "em Recife?"}]}],
        tools=TOOLS)
    assert gen.calls[-1][-1].content == "Tempo\nem Recife?"


def test_tool_calls_stream_in_openais_chunk_shape(
        server: tuple[ScriptedGenerator, openai.OpenAI, TestClient]) -> None:
    _, client, _ = server
    chunks = list(client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "Tempo em Recife?"}],
        tools=TOOLS, tool_choice="required", stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args) == {"city": "Recife"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@pytest.mark.parametrize(("body", "match"), [
    ({"model": "kb-app", "tools": TOOLS}, "tools are for raw models"),
    ({"tool_choice": "required"}, "tool_choice needs tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "not in tools"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "cannot be combined"),
    ({"tools": TOOLS, "n": 2}, "one choice"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"messages": [{"role": "tool", "tool_call_id": "zz", "content": "x"}]},
     "no earlier assistant message"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "name"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "http://x/a.png"}}]}]}, "only text content parts"),
])
def test_bad_tool_requests_are_clear_400s(
        server: tuple[ScriptedGenerator, openai.OpenAI, TestClient], tmp_path: Path,
        body: dict[str, Any], match: str) -> None:
    gen, _, http = server
    if body.get("model") == "kb-app":
        docs = tmp_path / "d"
        docs.mkdir()
        (docs / "a.md").write_text("# A\n\ntexto\n")
        http.app.state.service.alc.ingest([docs], "kb-app")  # type: ignore[attr-defined]
    calls = len(gen.calls)
    got = http.post("/v1/chat/completions", json={
        "model": "fake", "messages": [{"role": "user", "content": "oi"}], **body})
    assert got.status_code == 400, got.text
    assert match in got.json()["error"]["message"]
    assert len(gen.calls) == calls  # refused before the model ran
