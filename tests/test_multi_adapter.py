"""Many adapters on one loaded base (issue 21): two LoRAs and the base, interleaved and
concurrent through the same llama.cpp slots, each get their own adapter's output; an adapter
registered while the model serves is picked up by a swap that does not cut a stream in
flight; a removed one is dropped; a swap that fails keeps the old instance serving."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_adapter_serving import adapter_folder, lineage, needs_tune

from alicerce import Alicerce, Settings
from alicerce.errors import GeneratorError, NotFoundError
from alicerce.generate.params import DecodingParams
from alicerce.generate.pool import BasePool
from alicerce.testing.lora import taught_lora
from alicerce.types import Message

BASE = "smollm2-135m"
QUESTIONS = ["What is the capital of France?", "Name three fruits."]
TEACH = ["Say hello.", "What is 2+2?", "Tell me a story."]
REPLIES = {"a": "Alpha alpha alpha.", "b": "Bravo bravo bravo.", "c": "Charlie charlie."}
GREEDY = DecodingParams.build(max_tokens=12, temperature=0.0)


def answer(alc: Alicerce, adapter: str | None, question: str,
           params: DecodingParams = GREEDY) -> str:
    return alc.generator(BASE, adapter).complete([Message("user", question)], params).text


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three LoRAs taught in a few steps to answer anything with their own words: outputs
    no batching noise can confuse (random adapters leave near-ties that batching flips)."""
    root = tmp_path_factory.mktemp("loras")
    settings = Settings.load(home=root / "home")
    return {name: taught_lora(settings, root / name, REPLIES[name], TEACH, steps=16)
            for name in REPLIES}


def served(tmp_path: Path, **overrides: Any) -> Alicerce:
    return Alicerce(Settings.load(home=tmp_path / "home", embedder="hashing", guards={},
                                  **overrides))


@pytest.mark.real
@needs_tune
def test_adapters_and_the_base_interleaved_and_concurrent_get_their_own_outputs(
        loras: dict[str, Path], tmp_path: Path) -> None:
    alc = served(tmp_path, llm_parallel=3)
    for name in ("a", "b"):
        alc.adapters.register(name, loras[name], lineage(alc.settings))
    variants: list[str | None] = [None, "a@1", "b@1"]
    alone = {(v, q): answer(alc, v, q) for v in variants for q in QUESTIONS}
    for q in QUESTIONS:
        assert alone[("a@1", q)] == REPLIES["a"] and alone[("b@1", q)] == REPLIES["b"]
        assert not {"Alpha", "Bravo"} & set(alone[(None, q)].split())
    # one copy of the base: every view runs on the same loaded llama.cpp server
    views = [alc.generator(BASE, v) for v in variants]
    assert len({id(v._server) for v in views}) == 1  # type: ignore[attr-defined]
    jobs = [(v, q) for v in variants for q in QUESTIONS] * 3
    random.Random(7).shuffle(jobs)
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda j: answer(alc, *j), jobs))
    # The base's own answer may part from its answer alone after a few words: llama.cpp is
    # not batch-invariant (a sequence decoded beside others sums in another order), and a
    # near-tie can flip. An adapter applied to the wrong request would show at once.
    for (v, q), text in zip(jobs, together, strict=True):
        if v is not None:
            assert text == alone[(v, q)], (v, q, text)
        else:
            assert text.split()[:1] == alone[(v, q)].split()[:1], (q, text, alone[(v, q)])
            assert not {"Alpha", "Bravo"} & set(text.split()), text
    alc.close()


