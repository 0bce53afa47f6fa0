"""Spans: the steps of one request, each with its inputs, outputs and timing.

A `Recorder` travels with one request through the chain; every step adds a span. Steps that
do not run (a guard that is not configured) are not recorded; a step that fails is recorded with
its error before the error goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

Span = dict[str, Any]


class Recorder:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.spans: list[Span] = []

    @contextmanager
    def span(self, name: str, **attrs: Any) -> Iterator[dict[str, Any]]:
        """Time a step; the caller adds outputs to the yielded attributes."""
        t0 = time.perf_counter()
        try:
            yield attrs
        except BaseException as exc:
            attrs["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.spans.append({"name": name, "start_ms": round((t0 - self.started) * 1000, 3),
                               "ms": round((time.perf_counter() - t0) * 1000, 3),
                               "attrs": attrs})

    def add(self, name: str, ms: float, **attrs: Any) -> None:
        """A step timed elsewhere (the generation, which streams between other code)."""
        end = time.perf_counter()
        self.spans.append({"name": name,
                           "start_ms": round((end - self.started) * 1000 - ms, 3),
                           "ms": round(ms, 3), "attrs": attrs})

    def withhold(self, attrs: dict[str, tuple[str, ...]], by: str) -> None:
        """Replace span attributes (span name -> attribute names) that hold text a rail
        blocked or redacted, so the trace does not keep what the user never saw."""
        for span in self.spans:
            for key in attrs.get(span["name"], ()):
                if key in span["attrs"]:
                    span["attrs"][key] = f"[withheld by {by}]"

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
