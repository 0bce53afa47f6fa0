"""Drift and skew: the statistics on constructed samples, the runs over stored traces
(window and dataset baselines, history, reports, bad input), and the CLI. The statistics
tests use vectors with known shifts; the run tests use the hashing embedder (fast); the
real-embedder check is in test_monitoring.py."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alicerce import Alicerce
from alicerce.cli import app as cli_app
from alicerce.durations import duration_s
from alicerce.errors import InputError
from alicerce.observe.drift import mmd_test, psi, vocabulary
from alicerce.observe.drift_report import html, text

TOPICS = {
    "reembolso": ["Qual o prazo para enviar os comprovantes de {x}?",
                  "Como peço reembolso de {x}?", "O reembolso de {x} tem limite?"],
    "ferias": ["Com quanta antecedência peço férias em {x}?",
               "Posso dividir as férias de {x}?", "Quantos dias de férias tenho em {x}?"],
}
NEW = ["O plano de saúde cobre {x}?", "Qual a carência do plano odontológico para {x}?",
       "Como incluo dependentes no plano de saúde para {x}?"]
FILL = ["táxi", "hotel", "alimentação", "janeiro", "julho", "dezembro", "viagem", "curso",
        "material", "passagem", "congresso", "treinamento"]


def questions(templates: list[str], n: int, rng: random.Random) -> list[str]:
    return [rng.choice(templates).format(x=rng.choice(FILL)) for _ in range(n)]


def usual(n: int, rng: random.Random) -> list[str]:
    return questions(TOPICS["reembolso"] + TOPICS["ferias"], n, rng)


def unit(n: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    v = rng.normal(size=(n, 16))
    v[:, 0] += shift
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def test_mmd_flags_a_shift_and_rarely_a_same_distribution_sample() -> None:
    rng = np.random.default_rng(0)
    _, p = mmd_test(unit(60, rng), unit(60, rng, shift=1.0), rng)
    assert p < 0.01
    alarms = sum(mmd_test(unit(40, rng), unit(40, rng), rng, permutations=200)[1] < 0.05
                 for _ in range(40))
    assert alarms <= 6  # ~2 expected at a 5% level; far from every trial


def test_psi_and_vocabulary_read_length_and_word_shifts() -> None:
    same = np.arange(100, dtype=float)
    assert psi(same, same) == pytest.approx(0.0, abs=1e-9)
    assert psi(same, same + 60) > 0.2
    rng = random.Random(0)
    base = usual(80, rng)
    oov, expected, new = vocabulary(base, usual(40, rng))
    assert oov <= expected + 0.05 and not new
    oov, _, new = vocabulary(base, questions(NEW, 40, rng))
    assert oov > 0.3 and {"plano", "saúde"} <= {w for w, _ in new}


def test_durations_are_read_or_refused() -> None:
    assert duration_s("24h") == 86400 and duration_s("30m") == 1800 and duration_s("90") == 90
    for bad in ("", "h", "-1h", "soon"):
        with pytest.raises(InputError):
            duration_s(bad, "--window")


@pytest.fixture
def served(alc: Alicerce, docs: Path) -> Alicerce:
    """A collection with 7 days of usual questions before the last day."""
    alc.ingest([docs], "kb")
    rng = random.Random(1)
    now = time.time()
    for q in usual(80, rng):
        alc.traces.record("kb", "k1", q, answer=_answer(q), at=now - 86400 * rng.uniform(1.1, 7))
    return alc


def _answer(q: str) -> dict[str, object]:
    return {"answer": f"Segundo a política, {q.lower()} depende do gestor [1].",
            "abstained": False, "citations": [], "versions": {}, "usage": {}, "timings": {}}


def test_drift_run_flags_a_new_topic_and_not_more_of_the_same(served: Alicerce) -> None:
    rng = random.Random(2)
    now = time.time()
    for q in usual(40, rng):
        served.traces.record("kb", "k1", q, answer=_answer(q), at=now - rng.uniform(0, 80000))
    served.traces.record("kb", "eval", "not traffic", at=now - 10)  # eval callers skipped
    same = served.drift("kb", "window:7d", "24h", sample=200)
    assert not same.drifted, text(same)
    assert same.side("input").n_current == 40 and same.side("input").n_baseline == 80

    for q in questions(NEW, 40, rng):
        served.traces.record("kb", "k2", q, answer=_answer(q), at=now - rng.uniform(0, 80000))
    shifted = served.drift("kb", "window:7d", "24h", sample=200)
    inputs = shifted.side("input")
    assert shifted.drifted and inputs.drifted
    assert inputs.test("embedding_mmd").flagged
    assert {"plano", "saúde"} <= {w for w, _ in inputs.new_terms}
    grown = max(inputs.topics, key=lambda t: t.current_share - t.baseline_share)
    assert grown.current_share - grown.baseline_share > 0.2
    assert any("plano" in e for e in grown.examples)
    # stored with history; the report renders both
    history = served.drift_runs.history("kb")
    assert [r.id for r in history] == [shifted.id, same.id]
    assert served.drift_runs.get(shifted.id).side("input").drifted
    assert {r.id for r in served.drift_runs.latest()} == {shifted.id}
    page = html(shifted, history)
    assert page.startswith("<!doctype html>") and "<svg" in page and "plano" in page
    assert "DRIFT" in text(shifted)


def test_skew_against_an_eval_dataset(served: Alicerce, tmp_path: Path) -> None:
    golden = tmp_path / "golden.jsonl"
    rng = random.Random(3)
    golden.write_text("".join(json.dumps({"question": q, "reference": "Resposta."}) + "\n"
                              for q in usual(30, rng)), encoding="utf-8")
    now = time.time()
    for q in questions(NEW, 30, rng):
        served.traces.record("kb", "k1", q, answer=_answer(q), at=now - 60)
    run = served.drift("kb", f"dataset:{golden}", "1h", sides=["input"], sample=100)
    assert run.drifted and [s.side for s in run.sides] == ["input"]
    assert run.sources["baseline"].startswith("dataset golden@")


def test_bad_drift_requests_say_what_to_fix(served: Alicerce) -> None:
    for kwargs, words in (({"baseline": "yesterday"}, "baseline"),
                          ({"baseline": "window:7d", "window": "soon"}, "--window"),
                          ({"baseline": "window:7d", "sample": 3}, "sample"),
                          ({"baseline": "window:7d", "sides": ["answers"]}, "side"),
                          ({"baseline": "window:7d"}, "too few texts")):
        with pytest.raises(InputError, match=words):
            served.drift("kb", **kwargs)  # type: ignore[arg-type]
    assert served.drift_runs.history("kb") == []  # nothing half-stored


def test_the_embedding_memo_embeds_each_text_once(served: Alicerce) -> None:
    runs = served.drift_runs
    embedder = served.embedder_for(served.store.collection("kb"))  # type: ignore[arg-type]
    first = runs.vectors(embedder, ["a", "b"], "query")
    calls: list[int] = []
    original = embedder.embed_queries

    def counting(texts: list[str]) -> object:
        calls.append(len(texts))
        return original(texts)
    embedder.embed_queries = counting  # type: ignore[method-assign]
    again = runs.vectors(embedder, ["b", "a", "c"], "query")
    assert calls == [1]  # only "c" was new
    assert np.allclose(again[1], first[0]) and np.allclose(np.linalg.norm(again, axis=1), 1)


def test_drift_cli_text_json_html_and_history(served: Alicerce, tmp_path: Path) -> None:
    now = time.time()
    rng = random.Random(4)
    for q in questions(NEW, 30, rng):
        served.traces.record("kb", "k1", q, answer=_answer(q), at=now - 60)
    served.traces.flush()
    home = ["--home", str(served.settings.home)]
    runner = CliRunner()
    env = {"ALICERCE_EMBEDDER": "hashing"}
    report = tmp_path / "drift.html"
    r = runner.invoke(cli_app, ["drift", "--app", "kb", "--window", "1h", "--sample", "100",
                                "--html", str(report), "--fail-on-drift", *home], env=env)
    assert r.exit_code == 1, r.output  # drifted, and asked to fail on it
    assert "DRIFT" in r.output and "new terms" in r.output
    assert report.read_text(encoding="utf-8").startswith("<!doctype html>")
    r = runner.invoke(cli_app, ["drift", "--app", "kb", "--window", "1h", "--json",
                                "--side", "input", "--sample", "100", *home], env=env)
    assert r.exit_code == 0 and json.loads(r.output)["sides"][0]["side"] == "input"
    r = runner.invoke(cli_app, ["drift", "--app", "kb", "--history", *home], env=env)
    assert r.exit_code == 0 and r.output.count("dr-") == 2


@pytest.mark.real
def test_real_embedder_flags_new_topic_questions_against_the_golden_set(
        tmp_path: Path) -> None:
    """e5 (the bundled embedder): Portuguese questions about a new topic are skew against
    the shipped golden set; the golden questions as users type them are not."""
    root = Path(__file__).resolve().parents[1] / "examples"
    with Alicerce.open(tmp_path / "h") as a:
        a.ingest([root / "handbook"], "handbook")
        golden = f"dataset:{root / 'handbook-golden.jsonl'}"
        rng = random.Random(5)
        now = time.time()
        asked = [r["question"] for r in map(json.loads, (root / "handbook-golden.jsonl")
                                            .read_text(encoding="utf-8").splitlines())]
        typed = [q.lower().rstrip("?") if i % 3 else f"Por favor, {q[0].lower()}{q[1:]}"
                 for i, q in enumerate(asked)]
        for q in typed:
            a.traces.record("handbook", "k1", q, answer=_answer(q), at=now - 5400)
        same = a.drift("handbook", golden, "2h", sides=["input"], sample=100)
        for q in questions(NEW, 24, rng):
            a.traces.record("handbook", "k1", q, answer=_answer(q), at=now - 60)
        shifted = a.drift("handbook", golden, "30m", sides=["input"], sample=100)
    assert not same.drifted, text(same)
    assert shifted.drifted and shifted.side("input").test("embedding_mmd").flagged, \
        text(shifted)
    assert shifted.side("input").n_current == 24  # the last 30 minutes only
