"""Several servers of one model used as one: least busy first, failover, health checks
before a failed server gets traffic again (stand-in clients; tests/test_failover.py runs
real servers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from alicerce.endpoints import Endpoints


class Down(ConnectionError):
    """What the openai client raises when nothing listens (APIConnectionError)."""


class Refused(Exception):
    status_code = 400


class Client:
    def __init__(self, url: str) -> None:
        self.url, self.up, self.calls, self.probes = url, True, 0, 0
        self.models = self  # client.models.list()
        self.gate: threading.Event | None = None

    def with_options(self, **_: Any) -> Client:
        return self

    def list(self) -> list[str]:
        self.probes += 1
        if not self.up:
            raise Down(self.url)
        return []

    def answer(self) -> str:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        if not self.up:
            raise Down(self.url)
        return self.url

    def words(self, fail_after: int | None = None) -> Iterator[str]:
        for i in range(3):
            if not self.up or (fail_after is not None and i == fail_after):
                raise Down(self.url)
            yield f"{self.url}:{i}"


def pair(cooldown: float = 60.0) -> tuple[Endpoints, Client, Client]:
    ends = Endpoints(["a", "b"], Client, cooldown_s=cooldown)
    a, b = (s.client for s in ends.servers)
    return ends, a, b


def test_calls_take_turns_and_go_to_the_least_busy() -> None:
    ends, a, b = pair()
    assert sorted(ends.call(lambda c: c.answer()) for _ in range(4)) == ["a", "a", "b", "b"]
    gate = threading.Event()
    a.gate = b.gate = gate  # whichever gets the next call holds it
    busy = threading.Thread(target=ends.call, args=(lambda c: c.answer(),))
    busy.start()
    deadline = time.monotonic() + 5
    while not any(s.inflight for s in ends.servers):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    free = next(s.client for s in ends.servers if not s.inflight)
    free.gate = None
    assert [ends.call(lambda c: c.answer()) for _ in range(3)] == [free.url] * 3
    gate.set()
    busy.join()


def test_a_server_that_fails_costs_no_request_and_stays_out() -> None:
    ends, a, _b = pair()
    a.up = False
    assert [ends.call(lambda c: c.answer()) for _ in range(4)] == ["b"] * 4
    assert a.calls == 1  # tried once (its turn came), then skipped during its cooldown
    state = {s.url: s for s in ends.state()}
    assert not state["a"].up and state["a"].failures == 1 and "a" in state["a"].last_error
    assert state["b"].served == 4


def test_after_its_cooldown_a_server_is_health_checked_before_traffic() -> None:
    ends, a, _b = pair(cooldown=0.05)
    a.up = False
    while a.calls == 0:  # until a's turn comes: it fails once and goes down
        assert ends.call(lambda c: c.answer()) == "b"
    time.sleep(0.06)
    assert [ends.call(lambda c: c.answer()) for _ in range(2)] == ["b", "b"]  # probe failed
    assert a.probes >= 1 and a.calls == 1
    a.up = True
    time.sleep(0.06)
    assert sorted(ends.call(lambda c: c.answer()) for _ in range(4)) == ["a", "a", "b", "b"]


def test_a_bad_request_is_not_retried_elsewhere() -> None:
    ends, a, b = pair()

    def refuse(c: Client) -> str:
        c.calls += 1
        raise Refused("bad parameter")

    with pytest.raises(Refused):
        ends.call(refuse)
    assert a.calls + b.calls == 1 and all(s.up for s in ends.state())


def test_every_server_down_raises_the_last_error() -> None:
    ends, a, b = pair()
    a.up = b.up = False
    with pytest.raises(Down):
        ends.call(lambda c: c.answer())
    with pytest.raises(Down):  # all down: still tried (the one due back first), not refused
        ends.call(lambda c: c.answer())


def test_a_stream_moves_only_before_its_first_item() -> None:
    ends, a, _b = pair()
    a.up = False
    got = list(ends.stream(lambda c: c.words()))
    assert got == ["b:0", "b:1", "b:2"]
    a.up = True
    ends.servers[0].down_until = 0.0
    with pytest.raises(Down):  # cut mid-stream: the caller sees it, no silent restart
        list(ends.stream(lambda c: c.words(fail_after=1)))
