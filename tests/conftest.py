"""Shared fixtures: a fresh home with the fast hashing embedder, and sample files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "handbook"


@pytest.fixture(autouse=True)
def _store_under_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """ALICERCE_TEST_STORE=postgres runs the tests with every home on PostgreSQL: each test
    gets an empty database through ALICERCE_STORE, which the CLI subprocesses inherit."""
    if os.environ.get("ALICERCE_TEST_STORE") == "postgres":
        monkeypatch.setenv("ALICERCE_STORE", request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(home=tmp_path / "home", embedder="hashing")


@pytest.fixture
def alc(settings: Settings) -> Alicerce:
    a = Alicerce(settings)
    yield a
    a.close()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A small folder of documents in several formats."""
    d = tmp_path / "docs"
    d.mkdir()
    (d / "refund.md").write_text(
        "# Refund policy\n\nSend receipts within 30 days.\n\n## Travel\n\nTaxi and hotel "
        "are refunded.\n", encoding="utf-8")
    (d / "ferias.txt").write_text("Férias\n\nSão 30 dias de férias por ano, pedidos com 45 "
                                  "dias de antecedência.", encoding="utf-8")
    (d / "faq.jsonl").write_text(
        '{"id": "q1", "title": "Wi-Fi password", "text": "Ask reception for the guest code.",'
        ' "area": "it"}\n'
        '{"id": "q2", "title": "Horário", "text": "Das 9h às 18h com almoço.", "area": "rh"}\n',
        encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real PostgreSQL 18 with pgvector for the whole run (the postgres extra)."""
    from alicerce.testing.postgres import start_server

    return start_server(tmp_path_factory.mktemp("pg") / "data")


@pytest.fixture
def pg_url(pg_admin_url: str) -> str:
    """An empty database of its own for one test."""
    from alicerce.testing.postgres import fresh_database

    return fresh_database(pg_admin_url)
