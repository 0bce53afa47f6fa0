"""How the transformers backend groups requests into batches and hands each row its text
(generate/hf_batch.py), on stand-ins: which requests may share a batch, pieces of whole
characters, and each row's own end. The real model is in tests/test_multi_adapter.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_adapter_serving import needs_tune

from alicerce.errors import GeneratorError
from alicerce.generate.hf_batch import Batcher, Done, Job, Piece, Rows

EOS, PAD = 0, 1


class Tok:
    """Token t > 1 is the character chr(t); 2 is half of a two-token character."""

    eos_token_id, pad_token_id = EOS, PAD

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        text = "".join("\ufffd" if t == 2 else chr(t) for t in ids)
        return text.replace("\ufffd" + "é", "é")


def job(kw: dict[str, Any] | None = None, adapter: str | None = None, method: str = "",
        length: int = 3) -> Job:
    return Job(np.zeros((1, length), dtype=np.int64), {"max_new_tokens": 4, **(kw or {})},
               Path(adapter) if adapter else None, method)


def drained(j: Job) -> list[Piece | Done]:
    out = []
    while not j.out.empty():
        item = j.out.get()
        assert not isinstance(item, BaseException)
        out.append(item)
    return out


def test_requests_share_a_batch_only_when_their_decoding_and_adapters_mix() -> None:
    base, lora_a, lora_b = job(), job(adapter="a", method="lora"), job(adapter="b",
                                                                        method="pretrain")
    assert base.key() == lora_a.key() == lora_b.key()  # LoRA rows mix through adapter_names
    assert job({"max_new_tokens": 99}).key() == base.key()  # each row keeps its own limit
    assert job({"temperature": 0.7, "do_sample": True}).key() != base.key()
    ia3_a, ia3_b = job(adapter="x", method="ia3"), job(adapter="y", method="ia3")
    assert ia3_a.key() != ia3_b.key() and ia3_a.key() != base.key()  # no mixed (IA)3 batches
    assert ia3_a.key() == job(adapter="x", method="ia3").key()


def test_the_oldest_request_leads_a_batch_of_its_kind_up_to_the_size() -> None:
    batcher = Batcher(Tok(), threading.Lock(), 2, lambda jobs, rows: None)
    sampled = job({"temperature": 0.7})
    first, second, third = job(), job(adapter="a", method="lora"), job()
    batcher._waiting = [first, sampled, second, third]
    assert batcher._take() == [first, second]
    assert batcher._take() == [sampled]
    assert batcher._take() == [third]


@needs_tune  # the criteria answer generate() with a torch tensor
def test_each_row_gets_whole_characters_and_its_own_end() -> None:
    short, long, gone = job({"max_new_tokens": 2}), job({"max_new_tokens": 5}), job()
    rows = Rows(Tok(), [short, long, gone])
    rows.put(np.zeros((3, 3)))  # the prompt: not text
    rows.put(np.array([ord("o"), 2, ord("x")]))
    rows.put(np.array([ord("k"), ord("é"), EOS]))  # half a character waits for its end
    gone.cancelled.set()
    assert rows.criteria()(None, None).tolist() == [True, False, True]
    rows.put(np.array([PAD, ord("!"), PAD]))  # generate() pads the finished rows
    rows.end()
    assert drained(short) == [Piece("o", 1), Piece("k", 2), Done([ord("o"), ord("k")], "length")]
    assert drained(long) == [Piece("é", 2), Piece("!", 3), Done([2, ord("é"), ord("!")], "stop")]
    assert drained(gone) == [Piece("x", 1), Done([ord("x")], "stop")]


def test_a_failed_batch_reaches_every_caller_still_waiting() -> None:
    def boom(jobs: list[Job], rows: Rows) -> None:
        rows.put(np.zeros((2, 3)))
        rows.put(np.array([EOS, ord("a")]))
        raise RuntimeError("out of memory")

    batcher = Batcher(Tok(), threading.Lock(), 4, boom)
    first, second = job(), job()
    batcher._waiting = [first]
    batcher.submit(second)  # both wait before the thread starts: one batch
    assert list(first.results()) == [Done([], "stop")]  # ended before the failure
    pieces = second.results()
    assert next(pieces) == Piece("a", 1)
    with pytest.raises(GeneratorError, match="transformers failed while decoding: out of mem"):
        next(pieces)
