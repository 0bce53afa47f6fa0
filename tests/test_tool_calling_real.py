"""OpenAI tool calling on a live `alicerce serve` with the real qwen-1.5b: the openai SDK
gets `tool_calls` back (streamed and not) and sends results back, and smolagents'
ToolCallingAgent, an agent framework that speaks the OpenAI API, drives the server
unchanged to a right answer."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from alicerce.testing.procs import serving

pytestmark = pytest.mark.real
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "multiply", "description": "Multiplies two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                    "b": {"type": "number"}},
                   "required": ["a", "b"]}}}]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("tools") / "h"
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_LLM_PARALLEL": "1"}
    with serving(env, home.parent / "server.log", "--no-auth") as (url, _):
        yield url


def test_the_openai_sdk_gets_tool_calls_from_a_raw_model(base: str) -> None:
    c = openai.OpenAI(base_url=base + "/v1", api_key="local", max_retries=0, timeout=300)
    messages: list[Any] = [{"role": "user", "content": "What is 23 times 19? Use the tool."}]
    r = c.chat.completions.create(model="qwen-1.5b", messages=messages, tools=TOOLS,
                                  tool_choice="required", temperature=0, max_tokens=80)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "multiply"
    args = json.loads(call.function.arguments)
    assert set(args) == {"a", "b"} and sorted(args.values()) == [19, 23]
    messages += [r.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "437"}]
    done = c.chat.completions.create(model="qwen-1.5b", messages=messages, tools=TOOLS,
                                     tool_choice="none", temperature=0, max_tokens=60)
    assert "437" in (done.choices[0].message.content or "")
    chunks = list(c.chat.completions.create(model="qwen-1.5b", messages=messages[:1],
                                            tools=TOOLS, tool_choice="required",
                                            temperature=0, max_tokens=80, stream=True))
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "multiply"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls))


def test_smolagents_tool_calling_agent_drives_the_server(base: str) -> None:
    from smolagents import OpenAIServerModel, ToolCallingAgent, tool

    @tool
    def multiply(a: float, b: float) -> float:
        """Multiplies two numbers.

        Args:
            a: the first number
            b: the second number
        """
        return a * b

    agent = ToolCallingAgent(tools=[multiply], model=OpenAIServerModel(
        model_id="qwen-1.5b", api_base=base + "/v1", api_key="local", temperature=0),
        max_steps=4,
        verbosity_level=0)
    answer = agent.run("What is 23 times 19?")
    names = [tc.name for s in agent.memory.steps for tc in (getattr(s, "tool_calls", None)
                                                           or [])]
    assert "multiply" in names  # the framework executed the call our server returned
    assert "437" in str(answer)
