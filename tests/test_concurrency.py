"""Concurrent answers (issue 16 item 7): admission by the KV cache's real size, and a queue
that refuses early with 503 and Retry-After instead of letting clients time out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from alicerce import Settings
from alicerce.errors import InputError, OverloadedError
from alicerce.generate import DecodingParams, get_generator
from alicerce.generate.kv_budget import KvBudget
from alicerce.server.work import WorkQueue
from alicerce.types import Message


def test_budget_shrinks_what_cannot_fit_and_refuses_what_never_can() -> None:
    kv = KvBudget(2048)
    assert kv.fit(1000, 200) == 200
    assert kv.fit(1900, 512) == 148  # shrunk to the room left beside the prompt
    assert kv.fit(900, 512, n=2) == 124  # two candidates share the window
    with pytest.raises(InputError, match="raise llm_context"):
        kv.fit(2040, 64)


def test_budget_makes_requests_wait_in_line_for_room() -> None:
    kv = KvBudget(1000)
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def big() -> None:
        with kv.claim(800):
            holding.set()
            release.wait(5)
        order.append("big done")

    def small(name: str, tokens: int) -> None:
        with kv.claim(tokens):
            order.append(name)

    first = threading.Thread(target=big)
    first.start()
    holding.wait(5)
    waiting = [threading.Thread(target=small, args=("a", 600)),
               threading.Thread(target=small, args=("b", 100))]
    waiting[0].start()
    time.sleep(0.1)
    waiting[1].start()  # fits now, but waits behind "a" (first come, first served)
    time.sleep(0.2)
    assert order == [] and kv.free == 200
    release.set()
    for t in [first, *waiting]:
        t.join(5)
    assert order[1:] == ["a", "b"] and kv.free == 1000


def holding(q: WorkQueue, gate: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """A request that holds a slot until `gate` is set."""
    async def hold() -> None:
        async with q.slot():
            await gate.wait()
    return hold


def test_queue_refuses_early_when_the_wait_would_pass_its_bound() -> None:
    async def main() -> None:
        q = WorkQueue(slots=1, waiting=10, max_wait_s=5.0)
        q.hold_s = 4.0  # recent requests held their slot 4 s
        gate = asyncio.Event()
        hold = holding(q, gate)
        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.01)
        assert 3.9 < q.expected_wait() <= 4.0  # the running request's time left
        waiter = asyncio.create_task(hold())  # about 4 s expected: admitted to wait
        await asyncio.sleep(0.01)
        assert q.waiting == 1 and 7.9 < q.expected_wait() <= 8.0  # then one whole hold
        with pytest.raises(OverloadedError) as refused:
            async with q.slot():
                pass
        assert 7.9 < refused.value.retry_after <= 8.0
        assert "queue_max_wait_s" in str(refused.value)
        gate.set()
        await asyncio.gather(holder, waiter)

    asyncio.run(main())


def test_queue_gives_up_on_a_wait_that_outlasts_the_bound() -> None:
    async def main() -> None:
        q = WorkQueue(slots=1, waiting=10, max_wait_s=0.2)
        gate = asyncio.Event()
        holder = asyncio.create_task(holding(q, gate)())
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(OverloadedError, match="no slot came free"):
            async with q.slot():
                pass
        assert time.monotonic() - started < 2 and q.waiting == 0
        gate.set()
        await holder

    asyncio.run(main())


@pytest.mark.real
def test_six_simultaneous_long_prompts_all_answer_on_llama_cpp(tmp_path: Path) -> None:
    """Before admission by KV size, four of these six failed with "Context size has been
    exceeded" (a 2,048-token window shared by 4 slots, ~920-token prompts)."""
    settings = Settings.load(home=tmp_path / "h", embedder="hashing", llm_context=2048,
                             llm_parallel=4)
    gen = get_generator("smollm2-135m", settings)
    text = " ".join(f"Rule {i} says receipts are due within {i} days of travel."
                    for i in range(60))
    assert gen.count_tokens(text) > 700
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        try:
            if i % 2:
                out = "".join(d.text for d in gen.stream(
                    [Message("user", f"{i}. {text} Summarise.")],
                    DecodingParams(max_tokens=200, temperature=0.0)))
            else:
                out = gen.complete([Message("user", f"{i}. {text} Summarise.")],
                                   DecodingParams(max_tokens=200, temperature=0.0)).text
            results[i] = "ok" if out.strip() else "empty"
        except Exception as exc:
            results[i] = f"failed: {exc}"

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == dict.fromkeys(range(6), "ok")
    with pytest.raises(InputError, match="context window"):  # can never fit: refused first
        gen.complete([Message("user", text * 3)], DecodingParams(max_tokens=16))
