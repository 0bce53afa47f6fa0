"""App cards: generated from what was recorded for an app version (use case, models with
licences and weight hashes, prompts, collections, rails, the latest evaluation and drift,
the abstention rate, languages evaluated, the deployer), in Markdown and HTML, and diffable
between versions."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from typer.testing import CliRunner

from alicerce import Alicerce
from alicerce.apps import card as cards
from alicerce.cli import app as cli_app
from alicerce.datasets import Row, build
from alicerce.generate.models import BUNDLED
from alicerce.testing.fakes import ScriptedGenerator

SPEC = """name: rh
description: Assistente de RH <script>alert(1)</script>
collections: [kb]
model: fake
use_case: {actors: [analista de RH], main_flow: [pergunta, resposta com fontes],
           non_functional: {language: pt-BR}}
guards: {input: [size], output: [canary]}
"""


def test_a_card_says_what_was_recorded_and_two_versions_diff(alc: Alicerce, docs: Path,
                                                             tmp_path: Path) -> None:
    alc.use_generator("fake", ScriptedGenerator("São 30 dias [1].", name="fake"))
    alc.ingest([docs], "kb")
    alc.deploy_app(SPEC, actor="ana")
    empty = cards.markdown(cards.build(alc, "rh@1"))
    assert "not evaluated yet" in empty and "no traffic recorded" in empty
    for i in range(4):  # live traffic of this version: one abstention in four
        alc.traces.record("rh", "k1", f"pergunta {i}", app_version=1, answer={
            "answer": "Não encontrei." if i == 0 else "São 30 dias [1].",
            "abstained": i == 0, "citations": [], "versions": {}, "usage": {},
            "timings": {}})
    ds = build("golden", [Row("r1", "Quantos dias de férias tenho por ano?", ("ferias.txt",),
                              "30 dias."),
                          Row("r2", "Qual o prazo para enviar os comprovantes?",
                              ("refund.md",), "30 dias.")])
    run = alc.evals.run("rh@1", ds, ["retrieval", "answer"])
    rng, now = random.Random(0), time.time()
    for i in range(12):
        q = f"Qual o prazo de {rng.choice(['táxi', 'hotel', 'férias'])} {i}?"
        alc.traces.record("rh", "k1", q, at=now - 86400 * 3, answer={"answer": "30 dias."})
        alc.traces.record("rh", "k1", q, at=now - 600, answer={"answer": "30 dias."})
    drift = alc.drift("rh", "window:7d", "24h", sample=20)

    c1 = cards.build(alc, "rh@1")
    md = cards.markdown(c1)
    assert "Actors: analista de RH" in md and "language=pt-BR" in md
    assert "by ana" in md and "labels: production" in md
    assert "fake (step generate (generate)): licence not recorded" in md
    assert "rag-answer@1" in md and "kb version" in md and "hashing-256" in md
    assert "input: size (block), output: canary (block)" in md
    assert f"run {run.id} on golden@{ds.version} (2 rows)" in md
    assert "retrieval.hit_rate: 1.000" in md and f"drift {drift.id}" in md
    assert "Abstention in traffic: 25.0% of 4 answers" in md
    assert "Languages evaluated: pt" in md
    page = cards.to_html(c1)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page

    alc.deploy_app(SPEC.replace("model: fake", "model: qwen-1.5b"), actor="bruno")
    c2 = cards.build(alc, "rh@2")
    assert f"weights sha256:{BUNDLED['qwen-1.5b'].sha256}" in cards.markdown(c2)
    assert "licence Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct)" in cards.markdown(c2)
    changed = cards.diff(c1, c2)
    assert "-- fake (step generate" in changed and "+- qwen-1.5b (step generate" in changed
    assert "+Deployed" in changed and "by bruno" in changed

    runner, home = CliRunner(), str(alc.settings.home)
    out = runner.invoke(cli_app, ["apps", "card", "rh@1", "--html", str(tmp_path / "c.html"),
                                  "--md", str(tmp_path / "c.md"), "--home", home])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "c.md").read_text() == md and "<h2>Models</h2>" in (
        tmp_path / "c.html").read_text()
    shown = runner.invoke(cli_app, ["apps", "card", "rh@2", "--diff", "rh@1", "--home", home])
    assert "+- qwen-1.5b" in shown.output
    as_json = json.loads(runner.invoke(cli_app, ["apps", "card", "rh", "--json", "--home",
                                                 home]).output)
    assert as_json["ref"] == "rh@1" and as_json["limits"]["languages_evaluated"] == ["pt"]


def test_the_card_over_http_and_on_the_console(alc: Alicerce, docs: Path) -> None:
    import re

    from fastapi.testclient import TestClient

    from alicerce.server import create_app

    alc.use_generator("fake", ScriptedGenerator("São 30 dias [1].", name="fake"))
    alc.ingest([docs], "kb")
    alc.ingest([docs / "faq.jsonl"], "other")
    alc.deploy_app(SPEC)
    _, reader = alc.keys.create("auditor", ["read"])
    _, other_only = alc.keys.create("analyst", ["ask"], ["other"])
    auth = {"Authorization": f"Bearer {reader}"}
    with TestClient(create_app(alc.settings, alc), base_url="http://127.0.0.1:8000") as client:
        body = client.get("/v1/apps/rh/card", headers=auth).json()
        assert body["ref"] == "rh@1" and body["use_case"]["actors"] == ["analista de RH"]
        md = client.get("/v1/apps/rh/card", headers=auth, params={"format": "markdown"})
        assert md.text.startswith("# App card: rh@1") and "markdown" in md.headers[
            "content-type"]
        page = client.get("/v1/apps/rh@1/card", headers=auth, params={"format": "html"})
        assert "<h1>App card: rh@1</h1>" in page.text and "<script>alert" not in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert client.get("/v1/apps/rh/card", headers={
            "Authorization": f"Bearer {other_only}"}).status_code == 403
        form = client.get("/console/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        client.post("/console/login", data={"csrf": csrf, "key": reader})
        shown = client.get("/console/apps/rh/card").text
        assert "App card: rh@1" in shown and "&lt;script&gt;alert(1)" in shown