@pytest.mark.real
@needs_tune
def test_transformers_decodes_requests_for_different_adapters_in_one_batch(
        loras: dict[str, Path], tmp_path: Path) -> None:
    """On the transformers backend requests for different LoRAs and the base share one
    generate() call (PEFT's adapter_names): each row still gets its own adapter's answer, a
    stream stopped early ends its row only, and a stop string cuts a batched stream."""
    hf = "smol-hf"
    alc = served(tmp_path, llm_parallel=4,
                 models={hf: {"path": BASE, "backend": "transformers"}})
    for name in ("a", "b"):
        alc.adapters.register(name, loras[name], lineage(alc.settings))
    variants: list[str | None] = [None, "a@1", "b@1"]
    ask = lambda v, q: alc.generator(hf, v).complete(  # noqa: E731
        [Message("user", q)], GREEDY).text
    alone = {(v, q): ask(v, q) for v in variants for q in QUESTIONS}
    for q in QUESTIONS:
        assert alone[("a@1", q)] == REPLIES["a"] and alone[("b@1", q)] == REPLIES["b"]
    batcher = alc.generator(hf)._batcher  # type: ignore[attr-defined]
    run, seen = batcher._run, []

    def spy(jobs: list[Any], rows: Any) -> None:
        seen.append({j.adapter for j in jobs})
        run(jobs, rows)
    batcher._run = spy
    jobs = [(v, q) for v in variants for q in QUESTIONS] * 2
    random.Random(3).shuffle(jobs)
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda j: ask(*j), jobs))
    assert max(len(adapters) for adapters in seen) >= 2, seen  # adapters mixed in a batch
    for (v, q), text in zip(jobs, together, strict=True):
        if v is not None:
            assert text == alone[(v, q)], (v, q, text)
        else:  # float sums in another order may flip a near-tie after the first word
            assert text.split()[:1] == alone[(v, q)].split()[:1], (q, text, alone[(v, q)])
            assert not {"Alpha", "Bravo"} & set(text.split()), text
    # a stream dropped after its first piece ends its row; the other row runs to its end
    long = DecodingParams.build(max_tokens=40, temperature=0.0)
    question = [Message("user", "Tell me about the sea.")]
    whole = alc.generator(hf).complete(question, long)
    seen.clear()
    with ThreadPoolExecutor(2) as pool:
        dropped = pool.submit(lambda: next(iter(alc.generator(hf, "a@1").stream(question,
                                                                                 long))).text)
        kept = pool.submit(lambda: list(alc.generator(hf).stream(question, long)))
        assert dropped.result() == "Alpha"[:len(dropped.result())]
        pieces = kept.result()
    assert "".join(p.text for p in pieces).split()[:1] == whole.text.split()[:1]
    assert pieces[-1].usage is not None and pieces[-1].finish_reason == whole.finish_reason
    cut = list(alc.generator(hf, "b@1").stream(question, DecodingParams.build(
        max_tokens=12, temperature=0.0, stop=[" bravo"])))
    assert "".join(p.text for p in cut) == "Bravo" and cut[-1].finish_reason == "stop"
    alc.close()


@pytest.mark.real
@needs_tune
def test_a_new_adapter_is_served_without_restart_and_a_stream_in_flight_is_not_cut(
        loras: dict[str, Path], tmp_path: Path) -> None:
    alc = served(tmp_path)
    alc.adapters.register("a", loras["a"], lineage(alc.settings))
    long = DecodingParams.build(max_tokens=48, temperature=0.0)
    question = "Tell me about the sea."
    whole = answer(alc, None, question, long)  # the base: a long answer
    pool = alc._pools[BASE]
    first = pool.current
    stream = alc.generator(BASE).stream([Message("user", question)], long)
    head = next(stream).text
    # the CLI (another process, another home object) registers an adapter meanwhile
    with Alicerce(alc.settings) as cli:
        cli.adapters.register("c", loras["c"], lineage(alc.settings))
    (swap,) = alc.refresh_adapters()
    assert swap.adapters == 2 and not swap.error
    assert pool.current is not first and pool.draining() == 1
    # a request arriving now waits for the old instance's stream (two instances decoding
    # at once starve each other of cores), then runs on the new one
    later: list[str] = []
    waiting = threading.Thread(target=lambda: later.append(answer(alc, "c@1", QUESTIONS[0])))
    waiting.start()
    time.sleep(0.5)
    assert not later
    rest = "".join(d.text for d in stream)  # the old instance finishes the stream
    assert head + rest == whole
    waiting.join(timeout=60)
    assert later == [REPLIES["c"]]
    assert pool.draining() == 0  # the old instance is let go
    assert answer(alc, "a@1", QUESTIONS[0]) == REPLIES["a"]
    # removed: the next check swaps it out, and a request for it is refused
    gone = alc.adapters.remove("c@1").path
    assert not gone.exists()
    (swap,) = alc.refresh_adapters()
    assert swap.adapters == 1
    with pytest.raises(NotFoundError, match=r"adapter c@1 was removed"):
        answer(alc, "c@1", QUESTIONS[0])
    assert answer(alc, None, question, long) == whole
    assert answer(alc, "a@1", question) == REPLIES["a"]
    alc.close()


@pytest.mark.real
@needs_tune
def test_a_swap_that_fails_keeps_the_old_instance_serving(
        loras: dict[str, Path], tmp_path: Path) -> None:
    alc = served(tmp_path)
    alc.adapters.register("a", loras["a"], lineage(alc.settings))
    before = answer(alc, "a@1", QUESTIONS[0])
    assert before == REPLIES["a"]
    serving = alc._pools[BASE].current
    # a damaged GGUF (the magic, then nothing llama.cpp can read)
    alc.adapters.register("broken", adapter_folder(tmp_path / "broken", b"\0" * 64),
                          lineage(alc.settings))
    (swap,) = alc.refresh_adapters()
    assert "could not load" in swap.error and "2 adapters" in swap.error
    assert alc._pools[BASE].current is serving
    assert answer(alc, "a@1", QUESTIONS[0]) == before
    with pytest.raises(GeneratorError, match="could not load"):
        answer(alc, "broken@1", QUESTIONS[0])
    alc.close()


