"""Requests decoded together on the transformers backend, LoRA adapters mixed in one batch.

On a CPU a decode step reads every weight once, for one sequence or four, so four requests
in one batch come out about twice as fast in total as one after another (docs/benchmarks.md,
"Serving adapters"). Requests for different LoRA adapters and the base share a batch through
PEFT's `adapter_names` (each row gets its own adapter; vLLM and LoRAX do the same on GPUs).

The batch is static: requests that arrive while one runs wait for the next. A seed (one
random generator for a whole batch could not give each request its own sequence) and soft
prompts run alone; (IA)³ batches only with the same adapter (PEFT mixes LoRA only). Beam
search and `n` > 1 do not come here (hf.py runs them whole).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alicerce.errors import AlicerceError, GeneratorError


@dataclass(frozen=True)
class Piece:
    """Text decoded for a row (whole characters) and the row's token count so far."""

    text: str
    tokens: int


@dataclass(frozen=True)
class Done:
    """A row's end: its generated token ids and why it stopped ("stop" or "length")."""

    tokens: list[int]
    finish: str


@dataclass(eq=False)  # a request is itself: two alike are still two
class Job:
    """One request: its prompt ids [1, L], generate() arguments and where its text goes."""

    ids: Any
    kw: dict[str, Any]
    adapter: Path | None
    method: str
    seed: int | None = None
    out: queue.Queue[Piece | Done | BaseException] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def key(self) -> tuple[Any, ...]:
        """Jobs with the same key run in one batch: same decoding, adapters that mix. A seed
        (a batch shares one random generator) or a soft prompt runs alone."""
        if self.seed is not None or self.method == "prompt":
            return ("alone", id(self))
        lora = self.adapter is None or self.method in ("lora", "pretrain")
        decoding = tuple(sorted((k, repr(v)) for k, v in self.kw.items()
                                if k not in ("max_new_tokens", "tokenizer")))
        return ("lora", *decoding) if lora else ("one", self.adapter, *decoding)

    def results(self) -> Iterator[Piece | Done]:
        """The row's pieces as decoded, then its Done; raises the batch's error."""
        while True:
            item = self.out.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Done):
                return


class Batcher:
    """One thread running waiting jobs in batches of at most `size`, under the model's lock.

    `run(jobs, rows)` calls generate() on the batch with `rows` as its streamer and stopping
    criteria; the model's owner supplies it (it knows the adapters)."""

    def __init__(self, tok: Any, lock: threading.Lock, size: int,
                 run: Callable[[list[Job], Rows], None]) -> None:
        self._tok, self._lock, self._size, self._run = tok, lock, max(1, size), run
        self._waiting: list[Job] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> Job:
        with self._ready:
            self._waiting.append(job)
            self._ready.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="transformers-batch")
                self._thread.start()
        return job

    def _take(self) -> list[Job]:
        """The oldest waiting job and the next waiting ones that share its key."""
        with self._ready:
            while not self._waiting:
                self._ready.wait()
            key = self._waiting[0].key()
            batch = [j for j in self._waiting if j.key() == key][:self._size]
            self._waiting = [j for j in self._waiting if j not in batch]
            return batch

    def _loop(self) -> None:
        while True:
            jobs = [j for j in self._take() if not j.cancelled.is_set()]
            if not jobs:
                continue
            rows = Rows(self._tok, jobs)
            try:
                with self._lock:
                    self._run(jobs, rows)
            except AlicerceError as exc:  # each caller gets it, in its own thread
                rows.fail(exc)
            except Exception as exc:  # torch's own errors, for the caller
                rows.fail(GeneratorError(f"transformers failed while decoding: {exc}"))


class Rows:
    """Streamer (generate() calls `put` with each step's tokens, one per row, after the
    stopping criteria) and per-row stopping for one batch. A row ends at its end-of-text,
    its own token limit or when its caller goes away, and its caller hears of it at once;
    generate() pads the row after that while the other rows go on."""

    def __init__(self, tok: Any, jobs: list[Job]) -> None:
        self._tok, self.jobs = tok, jobs
        self._ends = {tok.eos_token_id, tok.pad_token_id}
        self.tokens: list[list[int]] = [[] for _ in jobs]
        self.over = [False] * len(jobs)
        self._sent = [""] * len(jobs)
        self._prompt = True

    def put(self, value: Any) -> None:
        if self._prompt:  # generate() hands over the prompt first
            self._prompt = False
            return
        for i, t in enumerate(value.reshape(-1).tolist()):
            if self.over[i]:
                continue
            if t in self._ends:
                self._close(i, "stop")
                continue
            self.tokens[i].append(t)
            text = self._tok.decode(self.tokens[i], skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) > len(self._sent[i]):
                self.jobs[i].out.put(Piece(text[len(self._sent[i]):], len(self.tokens[i])))
                self._sent[i] = text

    def criteria(self) -> Any:
        """A stopping criterion giving generate() each row's own end."""
        from transformers import StoppingCriteria

        rows = self

        class PerRow(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                import torch

                for i, j in enumerate(rows.jobs):
                    if rows.over[i]:
                        continue
                    if j.cancelled.is_set():
                        rows._close(i, "stop")
                    elif len(rows.tokens[i]) >= j.kw["max_new_tokens"]:
                        rows._close(i, "length")
                return torch.tensor(rows.over, dtype=torch.bool)

        return PerRow()

    def _close(self, i: int, finish: str) -> None:
        self.over[i] = True
        self.jobs[i].out.put(Done(self.tokens[i], finish))

    def end(self) -> None:
        """Called by generate() as it returns: rows it ended itself (the batch's token limit,
        a stop string) hear of it now."""
        for i, j in enumerate(self.jobs):
            if not self.over[i]:
                self._close(i, "length" if len(self.tokens[i]) >= j.kw["max_new_tokens"]
                            else "stop")

    def fail(self, exc: BaseException) -> None:
        for i, j in enumerate(self.jobs):
            if not self.over[i]:
                self.over[i] = True
                j.out.put(exc)