@pytest.mark.real
@needs_tune
def test_the_server_picks_up_an_adapter_the_cli_registers(
        loras: dict[str, Path], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from alicerce.server import create_app

    settings = Settings.load(home=tmp_path / "home", embedder="hashing", guards={},
                             auth=False, adapter_poll_s=0.2)
    body = {"messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 12,
            "temperature": 0.0}
    alc = Alicerce(settings)
    with TestClient(create_app(settings, alc)) as client:
        plain = client.post("/v1/chat/completions", json={**body, "model": BASE})
        assert plain.status_code == 200, plain.text
        # another process: the CLI registers a PEFT folder trained elsewhere
        env = {**os.environ, "ALICERCE_HOME": str(settings.home)}
        cli = [sys.executable, "-m", "alicerce", "adapters", "add"]
        added = subprocess.run([*cli, "a", str(loras["a"]), "--base", BASE], env=env,
                               capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        assert "registered a@1 (lora on smollm2-135m), converted for llama.cpp" in added.stdout
        bad = subprocess.run([*cli, "b", str(tmp_path), "--base", BASE], env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "no readable adapter_config.json" in bad.stderr
        deadline = time.monotonic() + 60
        while not any(s.adapters == 1 for s in alc.swaps()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(s.adapters == 1 and not s.error for s in alc.swaps())
        tuned = client.post("/v1/chat/completions", json={**body, "model": f"{BASE}:a"})
        assert tuned.status_code == 200, tuned.text
        assert tuned.json()["choices"][0]["message"]["content"] == REPLIES["a"]
        assert plain.json()["choices"][0]["message"]["content"] != REPLIES["a"]
    alc.close()


# -- the pool's rules, on stand-ins (no model) ----------------------------------------------
class _Stand:
    def __init__(self, adapters: tuple[Path, ...]) -> None:
        from alicerce.generate.llamacpp import Inflight

        self.adapters, self.idle = adapters, Inflight()


def test_the_pool_switches_only_when_the_set_changes_and_drains_the_old() -> None:
    built: list[tuple[Path, ...]] = []
    fail = threading.Event()

    def build(adapters: tuple[Path, ...]) -> Any:
        if fail.is_set():
            raise GeneratorError("no memory left")
        built.append(adapters)
        return _Stand(adapters)

    pool = BasePool("m", build)
    one = pool.instance(lambda: (Path("a"),))
    assert pool.instance(lambda: (Path("a"), Path("b"))) is one  # a plain request never swaps
    assert pool.ensure((Path("a"),)) is one and len(built) == 1
    got: list[Any] = []
    with one.idle:  # a request still running on it
        two = pool.ensure((Path("a"), Path("b")), wait=False)  # as the poller does
        assert two is not one and pool.current is two
        asking = threading.Thread(target=lambda: got.append(pool.instance(tuple)))
        asking.start()
        time.sleep(0.1)
        assert pool.draining() == 1 and not got  # new requests wait for the old one's
    asking.join(timeout=5)
    assert got == [two] and pool.draining() == 0
    fail.set()
    with pytest.raises(GeneratorError):
        pool.ensure((Path("b"),))
    assert pool.current is two and pool.last is not None
    assert pool.last.error == "no memory left" and pool.last.adapters == 1


def test_removing_an_adapter_keeps_its_number_and_refuses_a_labelled_one(
        alc: Alicerce, settings: Settings, tmp_path: Path) -> None:
    from alicerce.errors import InputError

    one = alc.adapters.register("x", adapter_folder(tmp_path / "1", b"1"), lineage(settings))
    alc.adapters.register("x", adapter_folder(tmp_path / "2", b"2"), lineage(settings))
    alc.adapters.label("x@2", "production")
    with pytest.raises(InputError, match="x@2 is labelled production"):
        alc.adapters.remove("x@2")
    alc.adapters.remove("x@1")
    assert not one.path.exists()
    assert [a.ref for a in alc.adapters.list()] == ["x@2"]
    with pytest.raises(NotFoundError, match="x@1 was removed"):
        alc.adapters.get("x@1")
    three = alc.adapters.register("x", adapter_folder(tmp_path / "3", b"3"), lineage(settings))
    assert three.version == 3  # never 1 again: traces name x@1
    # the same files again bring x@1 back, files and all
    back = alc.adapters.register("x", adapter_folder(tmp_path / "1b", b"1"), lineage(settings))
    assert back.ref == "x@1" and back.path.is_dir()
